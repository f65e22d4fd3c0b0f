"""Deferrals that wait hours, on the time-skipping dev server: a marketing text outside
quiet hours in a far time zone waits for 08:00 there, and a capped message deferred by
its jurisdiction goes once the rolling window has room. Nothing is dropped."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from temporalio.client import Client

from clarion.channels import build_providers
from clarion.models import AuditKind, Channel, ConsentStatus, OutcomeStatus, Purpose
from clarion.store import Store, repo
from clarion.templates import load_template_dir
from starters.sdk import ClarionClient
from tests.conftest import (
    ROOT,
    add_customer,
    make_settings,
    start_time_skipping,
    uid,
    unique_phone,
)
from tests.support.fake_twilio import FakeTwilio
from tests.support.smtp_server import SmtpServer
from workers.main import build_worker

CAPS = ROOT / "tests" / "data" / "compliance" / "caps.yaml"
# Zones around the globe; at any moment some of them are between 21:00 and 08:00.
FAR_ZONES = [
    "Pacific/Kiritimati",
    "Pacific/Auckland",
    "Asia/Tokyo",
    "Asia/Kolkata",
    "Asia/Dubai",
    "Europe/Berlin",
    "America/Sao_Paulo",
    "America/New_York",
    "America/Los_Angeles",
    "Pacific/Honolulu",
]


@dataclass
class Timed:
    store: Store
    clarion: ClarionClient
    smtp: SmtpServer
    twilio: FakeTwilio
    client: Client


@pytest.fixture(scope="module")
async def timed(
    smtp_server: SmtpServer, fake_twilio: FakeTwilio, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Timed]:
    home = tmp_path_factory.mktemp("timers")
    store = Store(f"sqlite+aiosqlite:///{home / 'clarion.db'}")
    await store.migrate()
    async with store.transaction() as session:
        for template in load_template_dir(ROOT / "tests" / "data" / "templates"):
            await repo.publish_template(session, definition=template)
    env = await start_time_skipping()
    settings = make_settings(
        home, store, smtp_server, fake_twilio, task_queue=uid("tq"), compliance_file=CAPS
    )
    providers = build_providers(settings)
    try:
        async with build_worker(env.client, settings, store, providers):
            yield Timed(
                store,
                ClarionClient(env.client, settings, store=store),
                smtp_server,
                fake_twilio,
                env.client,
            )
    finally:
        for provider in providers.values():
            await provider.aclose()
        await env.shutdown()
        await store.close()


def closed_zone(now: datetime) -> str:
    """A zone where it is now between 21:00 and 07:00, well inside quiet hours."""
    for zone in FAR_ZONES:
        local = now.astimezone(ZoneInfo(zone)).time()
        if local >= time(21, 15) or local < time(7, 0):
            return zone
    raise AssertionError(f"no zone of {FAR_ZONES} is in quiet hours at {now}")  # pragma: no cover


async def events_of(store: Store, message_id: str, kind: AuditKind) -> list[tuple[str, dict]]:  # type: ignore[type-arg]
    async with store.session() as session:
        rows = await repo.audit_events(session, message_id=message_id, kind=kind)
    return [(r.reason, dict(r.detail)) for r in rows]


async def test_marketing_text_in_quiet_hours_waits_for_the_morning_there(timed: Timed) -> None:
    zone = closed_zone(datetime.now(UTC))
    phone = unique_phone()
    granted = (Channel.SMS, Purpose.MARKETING, ConsentStatus.GRANTED)
    customer = await add_customer(timed.store, phone=phone, timezone=zone, consents=[granted])
    handle = await timed.clarion.send_message(
        customer_id=customer.external_id,
        template="test-promo",
        channels=[Channel.SMS],
        context={"ref": "Q1"},
    )
    outcome = await asyncio.wait_for(handle.result(), 120)
    assert outcome.status is OutcomeStatus.DELIVERED, outcome
    assert len(timed.twilio.to(phone)) == 1

    [(reason, detail)] = await events_of(timed.store, handle.message_id, AuditKind.DEFERRED)
    assert reason == "quiet_hours" and detail["zones"] == [zone]
    until = datetime.fromisoformat(detail["until"])
    local = until.astimezone(ZoneInfo(zone))
    assert (local.hour, local.minute) == (8, 0), (zone, local)
    assert timedelta(0) < until - datetime.now(UTC) < timedelta(hours=11)
    # The send happened on the workflow's clock after the timer fired: the history has
    # the timer, and the sent event follows the deferral.
    history = await timed.client.get_workflow_handle(handle.workflow_id).fetch_history()
    if os.environ.get("CLARION_RECORD_HISTORIES") == "1":
        (ROOT / "tests" / "data" / "histories" / "deliver_quiet_hours.json").write_text(
            json.dumps(json.loads(history.to_json()), indent=1) + "\n"
        )
    timers = [e for e in history.events if e.HasField("timer_started_event_attributes")]
    assert len(timers) == 1
    kinds = [k for k, _, _ in await audit_rows(timed.store, handle.message_id)]
    assert kinds.index(AuditKind.DEFERRED) < kinds.index(AuditKind.SENT)


async def audit_rows(store: Store, message_id: str) -> list[tuple[str, str | None, str]]:
    async with store.session() as session:
        events = await repo.audit_events(session, message_id=message_id)
    return [(e.kind, e.channel, e.reason) for e in events]


async def test_a_service_text_at_night_is_not_held(timed: Timed) -> None:
    zone = closed_zone(datetime.now(UTC))
    phone = unique_phone()
    customer = await add_customer(timed.store, phone=phone, timezone=zone)
    handle = await timed.clarion.send_message(
        customer_id=customer.external_id,
        template="test-notice",
        channels=[Channel.SMS],
        context={"ref": "N1"},
    )
    assert (await asyncio.wait_for(handle.result(), 60)).status is OutcomeStatus.DELIVERED
    assert await events_of(timed.store, handle.message_id, AuditKind.DEFERRED) == []


async def test_a_capped_message_is_deferred_until_the_window_has_room(timed: Timed) -> None:
    granted = (Channel.EMAIL, Purpose.MARKETING, ConsentStatus.GRANTED)
    customer = await add_customer(
        timed.store, consents=[granted], attributes={"jurisdiction": "DEFER"}
    )
    assert customer.email
    first = await timed.clarion.send_message(
        customer_id=customer.external_id, template="test-promo", context={"ref": "D1"}
    )
    assert (await asyncio.wait_for(first.result(), 60)).status is OutcomeStatus.DELIVERED
    second = await timed.clarion.send_message(
        customer_id=customer.external_id, template="test-promo", context={"ref": "D2"}
    )
    outcome = await asyncio.wait_for(second.result(), 120)
    assert outcome.status is OutcomeStatus.DELIVERED, outcome
    assert len(timed.smtp.to(customer.email)) == 2

    [(reason, detail)] = await events_of(timed.store, second.message_id, AuditKind.DEFERRED)
    assert reason == "frequency_cap: marketing on email: at most 1 per 1h"
    async with timed.store.session() as session:
        [sent] = await repo.audit_events(session, message_id=first.message_id, kind=AuditKind.SENT)
    until = datetime.fromisoformat(detail["until"])
    # Room again one hour after the first went out (the delivery row's time).
    assert timedelta(minutes=59) < until - sent.at < timedelta(minutes=61)
