"""A worker process killed with SIGKILL mid-send; a new worker finishes the message."""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select
from temporalio.testing import WorkflowEnvironment

from clarion.config import Settings
from clarion.customers import CustomerRecord
from clarion.models import AuditKind, DeliveryStatus, OutcomeStatus
from clarion.store import Store
from clarion.store.tables import AuditEvent, Delivery
from starters.sdk import ClarionClient
from tests.conftest import add_customer, make_settings, uid
from tests.support.fake_twilio import FakeTwilio
from tests.support.processes import spawn_cli, wait_until
from tests.support.smtp_server import SmtpServer


async def _row(store: Store, attempt: str) -> Delivery | None:
    async with store.session() as session:
        return await session.get(Delivery, attempt)


async def _stop_gracefully(proc: asyncio.subprocess.Process) -> int:
    proc.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(proc.wait(), 30)


@dataclass
class Drill:
    settings: Settings
    clarion: ClarionClient
    customer: CustomerRecord
    log: Path


@pytest.fixture
async def drill(
    temporal_env: WorkflowEnvironment,
    store: Store,
    smtp_server: SmtpServer,
    fake_twilio: FakeTwilio,
    tmp_path: Path,
) -> Drill:
    """Settings for worker processes on a fresh task queue, a customer, a client."""
    settings = make_settings(tmp_path, store, smtp_server, fake_twilio, task_queue=uid("tq"))
    settings = settings.model_copy(
        update={"temporal_address": temporal_env.client.service_client.config.target_host}
    )
    return Drill(
        settings=settings,
        clarion=ClarionClient(temporal_env.client, settings),
        customer=await add_customer(store),
        log=tmp_path / "workers.log",
    )


async def test_worker_killed_before_provider_accepted_then_new_worker_delivers_once(
    drill: Drill, store: Store, smtp_server: SmtpServer
) -> None:
    settings, clarion, customer, log = drill.settings, drill.clarion, drill.customer, drill.log

    smtp_server.stalled.clear()
    smtp_server.release.clear()
    smtp_server.stall_rcpt.set()
    first = await spawn_cli(settings, "worker", log=log)
    try:
        handle = await clarion.send_message(
            customer_id=customer.external_id, template="test-notice", context={"ref": "K1"}
        )
        await wait_until(smtp_server.stalled.is_set, within=60, what="the send to reach SMTP")
        first.kill()  # SIGKILL in the middle of the SMTP transaction
        await first.wait()
    finally:
        smtp_server.stall_rcpt.clear()
        smtp_server.release.set()
    row = await _row(store, f"{handle.message_id}:email")
    assert row is not None and row.status == DeliveryStatus.SENDING
    assert smtp_server.with_id(handle.message_id) == []

    second = await spawn_cli(settings, "worker", log=log)
    try:
        outcome = await asyncio.wait_for(handle.result(), 90)
    finally:
        code = await _stop_gracefully(second)
    assert code == 0, log.read_text()[-3000:]
    assert outcome.status is OutcomeStatus.DELIVERED
    assert len(smtp_server.with_id(handle.message_id)) == 1
    row = await _row(store, f"{handle.message_id}:email")
    assert row is not None and row.status == DeliveryStatus.SENT and row.tries == 2
    # Structured logs carry the message id and never the customer's address.
    logs = log.read_text()
    assert f'"message_id": "{handle.message_id}"' in logs
    assert customer.email and customer.email not in logs


async def test_worker_killed_after_acceptance_recorded_never_sends_again(
    drill: Drill, store: Store, smtp_server: SmtpServer
) -> None:
    settings, clarion, customer, log = drill.settings, drill.clarion, drill.customer, drill.log

    hanging = settings.model_copy(update={"failpoints": "after_send_recorded=hang"})
    first = await spawn_cli(hanging, "worker", log=log)
    handle = await clarion.send_message(
        customer_id=customer.external_id, template="test-notice", context={"ref": "K2"}
    )
    attempt = f"{handle.message_id}:email"

    async def recorded() -> bool:
        row = await _row(store, attempt)
        return row is not None and row.status == DeliveryStatus.SENT

    try:
        await wait_until(recorded, within=60, what="the acceptance to be recorded")
    finally:
        first.kill()
        await first.wait()
    assert len(smtp_server.with_id(handle.message_id)) == 1

    second = await spawn_cli(settings, "worker", log=log)
    try:
        outcome = await asyncio.wait_for(handle.result(), 90)
    finally:
        assert await _stop_gracefully(second) == 0
    assert outcome.status is OutcomeStatus.DELIVERED
    assert len(smtp_server.with_id(handle.message_id)) == 1  # never sent again
    row = await _row(store, attempt)
    assert row is not None and row.tries == 1
    assert outcome.provider_message_id == row.provider_message_id
    async with store.session() as session:
        sent_events = (
            await session.execute(
                select(func.count())
                .select_from(AuditEvent)
                .where(
                    AuditEvent.message_id == handle.message_id,
                    AuditEvent.kind == AuditKind.SENT.value,
                )
            )
        ).scalar_one()
    assert sent_events == 1
    # The retry after the kill ran, saw the record, and did not send.
    history = await handle._handle.fetch_history()
    attempts = [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
    ]
    assert max(attempts) >= 2


# Processes, HTTP and the browser over a store: SQLite is enough (see conftest.py).
pytestmark = pytest.mark.sqlite_only
