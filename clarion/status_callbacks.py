"""Provider status callbacks: what happened to a message after the provider accepted it.

Twilio reports each SMS as it moves on (queued, sent, delivered, or undelivered and
failed). :func:`record_provider_status` finds the delivery by the provider's message id,
keeps the furthest status reached and appends an audit event. Callbacks may repeat and
arrive out of order: a status that is not further along than the one recorded changes
nothing, so a delivered message is never downgraded. The first "delivered" (or "read")
sets the delivery's ``delivered_at``, which the delivery reports count. Email has no
such receipt: its deliveries are never counted delivered.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from clarion.models import AuditKind, Channel
from clarion.store import Store, repo
from clarion.store.tables import Delivery, utcnow

# How far along each reported status is; failures end the road, delivered ends it best.
RANK: dict[str, int] = {
    "accepted": 1,
    "scheduled": 1,
    "queued": 1,
    "sending": 2,
    "sent": 3,
    "undelivered": 4,
    "failed": 4,
    "delivered": 5,
    "read": 6,
}
FAILURES = frozenset({"undelivered", "failed"})
# The provider's receipt that the message arrived (delivery analytics: delivered_at).
DELIVERED = frozenset({"delivered", "read"})


@dataclass(frozen=True)
class StatusUpdate:
    message_id: str
    workflow_id: str
    customer_id: str
    channel: Channel
    provider_message_id: str
    status: str
    error_code: str
    changed: bool  # False for a repeated or stale callback

    @property
    def failed(self) -> bool:
        """A new report that the message did not arrive: time to fall back."""
        return self.changed and self.status in FAILURES


async def record_provider_status(
    store: Store,
    *,
    provider: str,
    provider_message_id: str,
    status: str,
    error_code: str = "",
    at: datetime | None = None,
) -> StatusUpdate | None:
    """Record one callback; None when no delivery has that provider message id."""
    status = status.strip().lower()
    async with store.transaction() as session:
        delivery = (
            await session.execute(
                select(Delivery)
                .where(Delivery.provider_message_id == provider_message_id)
                .order_by(Delivery.created_at)
                .limit(1)
            )
        ).scalar_one_or_none()
        if delivery is None:
            return None
        current = RANK.get(delivery.provider_status, 0)
        changed = status in RANK and RANK[status] > current
        update = StatusUpdate(
            message_id=delivery.message_id,
            workflow_id=delivery.workflow_id,
            customer_id=delivery.customer_external_id,
            channel=Channel(delivery.channel),
            provider_message_id=provider_message_id,
            status=status,
            error_code=error_code,
            changed=changed,
        )
        if not changed:
            return update
        delivery.provider_status = status
        delivery.updated_at = utcnow()  # the rollup of the reports looks for changed rows
        if status in DELIVERED and delivery.delivered_at is None:
            delivery.delivered_at = at or utcnow()
        if status in FAILURES:
            delivery.error = f"{provider} reported {status}" + (
                f" (error {error_code})" if error_code else ""
            )
        await repo.append_audit(
            session,
            kind=AuditKind.PROVIDER_STATUS,
            customer_external_id=delivery.customer_external_id,
            message_id=delivery.message_id,
            workflow_id=delivery.workflow_id,
            channel=update.channel,
            actor=provider,
            reason=status,
            detail={"provider_message_id": provider_message_id, "error_code": error_code},
            dedupe_key=f"{provider}-status:{provider_message_id}:{status}",
        )
        return update
