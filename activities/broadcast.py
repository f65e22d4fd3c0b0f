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
import contextvars
from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, cast

import structlog
from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    and_,
    case,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
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
from clarion.models import AuditKind, Channel, DeliveryStatus, Purpose
from clarion.policy import ConsentDecision
from clarion.policy.approval import DEFAULT_RULES, ApprovalRule, load_policy
from clarion.policy.compliance import (
    JurisdictionRules,
    consent_decision,
    decide_cap,
    load_compliance,
    next_allowed,
    quiet_window,
)
from clarion.store import Store, repo
from clarion.store.audit import append_sealed
from clarion.store.bulk import insert_rows
from clarion.store.ratelimit import RateLimiter
from clarion.store.repo import CustomerSnapshot
from clarion.store.segments import SegmentError, compile_segment
from clarion.store.tables import (
    AudienceListEntry,
    Broadcast,
    BroadcastMessage,
    BroadcastRecipient,
    Customer,
    Delivery,
    utcnow,
)
from clarion.templates import TemplateDefinition

log = get_logger(__name__)

FIRST_CHUNK = 250  # a batch's first chunk: the channel waits while it is planned
PIPELINE_DEPTH = 2  # chunks in flight in one batch: one sending while the next is planned
RETRIES_IN_BATCH = 3
CRISIS_CATEGORY = "crisis"
DELIVERIES = cast(Table, Delivery.__table__)


def broadcast_message_id(
    broadcast_id: str, gen: int, customer_id: str, escalation: bool = False
) -> str:
    return f"crisis-{broadcast_id}-g{gen}{'-esc' if escalation else ''}-{customer_id}"


@dataclass(slots=True)
class _Row:
    """A recipient row as read at the start of the chunk."""

    seq: int
    customer_external_id: str
    status: str
    gen_sent: int


@dataclass
class _Chunk:
    """Up to ``broadcast_chunk_size`` recipients on their way: planned, being sent, then
    recorded."""

    end: int  # the last seq the chunk covers
    cancelled: bool = False
    plans: list[_Plan] = field(default_factory=list)
    gen: int = 0
    template: str = ""
    template_version: int = 0
    purpose: Purpose = Purpose.SERVICE


@dataclass
class _Plan:
    recipient: _Row
    customer: CustomerSnapshot | None
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
        self.policy = load_policy(settings.approval_policy_file)
        self.compliance = load_compliance(settings.compliance_file)

    async def _held_back(
        self,
        session: AsyncSession,
        rules: JurisdictionRules,
        customer: CustomerSnapshot,
        channel: Channel,
        purpose: Purpose,
        message_id: str,
    ) -> str | None:
        """Why the jurisdiction's quiet hours or frequency caps (``rules``: the customer's
        jurisdiction's) keep this channel from this recipient now (the broadcast moves on
        down the ladder), or None. By default both cover marketing only, so crisis and
        service broadcasts are never held back."""
        now = utcnow()
        window = quiet_window(rules, purpose, channel, customer.timezone)
        if window is not None and next_allowed(now, window) > now:
            return f"quiet_hours: outside {window.allowed} local"
        caps = rules.caps_for(purpose, channel)
        if not caps:
            return None
        sent = await repo.cap_send_times(
            session,
            caps=caps,
            customer_external_id=customer.external_id,
            purpose=purpose,
            now=now,
            exclude_message_id=message_id,
        )
        verdict = decide_cap(caps, sent, now)
        return None if verdict.allowed else f"frequency_cap: {verdict.cap}"

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
            pre_approved = version.category == CRISIS_CATEGORY and version.status == "approved"
            rule = self.policy.rule_for("crisis_unapproved") or ApprovalRule(
                category="crisis_unapproved", ladder=DEFAULT_RULES["crisis_unapproved"].ladder
            )
            return PreparedBroadcast(
                ok=True,
                pre_approved=pre_approved,
                approval_rule=None if pre_approved else rule.model_dump(mode="json"),
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
        """Send recipients ``seq_from..seq_to`` chunk by chunk, as a pipeline: while one
        chunk's messages go out, the next chunk is read and planned, so the channel never
        waits for the store.

        The heartbeat carries the end of the last chunk whose outcomes are written, with
        every chunk before it, and the tally of those recipients. A retry resumes after that
        end, with that tally, plus the recipients after it that an earlier attempt wrote
        (chunks in flight when a chunk failed, or written after the last heartbeat that
        reached Temporal), counted from the store: the batch's tally covers each recipient
        once, however many attempts it took."""
        info = activity.info()
        start = data.seq_from
        tally = Tally()
        if info.heartbeat_details:
            start = int(info.heartbeat_details[0]) + 1
            if len(info.heartbeat_details) > 1:
                tally = Tally.model_validate(info.heartbeat_details[1])
        if info.attempt > 1:
            tally.merge(await self._written_already(data, start))
        progress: list[Any] = list(info.heartbeat_details)
        _PROGRESS.set(progress)  # what a keep-alive heartbeat repeats
        gate = asyncio.Semaphore(self.settings.broadcast_concurrency)
        in_flight: deque[tuple[_Chunk, asyncio.Task[None]]] = deque()
        retry = 0
        chunk_size = self.settings.broadcast_chunk_size
        with structlog.contextvars.bound_contextvars(
            broadcast_id=data.broadcast_id, tier=data.tier, seq_from=start, attempt=info.attempt
        ):
            seq = start
            try:
                while seq <= data.seq_to or in_flight:
                    while seq <= data.seq_to and len(in_flight) < PIPELINE_DEPTH and not retry:
                        size = min(FIRST_CHUNK, chunk_size) if seq == start else chunk_size
                        chunk = await self._prepare_chunk(
                            data, seq, min(seq + size - 1, data.seq_to)
                        )
                        seq = data.seq_to + 1 if chunk.cancelled else chunk.end + 1
                        task = asyncio.create_task(self._send_all(chunk.plans, gate))
                        in_flight.append((chunk, task))
                    if not in_flight:
                        break
                    chunk, task = in_flight.popleft()
                    await task
                    await failpoint(self.settings.failpoints, "broadcast_after_send")
                    written = Tally()
                    await self._record(data, chunk, written)
                    failed_here = sum(1 for p in chunk.plans if p.retry)
                    if failed_here or retry:
                        # Progress stops before this chunk; the chunks already in flight
                        # finish and are written (a retry skips what they handled, and
                        # counts them from the store: only their duplicates count here).
                        retry += failed_here
                        seq = data.seq_to + 1
                        tally.possible_duplicates += written.possible_duplicates
                    else:
                        tally.merge(written)
                        progress[:] = [chunk.end, tally.model_dump()]
                    activity.heartbeat(*progress)
            finally:
                for _, task in in_flight:
                    task.cancel()
        if retry:
            raise ApplicationError(
                f"{retry} recipients hit retryable provider errors; retrying the batch",
                type="RetryableChannelError",
            )
        return tally

    async def _written_already(self, data: BatchInput, seq_from: int) -> Tally:
        """The recipients from ``seq_from`` on whose outcome an earlier attempt of this
        batch wrote, as a tally: by their stored status, and channel when they were reached
        (``-`` otherwise: the store keeps no channel for the unreached)."""
        of_range = [
            BroadcastRecipient.broadcast_id == data.broadcast_id,
            BroadcastRecipient.seq.between(seq_from, data.seq_to),
        ]
        tally = Tally()
        async with self.store.session() as session:
            broadcast = await session.get(Broadcast, data.broadcast_id)
            if broadcast is None:
                return tally
            if data.escalate:  # escalated: reached again, or a reason why not
                unreached = BroadcastRecipient.reason.like("escalation:%")
                escalated = (
                    select(unreached, func.count())
                    .where(*of_range, BroadcastRecipient.escalated_at.is_not(None))
                    .group_by(unreached)
                )
                for failed, n in (await session.execute(escalated)).all():
                    channel = "-" if failed else data.channels[0].value
                    tally.add(data.tier, channel, "failed" if failed else "sent", n)
                return tally
            handled = (
                select(BroadcastRecipient.status, BroadcastRecipient.channel, func.count())
                .where(
                    *of_range,
                    BroadcastRecipient.gen_sent >= broadcast.current_gen,
                    BroadcastRecipient.status.in_(("sent", "failed", "suppressed")),
                )
                .group_by(BroadcastRecipient.status, BroadcastRecipient.channel)
            )
            for status, reached_on, n in (await session.execute(handled)).all():
                on = reached_on if status == "sent" and reached_on else "-"
                tally.add(data.tier, on, status, n)
        return tally

    async def _prepare_chunk(self, data: BatchInput, seq_from: int, seq_to: int) -> _Chunk:
        """Read and plan the chunk's recipients, and mark what goes out as ``sending``."""
        async with self.store.transaction() as session:
            broadcast = await session.get(Broadcast, data.broadcast_id)
            if broadcast is None or broadcast.status == BroadcastState.CANCELLED.value:
                return _Chunk(end=seq_to, cancelled=True)
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
            of_chunk = [
                BroadcastRecipient.broadcast_id == data.broadcast_id,
                BroadcastRecipient.seq.between(seq_from, seq_to),
                *which,
            ]
            # Core statements on the connection: column rows, no ORM state to keep.
            connection = await session.connection()
            recipients = [
                _Row(*row)
                for row in await connection.execute(
                    select(
                        BroadcastRecipient.seq,
                        BroadcastRecipient.customer_external_id,
                        BroadcastRecipient.status,
                        BroadcastRecipient.gen_sent,
                    )
                    .where(*of_chunk)
                    .order_by(BroadcastRecipient.seq)  # in priority order, on every backend
                )
            ]
            if not recipients:
                return _Chunk(end=seq_to)
            # The customers, contact points and consent of the same recipients, read by the
            # database through this query (in this transaction: the same rows).
            chunk_ids = select(BroadcastRecipient.customer_external_id).where(*of_chunk)
            plans = await self._plan(session, data, recipients, chunk_ids, gen, message, definition)
            # Mark what goes out as "sending" before any provider sees it.
            sending: list[int] = []
            if not data.escalate:
                for plan in plans:
                    if plan.ladder and not plan.failed:
                        plan.duplicate = plan.recipient.status == "sending"
                        sending.append(plan.recipient.seq)
            if sending:
                await connection.execute(
                    update(BroadcastRecipient)
                    .where(
                        BroadcastRecipient.broadcast_id == data.broadcast_id,
                        _seqs(sending),
                    )
                    .values(status="sending")
                    .execution_options(synchronize_session=False)
                )
        return _Chunk(
            end=seq_to,
            plans=plans,
            gen=gen,
            template=message.template,
            template_version=message.template_version,
            purpose=definition.purpose,
        )

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
        recipients: list[_Row],
        chunk_ids: Select[Any],
        gen: int,
        message: BroadcastMessage,
        definition: TemplateDefinition,
    ) -> list[_Plan]:
        """Each recipient's plan; ``chunk_ids`` selects their customers' external ids."""
        customers = await repo.customer_snapshots(session, external_ids=chunk_ids)
        facts = await repo.consent_facts_for(session, customer_ids=repo.customer_ids_of(chunk_ids))
        purpose = definition.purpose
        secret = self.settings.ack_secret.get_secret_value()
        ack_links = data.ack_within_s is not None and bool(secret)
        expires = utcnow() + timedelta(seconds=max(data.ack_within_s or 0, 86_400) * 2)
        plans: list[_Plan] = []
        # Pure functions of a few values, so worked out once per chunk: the consent
        # decision of customers with no consent facts, by jurisdiction, channel and whether
        # they have a contact point; and whether quiet hours or caps can hold a channel back
        # in a jurisdiction (by default they cover marketing only).
        no_facts: dict[tuple[str, Channel, bool], ConsentDecision] = {}
        can_hold: dict[tuple[str, Channel], bool] = {}
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
            jurisdiction = self.compliance.jurisdiction_of(customer.attributes)
            rules = self.compliance.jurisdictions[jurisdiction]
            own_facts = facts.get(customer.id)
            for channel in data.channels:
                address = repo.contact_of(customer, CONTACT_KIND[channel])
                key = (jurisdiction, channel, address is not None)
                decision = None if own_facts else no_facts.get(key)
                if decision is None:
                    decision = consent_decision(
                        rules,
                        own_facts or [],
                        channel,
                        purpose,
                        category=definition.category,
                        has_contact_point=address is not None,
                    )
                    if not own_facts:
                        no_facts[key] = decision
                if not decision.allowed:
                    reasons.append(f"{channel.value}: {decision.reason}")
                    continue
                holds = can_hold.get((jurisdiction, channel))
                if holds is None:
                    holds = can_hold[(jurisdiction, channel)] = rules.may_hold(purpose, channel)
                held = (
                    await self._held_back(session, rules, customer, channel, purpose, mid)
                    if holds
                    else None
                )
                if held is not None:
                    reasons.append(f"{channel.value}: {held}")
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

    async def _send_all(self, plans: list[_Plan], gate: asyncio.Semaphore) -> None:
        """Send the chunk's messages: ``broadcast_concurrency`` senders take them in order
        (no task per recipient waiting on the gate), each taking its tokens from the
        shared rate limit in slices of a quarter of a second's worth."""
        todo = deque(p for p in plans if p.ladder and not p.failed)
        first: dict[Channel, int] = defaultdict(int)
        for plan in todo:
            first[plan.ladder[0]] += 1
        permits = _Permits(self.limiter, first)

        async def one(plan: _Plan) -> None:
            async with gate:
                for position, channel in enumerate(plan.ladder):
                    await permits.take(channel, first=position == 0)
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

        async def sender() -> None:
            while todo:
                await one(todo.popleft())

        senders = min(len(todo), self.settings.broadcast_concurrency)
        await asyncio.gather(*(sender() for _ in range(senders)))

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
                _keep_alive()
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    async def _record(self, data: BatchInput, chunk: _Chunk, tally: Tally) -> None:
        """Write every final outcome of the chunk in one transaction, in a few statements.

        Recipients reached on a channel share their new values, so each channel's are set by
        one UPDATE over their seqs; the rest (suppressed, failed) are updated row by row.
        """
        plans, gen = chunk.plans, chunk.gen
        now = utcnow()
        reached: dict[str, list[int]] = defaultdict(list)  # channel -> seqs
        escalated: list[int] = []
        followed: list[str] = []  # message ids an escalation follows up (they fell back)
        others: list[dict[str, Any]] = []
        deliveries: list[dict[str, Any]] = []
        audits: list[dict[str, Any]] = []
        detail = {"broadcast": data.broadcast_id, "gen": gen, "tier": data.tier}  # one, shared
        duplicates = 0  # added to the tally once (a model's attribute: slow to set)
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
                "detail": detail,
            }
            if plan.sent_channel is not None:
                channel = plan.sent_channel.value
                # An escalation notes the attempt and leaves the delivery state alone.
                (escalated if data.escalate else reached[channel]).append(r.seq)
                if data.escalate:  # the message it follows up: the one the recipient got
                    followed.append(
                        broadcast_message_id(
                            data.broadcast_id, r.gen_sent, r.customer_external_id, False
                        )
                    )
                tally.add(data.tier, channel, "sent")
                duplicates += plan.duplicate
                deliveries.append(
                    {
                        "attempt_id": f"{mid}:{channel}",
                        "message_id": mid,
                        "workflow_id": data.workflow_id,
                        "customer_external_id": r.customer_external_id,
                        "channel": channel,
                        "template": chunk.template,
                        "template_version": chunk.template_version,
                        "purpose": chunk.purpose.value,
                        "status": DeliveryStatus.SENT.value,
                        "provider": plan.provider,
                        "provider_message_id": plan.provider_id,
                        "error": plan.error,
                        "tries": 2 if plan.duplicate else 1,
                        "created_at": now,
                        "updated_at": now,
                        "sent_at": now,
                        "segment": ""
                        if plan.customer is None
                        else repo.segment_of(plan.customer, self.settings.report_segment_attribute),
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
                continue
            status = "failed" if plan.failed else "suppressed"
            row: dict[str, Any] = {"broadcast_id": data.broadcast_id, "seq": r.seq}
            if data.escalate:
                row |= {"escalated_at": now, "reason": f"escalation: {plan.reason}"}
            elif r.status == "sent" and r.gen_sent > 0:  # once reached, stays "sent"
                row |= {"gen_sent": gen, "status": "sent"}
            else:
                row |= {"gen_sent": gen, "status": status, "reason": plan.reason}
            others.append(row)
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
        tally.possible_duplicates += duplicates
        of_broadcast = BroadcastRecipient.broadcast_id == data.broadcast_id
        async with self.store.transaction() as session:
            # Core statements on the session's connection: the ORM's bulk-insert path would
            # inspect every row against the mapper, for nothing (the rows of ``others``
            # differ in their columns: the ORM's update by primary key groups them).
            connection = await session.connection()
            for channel, seqs in reached.items():
                await connection.execute(
                    update(BroadcastRecipient)
                    .where(of_broadcast, _seqs(seqs))
                    .values(status="sent", channel=channel, sent_at=now, reason="", gen_sent=gen)
                    .execution_options(synchronize_session=False)
                )
            if escalated:
                await connection.execute(
                    update(BroadcastRecipient)
                    .where(of_broadcast, _seqs(escalated))
                    .values(escalated_at=now)
                    .execution_options(synchronize_session=False)
                )
            if others:
                await session.execute(update(BroadcastRecipient), others)
            # A retried chunk writes again: the rows there already are left out.
            await insert_rows(connection, DELIVERIES, deliveries, skip_existing="attempt_id")
            if followed:
                # Delivery analytics: the message nobody acknowledged fell back to the call.
                await connection.execute(
                    update(Delivery)
                    .where(Delivery.message_id.in_(followed), Delivery.fell_back.is_(False))
                    .values(fell_back=True, updated_at=now)
                    .execution_options(synchronize_session=False)
                )
            if audits:
                # Numbered and hashed from these values, then inserted sealed; those a
                # retried chunk wrote already are left out (no hole in the chain).
                await session.run_sync(append_sealed, audits)


class _Permits:
    """A chunk's tokens from the shared rate limit, taken a slice at a time as its
    messages go out (so a limited channel gets an even flow, not a burst per chunk).
    ``first``: how many messages go out on each channel as their first choice; a
    fallback takes one token of its own."""

    def __init__(self, limiter: RateLimiter, first: dict[Channel, int]) -> None:
        self.limiter = limiter
        self.left = dict(first)  # first-choice tokens not taken from the limiter yet
        self.held: dict[Channel, int] = defaultdict(int)
        self.lock = asyncio.Lock()

    async def take(self, channel: Channel, *, first: bool) -> None:
        rate = self.limiter.rates.get(channel)
        if rate is None:
            return
        if not first:
            await self.limiter.acquire(channel, 1, on_wait=_keep_alive)
            return
        async with self.lock:
            if self.held[channel] == 0:
                n = min(self.left[channel], max(1, int(rate / 4)))
                await self.limiter.acquire(channel, n, on_wait=_keep_alive)
                self.left[channel] -= n
                self.held[channel] = n
            self.held[channel] -= 1


_PROGRESS: contextvars.ContextVar[list[Any]] = contextvars.ContextVar("broadcast_batch_progress")


def _keep_alive() -> None:
    """Heartbeat while waiting (a rate limit, a retry's pause) with the batch's progress as
    last given: a heartbeat without details would replace it with nothing."""
    activity.heartbeat(*_PROGRESS.get([]))


MAX_SEQ_RUNS = 16


def _seqs(seqs: list[int]) -> ColumnElement[bool]:
    """``seq`` among ``seqs``: as a few ranges when they make few runs (a chunk where
    nearly everyone is reached is one range, not 1,000 bound values to process on both
    sides of the driver), else as IN."""
    runs: list[list[int]] = []
    for seq in sorted(seqs):  # a chunk plans them in order already: linear
        if runs and seq <= runs[-1][1] + 1:
            runs[-1][1] = seq
        elif len(runs) == MAX_SEQ_RUNS:
            return BroadcastRecipient.seq.in_(seqs)
        else:
            runs.append([seq, seq])
    if not runs:
        return BroadcastRecipient.seq.in_([])
    return or_(*(BroadcastRecipient.seq.between(a, b) for a, b in runs))
