"""Retention in the store: purge message bodies and delivery details past their time.

What goes: the free-text error and the provider's message id of deliveries, the
rendered preview of decided approval requests, the reasons kept for broadcast
recipients and closed agent tasks. What stays: ids, statuses, channels and timestamps
(delivery analytics) and the audit trail (it has its own rules: docs/compliance.md).
Every statement only touches rows not purged yet, so a rerun finds nothing to do.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.store.tables import AgentTask, ApprovalRequest, Broadcast, BroadcastRecipient, Delivery

PURGED_PREVIEW = {"purged": True}


def _count(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


async def purge_before(session: AsyncSession, *, cutoff: datetime) -> dict[str, int]:
    counts: dict[str, int] = {}
    counts["deliveries"] = _count(
        await session.execute(
            update(Delivery)
            .where(
                Delivery.updated_at < cutoff,
                Delivery.status.in_(["sent", "failed", "suppressed"]),
                (Delivery.error != "") | (Delivery.provider_message_id != ""),
            )
            .values(error="", provider_message_id="")
        )
    )
    decided = ApprovalRequest.status != "pending"
    old = ApprovalRequest.created_at < cutoff
    rows = (
        await session.execute(
            select(ApprovalRequest.id, ApprovalRequest.preview).where(decided, old)
        )
    ).all()
    stale = [rid for rid, preview in rows if preview != PURGED_PREVIEW]
    for start in range(0, len(stale), 500):
        await session.execute(
            update(ApprovalRequest)
            .where(ApprovalRequest.id.in_(stale[start : start + 500]))
            .values(preview=PURGED_PREVIEW)
        )
    counts["approval_requests"] = len(stale)
    ended = select(Broadcast.id).where(Broadcast.ended_at < cutoff).scalar_subquery()
    counts["broadcast_recipients"] = _count(
        await session.execute(
            update(BroadcastRecipient)
            .where(BroadcastRecipient.broadcast_id.in_(ended), BroadcastRecipient.reason != "")
            .values(reason="")
        )
    )
    counts["agent_tasks"] = _count(
        await session.execute(
            update(AgentTask)
            .where(AgentTask.closed_at < cutoff, AgentTask.reason != "")
            .values(reason="")
        )
    )
    return counts
