"""Compliance rules on the real send path: an opt-out that arrives while a journey waits,
frequency caps, safety overrides per jurisdiction, and refused rules files."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import select

from clarion.inbound import handle_inbound_sms
from clarion.journeys.models import JourneyRunStatus
from clarion.models import AuditKind, Channel, ConsentStatus, OutcomeStatus, Purpose
from clarion.store import Store, repo
from clarion.store import journeys as journey_repo
from clarion.store.tables import ConsentRecord, Customer
from tests.conftest import (
    ROOT,
    Stack,
    StackWith,
    add_customer,
    make_settings,
    unique_phone,
)
from tests.support.fake_twilio import FakeTwilio
from tests.support.processes import run_cli, wait_until
from tests.support.smtp_server import SmtpServer

CAPS = ROOT / "tests" / "data" / "compliance" / "caps.yaml"
MARKETING_EMAIL = (Channel.EMAIL, Purpose.MARKETING, ConsentStatus.GRANTED)


async def audit(store: Store, message_id: str) -> list[tuple[str, str | None, str]]:
    async with store.session() as session:
        events = await repo.audit_events(session, message_id=message_id)
    return [(e.kind, e.channel, e.reason) for e in events]


async def test_opt_out_while_a_journey_waits_stops_the_next_message(stack: Stack) -> None:
    phone = unique_phone()
    customer = await add_customer(stack.store, phone=phone, name="Olive Out")
    handle = await stack.clarion.start_journey("t-optout", customer.external_id)
    await wait_until(lambda: len(stack.twilio.to(phone)) == 1, what="the first text")

    reply = await handle_inbound_sms(stack.store, stack.settings, phone, "STOP")
    assert reply.customers == [customer.external_id]

    result = await asyncio.wait_for(handle.result(), 30)
    assert result.status is JourneyRunStatus.COMPLETED
    assert [m["body"] for m in stack.twilio.to(phone)] == ["Notice OO1 for Olive"]
    async with stack.store.session() as session:
        [run] = await journey_repo.runs_for_customer(
            session, customer_external_id=customer.external_id
        )
        steps = {s.step: s.outcome for s in await journey_repo.steps_of_run(session, run_id=run.id)}
        suppressed = await repo.audit_events(
            session, customer_external_id=customer.external_id, kind=AuditKind.SUPPRESSED
        )
    assert steps["first"].startswith("delivered")
    assert steps["second"].startswith("suppressed")
    assert [(e.channel, e.reason) for e in suppressed] == [("sms", "opted_out")]


async def test_a_capped_marketing_email_is_suppressed_and_audited(stack_with: StackWith) -> None:
    async with stack_with(compliance_file=CAPS) as stack:
        customer = await add_customer(stack.store, consents=[MARKETING_EMAIL])
        assert customer.email
        outcomes = []
        for n in range(3):
            handle = await stack.clarion.send_message(
                customer_id=customer.external_id, template="test-promo", context={"ref": f"P{n}"}
            )
            outcomes.append((handle.message_id, await handle.result()))
        assert [o.status for _, o in outcomes] == [
            OutcomeStatus.DELIVERED,
            OutcomeStatus.DELIVERED,
            OutcomeStatus.SUPPRESSED,
        ]
        capped_id, capped = outcomes[2]
        assert "frequency_cap: marketing on email: at most 2 per 1h" in capped.reason
        assert len(stack.smtp.to(customer.email)) == 2
        assert (
            AuditKind.SUPPRESSED,
            "email",
            "frequency_cap: marketing on email: at most 2 per 1h",
        ) in await audit(stack.store, capped_id)
        # The cap counts marketing only: a service notice still goes.
        notice = await stack.clarion.send_message(
            customer_id=customer.external_id, template="test-notice", context={"ref": "S1"}
        )
        assert (await notice.result()).status is OutcomeStatus.DELIVERED


async def test_safety_notices_override_an_opt_out_only_where_configured(
    stack_with: StackWith,
) -> None:
    async with stack_with(compliance_file=CAPS) as stack:
        us_phone, other_phone = unique_phone(), unique_phone()
        us = await add_customer(stack.store, phone=us_phone, attributes={"jurisdiction": "US"})
        other = await add_customer(stack.store, phone=other_phone)
        for phone in (us_phone, other_phone):
            await handle_inbound_sms(stack.store, stack.settings, phone, "STOP")

        results = {}
        for who in (us, other):
            handle = await stack.clarion.send_message(
                customer_id=who.external_id,
                template="test-safety",
                channels=[Channel.SMS],
                context={"ref": "Z9"},
            )
            results[who.external_id] = (handle.message_id, await handle.result())

        us_id, us_outcome = results[us.external_id]
        assert us_outcome.status is OutcomeStatus.DELIVERED
        assert [m["body"] for m in stack.twilio.to(us_phone)] == [
            "Safety notice Z9: please check your device."
        ]
        kinds = [k for k, _, _ in await audit(stack.store, us_id)]
        assert AuditKind.CONSENT_OVERRIDDEN in kinds
        _, other_outcome = results[other.external_id]
        assert other_outcome.status is OutcomeStatus.SUPPRESSED
        assert "opted_out" in other_outcome.reason
        assert stack.twilio.to(other_phone) == []


async def test_a_bad_rules_file_is_refused_at_start(
    store: Store, smtp_server: SmtpServer, fake_twilio: FakeTwilio, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "jurisdictions:\n  US:\n    quiet_hours:\n"
        "      - {purposes: [marketing], channels: [sms], allowed: '8am-9pm'}\n"
    )
    settings = make_settings(
        tmp_path, store, smtp_server, fake_twilio, task_queue="unused", compliance_file=rules
    )
    result = await run_cli(settings, "templates", "list")
    assert result.code == 2, result
    assert "CLARION_COMPLIANCE_FILE" in result.stderr and "'8am'" in result.stderr
    assert "jurisdictions.US.quiet_hours.0.allowed" in result.stderr


async def test_the_ledger_records_where_consent_was_given(stack: Stack) -> None:
    phone = unique_phone()
    customer = await add_customer(stack.store, phone=phone, attributes={"jurisdiction": "US"})
    await handle_inbound_sms(stack.store, stack.settings, phone, "STOP")
    granted = await run_cli(
        stack.settings,
        "consent",
        "grant",
        customer.external_id,
        "--channel",
        "email",
        "--purpose",
        "marketing",
        "--source",
        "web-form",
        "--jurisdiction",
        "EU",
    )
    assert granted.code == 0, granted
    async with stack.store.session() as session:
        rows = (
            await session.execute(
                select(ConsentRecord.channel, ConsentRecord.source, ConsentRecord.jurisdiction)
                .join(Customer, Customer.id == ConsentRecord.customer_id)
                .where(Customer.external_id == customer.external_id)
                .order_by(ConsentRecord.id)
            )
        ).all()
    assert {(c, j) for c, _, j in rows} == {("sms", "US"), ("email", "EU")}
    assert rows[-1][1] == "web-form"
