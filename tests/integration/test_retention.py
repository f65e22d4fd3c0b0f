"""Retention: the schedule every worker keeps runs the purge; old message bodies and
delivery details go, recent ones and the audit trail stay."""

from __future__ import annotations

import json
import os
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from temporalio.service import RPCError, RPCStatusCode

from clarion.models import AuditKind, OutcomeStatus
from clarion.store import repo
from clarion.store.tables import ApprovalRequest, Delivery, DeliveryRollupState, utcnow
from tests.conftest import Stack, add_customer, uid
from tests.support.processes import run_cli, wait_until
from workers.schedules import ensure_retention_schedule, retention_schedule_id


def approval_row(request_id: str, *, days_old: int, status: str) -> ApprovalRequest:
    return ApprovalRequest(
        id=request_id,
        workflow_id=f"approval:{request_id}",
        subject_kind="message",
        subject_id=request_id,
        category="billing",
        template="test-billing",
        template_version=1,
        preview={"email": {"subject": "Your invoice", "text": "Dear Ada, you owe 12 EUR"}},
        requested_by="svc",
        status=status,
        created_at=utcnow() - timedelta(days=days_old),
    )


async def test_the_schedule_purges_old_bodies_and_details(stack: Stack) -> None:
    customer = await add_customer(stack.store)
    old_msg = await stack.clarion.send_message(
        customer_id=customer.external_id, template="test-notice", context={"ref": "OLD"}
    )
    new_msg = await stack.clarion.send_message(
        customer_id=customer.external_id, template="test-notice", context={"ref": "NEW"}
    )
    for handle in (old_msg, new_msg):
        assert (await handle.result()).status is OutcomeStatus.DELIVERED
    old_ids = (uid("old"), uid("pending"))
    recent_id = uid("recent")
    async with stack.store.transaction() as session:
        await session.execute(
            update(Delivery)
            .where(Delivery.message_id == old_msg.message_id)
            .values(updated_at=utcnow() - timedelta(days=200), error="550 mailbox full")
        )
        session.add(approval_row(old_ids[0], days_old=200, status="approved"))
        session.add(approval_row(old_ids[1], days_old=200, status="pending"))
        session.add(approval_row(recent_id, days_old=3, status="rejected"))
    outbox = stack.settings.outbox_dir
    outbox.mkdir(parents=True, exist_ok=True)
    old_file, new_file = outbox / "old.eml", outbox / "new.eml"
    for f in (old_file, new_file):
        f.write_text("Subject: hello\n\nbody")
    stale = (utcnow() - timedelta(days=200)).timestamp()
    os.utime(old_file, (stale, stale))

    schedule_id = await ensure_retention_schedule(stack.client, stack.settings)
    assert schedule_id == retention_schedule_id(stack.settings)
    handle = stack.client.get_schedule_handle(schedule_id)
    described = await handle.describe()
    [daily] = described.schedule.spec.calendars  # the server keeps the cron as a calendar
    assert (daily.hour[0].start, daily.minute[0].start) == (3, 17)
    triggered = utcnow()
    await handle.trigger()

    async def purged() -> bool:
        async with stack.store.session() as session:
            events = await repo.audit_events(session, kind=AuditKind.RETENTION_PURGED, limit=100)
        return any(
            (e.workflow_id or "").startswith(f"{stack.settings.task_queue}-retention-run")
            for e in events
        )

    await wait_until(purged, within=60, what="the scheduled retention run")

    async def rolled_up() -> bool:  # the run then refreshes the delivery reports' rollup
        async with stack.store.session() as session:
            state = await session.get(DeliveryRollupState, 1)
        return state is not None and state.watermark is not None and state.watermark > triggered

    await wait_until(rolled_up, within=30, what="the rollup refresh after retention")
    async with stack.store.session() as session:
        rows = {
            d.message_id: d
            for d in (
                await session.execute(
                    select(Delivery).where(
                        Delivery.message_id.in_([old_msg.message_id, new_msg.message_id])
                    )
                )
            ).scalars()
        }
        previews = {
            r.id: r.preview
            for r in (
                await session.execute(
                    select(ApprovalRequest).where(ApprovalRequest.id.in_([*old_ids, recent_id]))
                )
            ).scalars()
        }
    old_row, new_row = rows[old_msg.message_id], rows[new_msg.message_id]
    assert (old_row.error, old_row.provider_message_id) == ("", "")
    assert old_row.status == "sent" and old_row.sent_at is not None  # analytics keep the facts
    assert new_row.provider_message_id != ""
    assert previews[old_ids[0]] == {"purged": True}
    assert "Dear Ada" in json.dumps(previews[old_ids[1]])  # still pending: kept
    assert "Dear Ada" in json.dumps(previews[recent_id])
    assert not old_file.exists() and new_file.exists()

    # Turning retention off removes the schedule: describing it fails at once; the
    # server's list of schedules (its visibility store) catches up a moment later.
    off = stack.settings.model_copy(update={"retention_days": 0})
    assert await ensure_retention_schedule(stack.client, off) is None
    with pytest.raises(RPCError) as gone:
        await handle.describe()
    assert gone.value.status == RPCStatusCode.NOT_FOUND

    async def unlisted() -> bool:
        return schedule_id not in [s.id async for s in await stack.client.list_schedules()]

    await wait_until(unlisted, within=10, what="the removed schedule to leave the list")


async def test_retention_run_cli(stack: Stack) -> None:
    target = stack.client.service_client.config.target_host
    settings = stack.settings.model_copy(update={"temporal_address": target})
    result = await run_cli(settings, "retention", "run", "--days", "30", "--json")
    assert result.code == 0, result
    report = json.loads(result.stdout)
    assert set(report["rows"]) >= {"deliveries", "approval_requests", "outbox_files"}
    bad = await run_cli(settings, "retention", "run", "--days", "0")
    assert bad.code == 2 and "--days" in bad.stderr
