"""Erasure in the store: what still runs for a customer, and forgetting them.

``erase_customer`` deletes the customer with their contact points and consent ledger,
and replaces their id - and every id derived from it, such as a journey's workflow id -
by its pseudonym (``erased:`` and a hash, clarion.audit) in every table that keeps
history: deliveries, audit events, journey runs, broadcast recipients, approval requests
and agent tasks. Rendered previews of approval requests and free-text delivery errors
are cleared. The audit trail's hash chain hashes those columns as digests, so it still
verifies. Running it twice is harmless (the second pass finds nothing left).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from clarion.audit import pseudonymise, ref
from clarion.models import AuditKind
from clarion.store.tables import (
    AgentTask,
    ApprovalRequest,
    AudienceListEntry,
    AuditEvent,
    BroadcastRecipient,
    ConsentRecord,
    ContactPoint,
    Customer,
    Delivery,
    ErasureRequest,
    JourneyRun,
)

MESSAGE_SCAN_LIMIT = 10_000


def customer_ref(customer_id: str) -> str:
    return ref(customer_id)


async def running_work(session: AsyncSession, *, customer_id: str) -> tuple[list[str], list[str]]:
    """Workflow ids of the customer's running journeys, and of their messages that have
    been requested and have no outcome yet (waiting for quiet hours, a cap, approval...)."""
    journeys = (
        await session.execute(
            select(JourneyRun.workflow_id)
            .where(JourneyRun.customer_external_id == customer_id, JourneyRun.status == "running")
            .distinct()
        )
    ).scalars()
    requested = (
        await session.execute(
            select(AuditEvent.message_id)
            .where(
                AuditEvent.customer_external_id == customer_id,
                AuditEvent.kind == AuditKind.REQUESTED.value,
                AuditEvent.message_id.is_not(None),
            )
            .order_by(AuditEvent.id.desc())
            .limit(MESSAGE_SCAN_LIMIT)
        )
    ).scalars()
    message_ids = [m for m in requested if m]
    finished: set[str] = set()
    for start in range(0, len(message_ids), 500):
        chunk = message_ids[start : start + 500]
        done = await session.execute(
            select(AuditEvent.message_id).where(
                AuditEvent.dedupe_key.in_([f"{m}:outcome" for m in chunk])
            )
        )
        finished.update(m for m in done.scalars() if m)
    messages = [f"message:{m}" for m in message_ids if m not in finished]
    return sorted(set(journeys)), sorted(set(messages))


async def journeys_still_running(session: AsyncSession, *, workflow_ids: list[str]) -> int:
    if not workflow_ids:
        return 0
    return int(
        (
            await session.execute(
                select(func.count())
                .select_from(JourneyRun)
                .where(JourneyRun.workflow_id.in_(workflow_ids), JourneyRun.status == "running")
            )
        ).scalar_one()
    )


def _derived(value: str | None, customer_id: str) -> str | None:
    """``value`` pseudonymised when it is or embeds the customer id, else unchanged."""
    if value is None or value.startswith("erased:") or customer_id not in value:
        return value
    return pseudonymise(value)


async def _rewrite(
    session: AsyncSession,
    model: Any,
    key: InstrumentedAttribute[Any],
    owner: InstrumentedAttribute[Any],
    customer_id: str,
    derived: tuple[InstrumentedAttribute[Any], ...] = (),
    cleared: dict[str, Any] | None = None,
) -> int:
    """Pseudonymise the owner column of the customer's rows (and the derived id columns
    that embed the customer id), and clear free-text columns; returns the row count."""
    cols = [key, *derived]
    rows = (await session.execute(select(*cols).where(owner == customer_id))).all()
    for row in rows:
        values: dict[str, Any] = {owner.key: pseudonymise(customer_id), **(cleared or {})}
        for col, value in zip(derived, row[1:], strict=True):
            new = _derived(value, customer_id)
            if new != value:
                values[col.key] = new
        await session.execute(update(model).where(key == row[0]).values(**values))
    return len(rows)


async def erase_customer(session: AsyncSession, *, customer_id: str) -> dict[str, int]:
    """Forget the customer in every table; returns rows deleted or anonymised per table."""
    counts: dict[str, int] = {}
    customer = (
        await session.execute(select(Customer.id).where(Customer.external_id == customer_id))
    ).scalar_one_or_none()
    if customer is not None:
        for name, model in (("contact_points", ContactPoint), ("consent_records", ConsentRecord)):
            result = await session.execute(delete(model).where(model.customer_id == customer))
            counts[name] = int(result.rowcount or 0)  # type: ignore[attr-defined]
        await session.execute(delete(Customer).where(Customer.id == customer))
        counts["customers"] = 1
    result = await session.execute(
        delete(AudienceListEntry).where(AudienceListEntry.customer_external_id == customer_id)
    )
    counts["audience_lists"] = int(result.rowcount or 0)  # type: ignore[attr-defined]
    counts["deliveries"] = await _rewrite(
        session,
        Delivery,
        Delivery.attempt_id,
        Delivery.customer_external_id,
        customer_id,
        derived=(Delivery.attempt_id, Delivery.message_id, Delivery.workflow_id),
        cleared={"error": ""},
    )
    counts["audit_events"] = await _rewrite(
        session,
        AuditEvent,
        AuditEvent.id,
        AuditEvent.customer_external_id,
        customer_id,
        derived=(AuditEvent.message_id, AuditEvent.workflow_id, AuditEvent.dedupe_key),
    )
    counts["journey_runs"] = await _rewrite(
        session,
        JourneyRun,
        JourneyRun.id,
        JourneyRun.customer_external_id,
        customer_id,
        derived=(JourneyRun.workflow_id,),
    )
    counts["broadcast_recipients"] = int(
        (
            await session.execute(
                update(BroadcastRecipient)
                .where(BroadcastRecipient.customer_external_id == customer_id)
                .values(customer_external_id=pseudonymise(customer_id), reason="")
            )
        ).rowcount  # type: ignore[attr-defined]
        or 0
    )
    counts["approval_requests"] = await _rewrite(
        session,
        ApprovalRequest,
        ApprovalRequest.id,
        ApprovalRequest.customer_external_id,
        customer_id,
        derived=(ApprovalRequest.workflow_id, ApprovalRequest.subject_id),
        cleared={"preview": {"erased": True}},
    )
    counts["agent_tasks"] = await _rewrite(
        session, AgentTask, AgentTask.id, AgentTask.customer_external_id, customer_id
    )
    return {k: v for k, v in counts.items() if v}


async def open_request(
    session: AsyncSession, *, request_id: str, customer_id: str, reference: str, requested_by: str
) -> ErasureRequest:
    row = await session.get(ErasureRequest, request_id)
    if row is None:
        row = ErasureRequest(
            id=request_id,
            customer_ref=customer_ref(customer_id),
            reference=reference,
            requested_by=requested_by,
            status="running",
            receipt={},
        )
        session.add(row)
        await session.flush()
    return row


async def get_request(session: AsyncSession, *, request_id: str) -> ErasureRequest | None:
    return await session.get(ErasureRequest, request_id)


async def requests_for(session: AsyncSession, *, customer_id: str) -> list[ErasureRequest]:
    """Tombstones of a customer id (it is hashed for the lookup, never stored)."""
    rows = await session.execute(
        select(ErasureRequest)
        .where(ErasureRequest.customer_ref == customer_ref(customer_id))
        .order_by(ErasureRequest.requested_at)
    )
    return list(rows.scalars())
