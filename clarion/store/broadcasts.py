"""Broadcast repositories: acknowledgements and their counts."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.store import repo
from clarion.store.tables import Broadcast, BroadcastRecipient, ContactPoint, Customer, Delivery

ACTIVE = ("dispatching", "active")


async def record_ack(
    session: AsyncSession, *, broadcast_id: str, customer_id: str, at: datetime
) -> bool:
    """Mark the recipient acknowledged (the first acknowledgement counts); True if it did."""
    result = await session.execute(
        update(BroadcastRecipient)
        .where(
            BroadcastRecipient.broadcast_id == broadcast_id,
            BroadcastRecipient.customer_external_id == customer_id,
            BroadcastRecipient.acked_at.is_(None),
        )
        .values(acked_at=at)
        .execution_options(synchronize_session=False)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return False
    # Delivery analytics: the broadcast's latest message the recipient was sent.
    latest = (
        await session.execute(
            select(Delivery.attempt_id)
            .where(
                Delivery.customer_external_id == customer_id,
                Delivery.message_id.startswith(f"crisis-{broadcast_id}-g", autoescape=True),
                Delivery.status == "sent",
            )
            .order_by(Delivery.sent_at.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    if latest is not None:
        await repo.mark_acknowledged(session, attempt=latest, at=at)
    return True


async def ack_by_phone(session: AsyncSession, *, phone: str, at: datetime) -> list[str]:
    """An SMS reply from ``phone`` acknowledges every active broadcast that reached them."""
    rows = await session.execute(
        select(BroadcastRecipient.broadcast_id, BroadcastRecipient.customer_external_id)
        .join(Customer, Customer.external_id == BroadcastRecipient.customer_external_id)
        .join(
            ContactPoint, (ContactPoint.customer_id == Customer.id) & (ContactPoint.kind == "phone")
        )
        .join(Broadcast, Broadcast.id == BroadcastRecipient.broadcast_id)
        .where(
            ContactPoint.value == phone,
            Broadcast.status.in_(ACTIVE),
            BroadcastRecipient.status == "sent",
            BroadcastRecipient.acked_at.is_(None),
        )
    )
    acked = []
    for broadcast_id, customer_id in rows.all():
        if await record_ack(session, broadcast_id=broadcast_id, customer_id=customer_id, at=at):
            acked.append(broadcast_id)
    return acked


async def ack_counts(session: AsyncSession, *, broadcast_id: str) -> dict[int, tuple[int, int]]:
    """tier -> (acknowledged, escalated)."""
    rows = await session.execute(
        select(
            BroadcastRecipient.tier,
            func.count(BroadcastRecipient.acked_at),
            func.count(BroadcastRecipient.escalated_at),
        )
        .where(BroadcastRecipient.broadcast_id == broadcast_id)
        .group_by(BroadcastRecipient.tier)
    )
    return {tier: (int(a), int(e)) for tier, a, e in rows.all()}
