"""Activities of crisis broadcasts: resolve the audience in SQL, send in batches.

A batch covers a range of recipients (by ``seq``) and works through it in chunks:
1. read the chunk's recipients, customers, contact points and consent in bulk;
2. decide each recipient's channel (consent, contact point, the tier's ladder);
3. write the delivery rows as ``sending``, then send concurrently under the shared rate
   limit, falling back down the ladder on permanent errors;
4. write the outcomes (delivery rows, recipients, audit) and heartbeat the chunk's end.
A retried batch resumes after the last heartbeated chunk; rows it finds ``sent`` are not
sent again, rows left ``sending`` by a crash are sent again and counted as possible
duplicates. Each chunk sends the broadcast's *current* generation, and a recipient who
already has that generation (or a newer one) is skipped: nobody gets a stale message
after a newer one.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import and_, case, func, insert, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.deliver import CONTACT_KIND, outgoing_for, render_for, render_variables
from clarion.channels import OutgoingMessage, Provider
from clarion.config import Settings
from clarion.crisis.acks import make_ack_token
from clarion.crisis.models import (
    BatchInput,
    BroadcastInput,
    BroadcastState,
    FinishBroadcastInput,
    GenerationResult,
    NewGeneration,
    PreparedBroadcast,
    Tally,
    TierRange,
)
from clarion.errors import NotFound, PermanentChannelError, RenderError, RetryableChannelError
from clarion.faults import failpoint
from clarion.logging import get_logger
from clarion.models import AuditKind, Channel, ConsentStatus, DeliveryStatus, Purpose
from clarion.policy import ConsentFact, decide_consent
from clarion.store import Store, repo
from clarion.store.ratelimit import RateLimiter
from clarion.store.segments import SegmentError, compile_segment
from clarion.store.tables import (
    AudienceListEntry,
    AuditEvent,
    Broadcast,
    BroadcastMessage,
    BroadcastRecipient,
    ConsentRecord,
    Customer,
    Delivery,
    utcnow,
)
from clarion.templates import TemplateDefinition

log = get_logger(__name__)

CHUNK = 100
RETRIES_IN_BATCH = 3
CRISIS_CATEGORY = "crisis"


def broadcast_message_id(
    broadcast_id: str, gen: int, customer_id: str, escalation: bool = False
) -> str:
    return f"crisis-{broadcast_id}-g{gen}{'-esc' if escalation else ''}-{customer_id}"


@dataclass
class _Plan:
    recipient: BroadcastRecipient
    customer: Customer | None
    ladder: list[Channel]  # channels allowed by consent and contact data, in order
    reason: str = ""  # why nothing can be sent (suppressed / failed)
    failed: bool = False
    outgoing: dict[Channel, OutgoingMessage] = field(default_factory=dict)
    sent_channel: Channel | None = None
    provider: str = ""
    provider_id: str = ""
    error: str = ""
    retry: bool = False  # a retryable failure survived the in-batch retries
    duplicate: bool = False


class BroadcastActivities:
    def __init__(
        self, store: Store, providers: dict[Channel, Provider], settings: Settings
    ) -> None:
        self.store = store
        self.providers = providers
        self.settings = settings
        self.limiter = RateLimiter(
            store, {Channel.EMAIL: settings.rate_limit_email, Channel.SMS: settings.rate_limit_sms}
        )
        self._definitions: dict[tuple[str, int], TemplateDefinition] = {}

    # ------------------------------------------------------------------ prepare

    @activity.defn(name="prepare_broadcast")
    async def prepare_broadcast(self, data: BroadcastInput) -> PreparedBroadcast:
        """Create the broadcast, pin the template, snapshot the audience in tier order."""
        with structlog.contextvars.bound_contextvars(broadcast_id=data.broadcast_id):
            async with self.store.transaction() as session:
                try:
                    version, _ = await repo.get_template_version(session, name=data.template)
                except NotFound as exc:
                    return PreparedBroadcast(ok=False, error=str(exc))
                existing = await session.get(Broadcast, data.broadcast_id)
                if existing is None:
                    session.add(
                        Broadcast(
                            id=data.broadcast_id,
                            incident_id=data.incident.id,
                            title=data.incident.title,
                            severity=data.incident.severity.value,
                            status=BroadcastState.PREPARING.value,
                            audience={
                                **data.audience.model_dump(mode="json"),
                                "tiers": [t.model_dump(mode="json") for t in data.tiers],
                            },
                            current_gen=1,
                        )
                    )
                    session.add(
                        BroadcastMessage(
                            broadcast_id=data.broadcast_id,
                            gen=1,
                            kind="launch",
                            template=data.template,
                            template_version=version.version,
                        )
                    )
                    await session.flush()
                    try:
                        await self._snapshot(session, data)
                    except SegmentError as exc:
                        return PreparedBroadcast(ok=False, error=str(exc))
                ranges = await self._ranges(session, data.broadcast_id)
                unknown = 0
                if data.audience.list_id:
                    unknown = int(
                        await session.scalar(
                            select(func.count())
                            .select_from(AudienceListEntry)
                            .outerjoin(
                                Customer,
                                Customer.external_id == AudienceListEntry.customer_external_id,
                            )
                            .where(
                                AudienceListEntry.list_id == data.audience.list_id,
                                Customer.id.is_(None),
                            )
                        )
                        or 0
                    )
            log.info(
                "broadcast prepared",
                recipients=sum(r.count for r in ranges),
                tiers=[(r.tier, r.count) for r in ranges],
                unknown_customers=unknown,
            )
            return PreparedBroadcast(
                ok=True,
                pre_approved=version.category == CRISIS_CATEGORY and version.status == "approved",
                template_version=version.version,
                ranges=ranges,
                unknown_customers=unknown,
            )

    async def _snapshot(self, session: AsyncSession, data: BroadcastInput) -> None:
        dialect = self.store.engine.dialect.name
        tier = case(
            *[(compile_segment(t.segment, dialect), i) for i, t in enumerate(data.tiers)],
            else_=-1,
        ).label("tier")
        query = select(Customer.id.label("cid"), Customer.external_id.label("ext"), tier)
        if data.audience.list_id:
            query = query.join(
                AudienceListEntry,
                and_(
                    AudienceListEntry.customer_external_id == Customer.external_id,
                    AudienceListEntry.list_id == data.audience.list_id,
                ),
            )
        if data.audience.segment:
            query = query.where(compile_segment(data.audience.segment, dialect))
        audience = query.subquery()
        numbered = select(
            literal(data.broadcast_id),
            func.row_number().over(order_by=(audience.c.tier, audience.c.cid)),
            audience.c.ext,
            audience.c.tier,
            literal("pending"),
            literal(0),
            literal(""),
        ).where(audience.c.tier >= 0)
        await session.execute(
            insert(BroadcastRecipient).from_select(
                [
                    "broadcast_id",
                    "seq",
                    "customer_external_id",
                    "tier",
                    "status",
                    "gen_sent",
                    "reason",
                ],
                numbered,
            )
        )

    async def _ranges(self, session: AsyncSession, broadcast_id: str) -> list[TierRange]:
        rows = await session.execute(
            select(
                BroadcastRecipient.tier,
                func.min(BroadcastRecipient.seq),
                func.max(BroadcastRecipient.seq),
                func.count(),
            )
            .where(BroadcastRecipient.broadcast_id == broadcast_id)
            .group_by(BroadcastRecipient.tier)
            .order_by(BroadcastRecipient.tier)
        )
        return [TierRange(tier=t, seq_from=a, seq_to=b, count=n) for t, a, b, n in rows]

    # ------------------------------------------------------------------ generations

    @activity.defn(name="new_broadcast_generation")
    async def new_generation(self, data: NewGeneration) -> GenerationResult:
        """A follow-up or resolution message: the next generation of the broadcast."""
        async with self.store.transaction() as session:
            try:
                version, _ = await repo.get_template_version(session, name=data.template)
            except NotFound as exc:
                return GenerationResult(ok=False, error=str(exc))
            broadcast = await session.get(Broadcast, data.broadcast_id)
            if broadcast is None:
                return GenerationResult(ok=False, error=f"unknown broadcast {data.broadcast_id!r}")
            gen = broadcast.current_gen + 1
            session.add(
                BroadcastMessage(
                    broadcast_id=data.broadcast_id,
                    gen=gen,
                    kind=data.kind,
                    template=data.template,
                    template_version=version.version,
                )
            )
            broadcast.current_gen = gen
        return GenerationResult(ok=True, gen=gen)

    @activity.defn(name="set_broadcast_state")
    async def set_state(self, data: FinishBroadcastInput) -> None:
        async with self.store.transaction() as session:
            broadcast = await session.get(Broadcast, data.broadcast_id)
            if broadcast is None:
                return
            broadcast.status = data.state.value
            if data.state is BroadcastState.DISPATCHING and broadcast.launched_at is None:
                broadcast.launched_at = utcnow()
            if data.state in (
                BroadcastState.RESOLVED,
                BroadcastState.CANCELLED,
                BroadcastState.REJECTED,
            ):
                broadcast.ended_at = utcnow()

    # ------------------------------------------------------------------ send

    @activity.defn(name="send_broadcast_batch")
    async def send_broadcast_batch(self, data: BatchInput) -> Tally:
        info = activity.info()
        start = data.seq_from
        if info.heartbeat_details:
            start = int(info.heartbeat_details[0]) + 1
        tally = Tally()
        with structlog.contextvars.bound_contextvars(
            broadcast_id=data.broadcast_id, tier=data.tier, seq_from=start, attempt=info.attempt
        ):
            seq = start
            while seq <= data.seq_to:
                end = min(seq + CHUNK - 1, data.seq_to)
                retry = await self._chunk(data, seq, end, tally)
                if retry:
                    # Keep the progress before this chunk; Temporal retries the batch later.
                    raise ApplicationError(
                        f"{retry} recipients hit retryable provider errors; retrying the batch",
                        type="RetryableChannelError",
                    )
                activity.heartbeat(end)
                seq = end + 1
        return tally

    async def _chunk(self, data: BatchInput, seq_from: int, seq_to: int, tally: Tally) -> int:
        async with self.store.transaction() as session:
            broadcast = await session.get(Broadcast, data.broadcast_id)
            if broadcast is None or broadcast.status == BroadcastState.CANCELLED.value:
                return 0
            gen = broadcast.current_gen
            message = await session.get(BroadcastMessage, (data.broadcast_id, gen))
            assert message is not None
            definition = await self._definition(session, message.template, message.template_version)
            if data.escalate:  # reached, not acknowledged, not yet escalated
                which = [
                    BroadcastRecipient.status == "sent",
                    BroadcastRecipient.acked_at.is_(None),
                    BroadcastRecipient.escalated_at.is_(None),
                ]
            else:  # not yet handled for the current generation
                which = [
                    BroadcastRecipient.gen_sent < gen,
                    BroadcastRecipient.status.in_(("pending", "sending", "sent")),
                ]
            recipients = list(
                (
                    await session.execute(
                        select(BroadcastRecipient).where(
                            BroadcastRecipient.broadcast_id == data.broadcast_id,
                            BroadcastRecipient.seq.between(seq_from, seq_to),
                            *which,
                        )
                    )
                ).scalars()
            )
            if not recipients:
                return 0
            plans = await self._plan(session, data, recipients, gen, message, definition)
            # Mark what goes out as "sending" before any provider sees it.
            for plan in plans:
                if plan.ladder and not plan.failed and not data.escalate:
                    if plan.recipient.status == "sending":
                        plan.duplicate = True
                    plan.recipient.status = "sending"
        await self._send_all(plans)
        await failpoint(self.settings.failpoints, "broadcast_after_send")
        await self._record(data, plans, gen, message, definition.purpose, tally)
        return sum(1 for p in plans if p.retry)

    async def _definition(
        self, session: AsyncSession, name: str, version: int
    ) -> TemplateDefinition:
        key = (name, version)
        if key not in self._definitions:
            _, self._definitions[key] = await repo.get_template_version(
                session, name=name, version=version
            )
        return self._definitions[key]

    async def _plan(
        self,
        session: AsyncSession,
        data: BatchInput,
        recipients: list[BroadcastRecipient],
        gen: int,
        message: BroadcastMessage,
        definition: TemplateDefinition,
    ) -> list[_Plan]:
        ids = [r.customer_external_id for r in recipients]
        customers = {
            c.external_id: c
            for c in (
                await session.execute(select(Customer).where(Customer.external_id.in_(ids)))
            ).scalars()
        }
        facts: dict[int, list[ConsentFact]] = defaultdict(list)
        rows = await session.execute(
            select(ConsentRecord)
            .where(ConsentRecord.customer_id.in_([c.id for c in customers.values()]))
            .order_by(ConsentRecord.recorded_at, ConsentRecord.id)
        )
        for r in rows.scalars():
            facts[r.customer_id].append(
                ConsentFact(
                    channel=Channel(r.channel),
                    purpose=Purpose(r.purpose),
                    status=ConsentStatus(r.status),
                    recorded_at=r.recorded_at,
                    source=r.source,
                )
            )
        purpose = definition.purpose
        secret = self.settings.ack_secret.get_secret_value()
        ack_links = data.ack_within_s is not None and bool(secret)
        expires = utcnow() + timedelta(seconds=max(data.ack_within_s or 0, 86_400) * 2)
        plans: list[_Plan] = []
        for recipient in recipients:
            customer = customers.get(recipient.customer_external_id)
            plan = _Plan(recipient=recipient, customer=customer, ladder=[])
            plans.append(plan)
            if customer is None:
                plan.failed, plan.reason = True, "unknown customer"
                continue
            reasons: list[str] = []
            mid = broadcast_message_id(data.broadcast_id, gen, customer.external_id, data.escalate)
            about: dict[str, Any] = {
                "id": data.broadcast_id,
                "generation": gen,
                "kind": message.kind,
                "escalation": data.escalate,
            }
            if ack_links:
                token = make_ack_token(secret, data.broadcast_id, customer.external_id, expires)
                about["ack_url"] = f"{self.settings.public_base_url.rstrip('/')}/ack/{token}"
            variables = render_variables(customer, {"broadcast": about}, mid)
            for channel in data.channels:
                address = repo.contact_of(customer, CONTACT_KIND[channel])
                decision = decide_consent(
                    facts[customer.id], channel, purpose, has_contact_point=address is not None
                )
                if not decision.allowed:
                    reasons.append(f"{channel.value}: {decision.reason}")
                    continue
                try:
                    rendered = render_for(definition, customer, channel, variables)
                except RenderError as exc:
                    reasons.append(f"{channel.value}: template_error: {exc}")
                    continue
                assert address is not None
                plan.outgoing[channel] = outgoing_for(mid, address, rendered)
                plan.ladder.append(channel)
            if not plan.ladder:
                plan.reason = "; ".join(reasons)
                plan.failed = any("template_error" in r for r in reasons)
        return plans

    async def _send_all(self, plans: list[_Plan]) -> None:
        gate = asyncio.Semaphore(self.settings.broadcast_concurrency)
        first: dict[Channel, int] = defaultdict(int)
        for plan in plans:
            if plan.ladder and not plan.failed:
                first[plan.ladder[0]] += 1
        for channel, n in first.items():
            await self.limiter.acquire(channel, n, on_wait=activity.heartbeat)

        async def one(plan: _Plan) -> None:
            async with gate:
                for position, channel in enumerate(plan.ladder):
                    if position > 0:
                        await self.limiter.acquire(channel, 1, on_wait=activity.heartbeat)
                    outcome = await self._send_with_retries(channel, plan.outgoing[channel])
                    if isinstance(outcome, tuple):
                        plan.sent_channel, (plan.provider, plan.provider_id) = channel, outcome
                        return
                    if isinstance(outcome, RetryableChannelError):
                        plan.retry, plan.error = True, str(outcome)
                        return
                    plan.error = (
                        f"{plan.error}; {channel.value}: {outcome}"
                        if plan.error
                        else f"{channel.value}: {outcome}"
                    )
                plan.failed = True
                plan.reason = plan.error

        await asyncio.gather(*(one(p) for p in plans if p.ladder and not p.failed))

    async def _send_with_retries(
        self, channel: Channel, message: OutgoingMessage
    ) -> tuple[str, str] | PermanentChannelError | RetryableChannelError:
        delay = 0.5
        for attempt in range(RETRIES_IN_BATCH + 1):
            try:
                receipt = await self.providers[channel].send(message)
                return receipt.provider, receipt.provider_message_id
            except PermanentChannelError as exc:
                return exc
            except RetryableChannelError as exc:
                if attempt == RETRIES_IN_BATCH:
                    return exc
                activity.heartbeat()
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    async def _record(
        self,
        data: BatchInput,
        plans: list[_Plan],
        gen: int,
        message: BroadcastMessage,
        purpose: Purpose,
        tally: Tally,
    ) -> None:
        """Write every final outcome of the chunk in one transaction, in bulk."""
        now = utcnow()
        recipients: list[dict[str, Any]] = []
        deliveries: list[dict[str, Any]] = []
        audits: list[dict[str, Any]] = []
        for plan in plans:
            if plan.retry:
                continue  # stays "sending": the retried batch sends it (counted as a duplicate)
            r = plan.recipient
            mid = broadcast_message_id(
                data.broadcast_id, gen, r.customer_external_id, data.escalate
            )
            audit = {
                "customer_external_id": r.customer_external_id,
                "message_id": mid,
                "workflow_id": data.workflow_id,
                "at": now,
                "actor": "system",
                "detail": {"broadcast": data.broadcast_id, "gen": gen, "tier": data.tier},
            }
            # gen_sent: the newest generation this recipient has been handled for.
            update_row: dict[str, Any] = {
                "broadcast_id": r.broadcast_id,
                "seq": r.seq,
                "gen_sent": gen,
            }
            if data.escalate:
                # An escalation notes the attempt and leaves the delivery state alone.
                update_row = {"broadcast_id": r.broadcast_id, "seq": r.seq, "escalated_at": now}
            if plan.sent_channel is not None:
                channel = plan.sent_channel.value
                if not data.escalate:
                    update_row |= {
                        "status": "sent",
                        "channel": channel,
                        "sent_at": now,
                        "reason": "",
                    }
                tally.add(data.tier, channel, "sent")
                tally.possible_duplicates += plan.duplicate
                deliveries.append(
                    {
                        "attempt_id": f"{mid}:{channel}",
                        "message_id": mid,
                        "workflow_id": data.workflow_id,
                        "customer_external_id": r.customer_external_id,
                        "channel": channel,
                        "template": message.template,
                        "template_version": message.template_version,
                        "purpose": purpose.value,
                        "status": DeliveryStatus.SENT.value,
                        "provider": plan.provider,
                        "provider_message_id": plan.provider_id,
                        "error": plan.error,
                        "tries": 2 if plan.duplicate else 1,
                        "created_at": now,
                        "updated_at": now,
                        "sent_at": now,
                    }
                )
                audits.append(
                    {
                        **audit,
                        "kind": AuditKind.SENT.value,
                        "channel": channel,
                        "reason": "",
                        "dedupe_key": f"{mid}:sent",
                    }
                )
            else:
                status = "failed" if plan.failed else "suppressed"
                if data.escalate:
                    update_row["reason"] = f"escalation: {plan.reason}"
                elif r.status != "sent" or r.gen_sent == 0:  # once reached, stays "sent"
                    update_row |= {"status": status, "reason": plan.reason}
                else:
                    update_row |= {"status": "sent"}
                tally.add(data.tier, plan.ladder[0].value if plan.ladder else "-", status)
                kind = AuditKind.UNDELIVERABLE if plan.failed else AuditKind.SUPPRESSED
                audits.append(
                    {
                        **audit,
                        "kind": kind.value,
                        "channel": None,
                        "reason": plan.reason,
                        "dedupe_key": f"{mid}:outcome",
                    }
                )
            recipients.append(update_row)
        async with self.store.transaction() as session:
            if recipients:
                await session.execute(update(BroadcastRecipient), recipients)
            await _insert_new(session, Delivery, Delivery.attempt_id, "attempt_id", deliveries)
            await _insert_new(session, AuditEvent, AuditEvent.dedupe_key, "dedupe_key", audits)


async def _insert_new(
    session: AsyncSession, table: Any, key: Any, name: str, rows: list[dict[str, Any]]
) -> None:
    """Insert the rows whose key is not in the table yet (a retried chunk writes again)."""
    if not rows:
        return
    seen = set(
        (await session.execute(select(key).where(key.in_([r[name] for r in rows])))).scalars()
    )
    fresh = [r for r in rows if r[name] not in seen]
    if fresh:
        await session.execute(insert(table), fresh)
