"""The demo: publish the example templates, import the example customers, send messages."""

from __future__ import annotations

import asyncio
from pathlib import Path

from rich.console import Console
from rich.table import Table
from temporalio.client import Client

from clarion.config import Settings
from clarion.customers import parse_csv
from clarion.journeys import load_journey_dir
from clarion.models import Channel, ConsentStatus, OutcomeStatus, Purpose
from clarion.store import Store, repo
from clarion.store import journeys as journey_repo
from clarion.templates import load_template_dir
from starters.sdk import ClarionClient

REPO_EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# (customer, template, channels, context, what it shows)
SENDS: list[tuple[str, str, list[Channel], dict[str, str], str]] = [
    ("cust-001", "welcome", [Channel.EMAIL], {}, "service email"),
    ("cust-002", "welcome", [Channel.SMS, Channel.EMAIL], {}, "French locale by SMS"),
    (
        "cust-003",
        "order-shipped",
        [Channel.SMS, Channel.EMAIL],
        {"order_id": "A-1003", "carrier": "DHL", "tracking_url": "https://example.com/t/A-1003"},
        "no phone: SMS suppressed, email sent",
    ),
    ("cust-001", "spring-sale", [Channel.EMAIL], {}, "marketing with opt-in"),
    ("cust-002", "spring-sale", [Channel.EMAIL], {}, "marketing without opt-in: suppressed"),
    (
        "cust-001",
        "order-shipped",
        [Channel.EMAIL],
        {"order_id": "A-1001"},
        "missing variables: refused",
    ),
]


async def seed(settings: Settings, examples: Path, console: Console) -> None:
    store = Store(settings.database_url)
    try:
        if settings.auto_migrate:
            await store.migrate()
        definitions = load_template_dir(examples / "templates")
        parsed = parse_csv(
            (examples / "customers.csv").read_text(), default_region=settings.default_phone_region
        )
        async with store.transaction() as session:
            for d in definitions:
                result = await repo.publish_template(session, definition=d)
                state = "published" if result.changed else "unchanged"
                console.print(f"template {result.name} v{result.version} {state}")
            for _, record in parsed.records:
                await repo.upsert_customer(session, record=record)
            customer = await repo.require_customer(session, external_id="cust-001")
            await repo.record_consent(
                session,
                customer=customer,
                channel=Channel.EMAIL,
                purpose=Purpose.MARKETING,
                status=ConsentStatus.GRANTED,
                source="demo",
            )
        console.print(f"imported {len(parsed.records)} customers from {examples / 'customers.csv'}")
        for error in parsed.errors:
            console.print(f"  [yellow]rejected[/yellow] {error}", highlight=False)
        console.print("cust-001 opted in to marketing email")
        if (examples / "journeys").is_dir():
            async with store.transaction() as session:
                for problem in [
                    p
                    for j in load_journey_dir(examples / "journeys")
                    for p in await journey_repo.template_problems(session, definition=j)
                ]:
                    raise ValueError(problem)
                for journey in load_journey_dir(examples / "journeys"):
                    result = await journey_repo.publish_journey(session, definition=journey)
                    state = "published" if result.changed else "unchanged"
                    console.print(f"journey {result.name} v{result.version} {state}")
    finally:
        await store.close()


async def demo_journey(clarion: ClarionClient, console: Console) -> None:
    """cust-002 signs up: the onboarding journey starts, sends its welcome and waits."""
    delivery = await clarion.send_event("cust-002", "signed_up", {"source": "demo"})
    if "onboarding" not in delivery.started:
        why = delivery.skipped.get("onboarding", "already in it")
        console.print(f"journey onboarding for cust-002 not started again ({why})")
        return
    status = None
    for _ in range(100):
        status = await clarion.journey_status("onboarding", "cust-002")
        if status.waiting_for:
            break
        await asyncio.sleep(0.1)
    if status is not None:
        console.print(
            f"journey onboarding started for cust-002: now at {status.current_step}, waiting for "
            f"{status.waiting_for} until {status.waiting_until:%Y-%m-%d %H:%M} UTC"
            if status.waiting_until
            else f"journey onboarding started for cust-002: now at {status.current_step}"
        )


async def run_demo(
    settings: Settings, client: Client, *, examples: Path | None, console: Console
) -> None:
    examples = examples or REPO_EXAMPLES
    if not (examples / "templates").is_dir():
        console.print(f"[red]no examples at {examples}[/red]: pass --examples DIR")
        return
    console.rule("demo")
    await seed(settings, examples, console)
    clarion = ClarionClient(client, settings)
    handles = [
        await clarion.send_message(customer_id=c, template=t, channels=ch, context=ctx)
        for c, t, ch, ctx, _ in SENDS
    ]
    outcomes = await asyncio.gather(*(h.result() for h in handles))
    table = Table("customer", "template", "outcome", "channel", "why", title="messages")
    colours = {
        OutcomeStatus.DELIVERED: "green",
        OutcomeStatus.SUPPRESSED: "yellow",
        OutcomeStatus.FAILED: "red",
    }
    for (customer, template, _, _, note), outcome in zip(SENDS, outcomes, strict=True):
        colour = colours[outcome.status]
        table.add_row(
            customer,
            template,
            f"[{colour}]{outcome.status.value}[/{colour}]",
            outcome.channel.value if outcome.channel else "-",
            note,
        )
    console.print(table)
    await demo_journey(clarion, console)
    await clarion.close()
    namespace = settings.temporal_namespace
    console.print(
        "Where to look:\n"
        f"  sent messages   {settings.outbox_dir}/ (or your SMTP server / Twilio when configured)\n"
        f"  workflows       http://localhost:8233/namespaces/{namespace}/workflows\n"
        "  audit trail     clarion audit --customer cust-001\n"
        "  a journey       clarion journeys status cust-002   "
        "(then: clarion events send cust-002 activated)\n"
        "  one message     clarion send --customer cust-003 --template welcome "
        "--channel sms,email\n"
    )
