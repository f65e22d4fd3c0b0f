"""Activities of the DeliverMessage workflow.

``send_message`` is idempotent by message id: the delivery row ``{message_id}:{channel}``
is written as ``sending`` before the provider is called and as ``sent`` as soon as the
provider accepts; a retry that finds ``sent`` returns the recorded receipt and sends
nothing. The one window left is between the provider's acceptance and that write
(docs/delivery-guarantees.md).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable
from typing import Any, TypeVar

import structlog
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import activity
from temporalio.exceptions import ApplicationError

from clarion.channels import OutgoingCall, OutgoingEmail, OutgoingMessage, OutgoingSms, Provider
from clarion.config import Settings
from clarion.errors import NotFound, PermanentChannelError, RenderError, RetryableChannelError
from clarion.faults import failpoint
from clarion.logging import get_logger
from clarion.models import (
    AuditKind,
    Channel,
    ChannelPlan,
    DeferralInput,
    DeliveryOutcome,
    DeliveryStatus,
    EscalationInput,
    OutcomeStatus,
    PreparedDelivery,
    PrepareDeliveryInput,
    Purpose,
    RecordOutcomeInput,
    SendInput,
    SendResult,
)
from clarion.policy import ConsentDecision
from clarion.policy.approval import load_policy
from clarion.policy.compliance import (
    CapAction,
    consent_decision,
    decide_cap,
    load_compliance,
    quiet_window,
)
from clarion.store import Store, repo
from clarion.store.repo import CustomerSnapshot
from clarion.store.tables import AgentTask, Customer, Delivery, utcnow
from clarion.templates import (
    RenderedEmail,
    RenderedSms,
    RenderedVoice,
    TemplateDefinition,
    render,
    resolve_locale,
)
from clarion.unsubscribe import list_unsubscribe_headers

log = get_logger(__name__)
T = TypeVar("T")

CONTACT_KIND = {Channel.EMAIL: "email", Channel.SMS: "phone", Channel.VOICE: "phone"}

# Error types the workflow treats as final for a channel (and falls back on).
PERMANENT_ERROR_TYPES = ["PermanentChannelError", "RenderError", "NotFound"]


def render_variables(
    customer: Customer | CustomerSnapshot, context: dict[str, Any], message_id: str
) -> dict[str, Any]:
    """What a template sees: the caller's context, ``customer`` and ``message_id``."""
    first_name = customer.name.split()[0] if customer.name.strip() else ""
    return {
        **context,
        "message_id": message_id,
        "customer": {
            "id": customer.external_id,
            "name": customer.name,
            "first_name": first_name,
            "locale": customer.locale,
            "timezone": customer.timezone,
            "email": repo.contact_of(customer, "email"),
            "phone": repo.contact_of(customer, "phone"),
            "attributes": dict(customer.attributes or {}),
        },
    }


def render_for(
    definition: TemplateDefinition,
    customer: Customer | CustomerSnapshot,
    channel: Channel,
    variables: dict[str, Any],
) -> RenderedEmail | RenderedSms | RenderedVoice:
    """Render the customer's locale (with fallback) for ``channel``; RenderError if impossible."""
    locale = resolve_locale(definition.locales, customer.locale, definition.default_locale)
    variant = definition.locales[locale].for_channel(channel)
    if variant is None and locale != definition.default_locale:
        locale = definition.default_locale
        variant = definition.locales[locale].for_channel(channel)
    if variant is None:
        raise RenderError(f"template {definition.name!r} has no {channel.value} variant")
    return render(variant, variables, where=f"locales.{locale}.{channel.value}")


def outgoing_for(
    message_id: str, address: str, rendered: RenderedEmail | RenderedSms | RenderedVoice
) -> OutgoingMessage:
    """What a provider sends, from a rendered variant and the recipient's address."""
    if isinstance(rendered, RenderedEmail):
        return OutgoingEmail(message_id, address, rendered.subject, rendered.text, rendered.html)
    if isinstance(rendered, RenderedVoice):
        return OutgoingCall(message_id, address, rendered.say)
    return OutgoingSms(message_id, address, rendered.body)


async def _with_heartbeat(awaitable: Awaitable[T], every: float = 1.0) -> T:
    task = asyncio.ensure_future(awaitable)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=every)
            if done:
                return task.result()
            activity.heartbeat()
    finally:
        if not task.done():
            task.cancel()


class DeliveryActivities:
    """The activities, holding the store and channel providers of this worker."""

    def __init__(
        self, store: Store, providers: dict[Channel, Provider], settings: Settings
    ) -> None:
        self.store = store
        self.providers = providers
        self.settings = settings
        self.policy = load_policy(settings.approval_policy_file)
        self.compliance = load_compliance(settings.compliance_file)

    async def _consent(
        self,
        session: AsyncSession,
        customer: Customer,
        channel: Channel,
        purpose: Purpose,
        category: str,
    ) -> ConsentDecision:
        facts = await repo.consent_facts(session, customer=customer)
        contact = repo.contact_of(customer, CONTACT_KIND[channel])
        return consent_decision(
            self.compliance.rules_for(customer.attributes),
            facts,
            channel,
            purpose,
            category=category,
            has_contact_point=contact is not None,
        )

    @activity.defn(name="prepare_delivery")
    async def prepare_delivery(self, data: PrepareDeliveryInput) -> PreparedDelivery:
        """Resolve customer and template version, decide consent and check rendering per channel."""
        req = data.request
        mid = data.message_id
        common: dict[str, Any] = {
            "customer_external_id": req.customer_id,
            "message_id": mid,
            "workflow_id": data.workflow_id,
        }
        with structlog.contextvars.bound_contextvars(message_id=mid, workflow_id=data.workflow_id):
            async with self.store.transaction() as session:
                await repo.append_audit(
                    session,
                    kind=AuditKind.REQUESTED,
                    **common,
                    detail={"template": req.template, "channels": [c.value for c in req.channels]},
                    dedupe_key=f"{mid}:requested",
                )
                customer = await repo.get_customer(session, external_id=req.customer_id)
                try:
                    if customer is None:
                        raise NotFound("customer", req.customer_id)
                    version, definition = await repo.get_template_version(
                        session, name=req.template, version=req.template_version
                    )
                except NotFound as exc:
                    log.warning("message cannot be prepared", reason=str(exc))
                    return PreparedDelivery(ok=False, error=str(exc))
                purpose = req.purpose or Purpose(version.purpose)
                variables = render_variables(customer, req.context, mid)
                plans: list[ChannelPlan] = []
                rules = self.compliance.rules_for(customer.attributes)
                jurisdiction = self.compliance.jurisdiction_of(customer.attributes)
                for channel in req.channels:
                    decision = await self._consent(
                        session, customer, channel, purpose, version.category
                    )
                    if not decision.allowed:
                        plans.append(
                            ChannelPlan(channel=channel, allowed=False, reason=decision.reason)
                        )
                        await repo.append_audit(
                            session,
                            kind=AuditKind.SUPPRESSED,
                            **common,
                            channel=channel,
                            reason=decision.reason,
                            detail={"purpose": purpose.value},
                            dedupe_key=f"{mid}:suppressed:{channel.value}",
                        )
                        continue
                    try:
                        render_for(definition, customer, channel, variables)
                    except RenderError as exc:
                        plans.append(
                            ChannelPlan(
                                channel=channel, allowed=False, reason=f"template_error: {exc}"
                            )
                        )
                        await repo.append_audit(
                            session,
                            kind=AuditKind.RENDER_FAILED,
                            **common,
                            channel=channel,
                            reason=str(exc),
                            detail={"template": req.template, "version": version.version},
                            dedupe_key=f"{mid}:render_failed:{channel.value}",
                        )
                        continue
                    if decision.reason == "safety_override":
                        await repo.append_audit(
                            session,
                            kind=AuditKind.CONSENT_OVERRIDDEN,
                            **common,
                            channel=channel,
                            reason=f"category {version.category!r} is sent despite an opt-out "
                            f"in jurisdiction {jurisdiction}",
                            detail={"purpose": purpose.value, "category": version.category},
                            dedupe_key=f"{mid}:consent_overridden:{channel.value}",
                        )
                    quiet = quiet_window(rules, purpose, channel, customer.timezone)
                    plans.append(
                        ChannelPlan(
                            channel=channel,
                            allowed=True,
                            reason=decision.reason,
                            quiet_allowed=quiet.allowed if quiet else "",
                            quiet_zones=quiet.zones if quiet else [],
                        )
                    )
                log.info(
                    "message prepared",
                    template=req.template,
                    version=version.version,
                    plans=[(p.channel.value, p.allowed, p.reason) for p in plans],
                )
                rule = self.policy.rule_for(version.category)
                return PreparedDelivery(
                    ok=True,
                    purpose=purpose,
                    template_version=version.version,
                    plans=plans,
                    category=version.category,
                    approval_rule=None if rule is None else rule.model_dump(mode="json"),
                )

    def _outgoing(
        self,
        data: SendInput,
        customer: Customer,
        rendered: RenderedEmail | RenderedSms | RenderedVoice,
    ) -> OutgoingMessage:
        address = repo.contact_of(customer, CONTACT_KIND[data.channel])
        if address is None:
            raise PermanentChannelError(f"customer has no {CONTACT_KIND[data.channel]}")
        outgoing = outgoing_for(data.message_id, address, rendered)
        if isinstance(outgoing, OutgoingEmail) and data.purpose is Purpose.MARKETING:
            headers = list_unsubscribe_headers(
                self.settings,
                customer_id=customer.external_id,
                message_id=data.message_id,
                now=utcnow(),
            )
            outgoing = dataclasses.replace(outgoing, headers=tuple(headers.items()))
        return outgoing

    async def _record_failure(
        self,
        attempt: str,
        common: dict[str, Any],
        channel: Channel,
        exc: Exception,
        detail: dict[str, Any] | None = None,
    ) -> ApplicationError:
        """Mark the attempt failed and audit it (committed), and return the non-retryable
        error that makes the workflow fall back to the next channel."""
        async with self.store.transaction() as session:
            row = await repo.get_delivery(session, attempt=attempt)
            if row is not None:
                await repo.set_delivery_status(
                    session, delivery=row, status=DeliveryStatus.FAILED, error=str(exc)
                )
            await repo.append_audit(
                session,
                kind=AuditKind.FAILED,
                **common,
                channel=channel,
                reason=str(exc),
                detail=detail or {},
                dedupe_key=f"{common['message_id']}:failed:{channel.value}",
            )
        return ApplicationError(str(exc), type=type(exc).__name__, non_retryable=True)

    @activity.defn(name="send_message")
    async def send_message(self, data: SendInput) -> SendResult:
        """Send one message on one channel, at most once per accepted provider receipt."""
        mid, channel = data.message_id, data.channel
        attempt = repo.attempt_id(mid, channel)
        common: dict[str, Any] = {
            "customer_external_id": data.customer_id,
            "message_id": mid,
            "workflow_id": data.workflow_id,
        }
        provider = self.providers[channel]
        info = activity.info()
        with structlog.contextvars.bound_contextvars(
            message_id=mid,
            workflow_id=data.workflow_id,
            channel=channel.value,
            activity_attempt=info.attempt,
        ):
            # 1. What do we already know? Consent still there? Render, and mark "sending".
            async with self.store.transaction() as session:
                delivery = await repo.get_delivery(session, attempt=attempt)
                if delivery is not None and delivery.status == DeliveryStatus.SENT.value:
                    log.info("already accepted by the provider; not sending again")
                    return SendResult(
                        status=DeliveryStatus.SENT,
                        channel=channel,
                        provider=delivery.provider,
                        provider_message_id=delivery.provider_message_id,
                        already_sent=True,
                    )
                if data.fallback_from is not None:
                    await repo.append_audit(
                        session,
                        kind=AuditKind.FELL_BACK,
                        **common,
                        channel=channel,
                        reason=data.fallback_reason,
                        detail={"from": data.fallback_from.value, "to": channel.value},
                        dedupe_key=f"{mid}:fell_back:{channel.value}",
                    )
                if delivery is None:
                    delivery = Delivery(
                        attempt_id=attempt,
                        message_id=mid,
                        workflow_id=data.workflow_id,
                        customer_external_id=data.customer_id,
                        channel=channel.value,
                        template=data.template,
                        template_version=data.template_version,
                        purpose=data.purpose.value,
                        status=DeliveryStatus.SENDING.value,
                        provider=provider.name,
                        tries=0,
                        journey=data.journey[:100],
                    )
                    session.add(delivery)
                    # An earlier channel of this message was attempted: it fell back.
                    await repo.mark_fell_back(session, message_id=mid, except_attempt=attempt)
                customer = await repo.require_customer(session, external_id=data.customer_id)
                if not delivery.segment:
                    delivery.segment = repo.segment_of(
                        customer, self.settings.report_segment_attribute
                    )
                decision = await self._consent(
                    session, customer, channel, data.purpose, data.category
                )
                if not decision.allowed:
                    await repo.set_delivery_status(
                        session,
                        delivery=delivery,
                        status=DeliveryStatus.SUPPRESSED,
                        error=decision.reason,
                    )
                    await repo.append_audit(
                        session,
                        kind=AuditKind.SUPPRESSED,
                        **common,
                        channel=channel,
                        reason=decision.reason,
                        detail={"purpose": data.purpose.value, "at": "send"},
                        dedupe_key=f"{mid}:suppressed:{channel.value}",
                    )
                    log.info("suppressed at send time", reason=decision.reason)
                    return SendResult(
                        status=DeliveryStatus.SUPPRESSED, channel=channel, reason=decision.reason
                    )
                capped = await self._cap(session, data, customer, delivery, common)
                if capped is not None:
                    return capped
                failure: RenderError | NotFound | PermanentChannelError | None = None
                try:
                    _, definition = await repo.get_template_version(
                        session, name=data.template, version=data.template_version
                    )
                    rendered = render_for(
                        definition, customer, channel, render_variables(customer, data.context, mid)
                    )
                    outgoing = self._outgoing(data, customer, rendered)
                except (RenderError, NotFound, PermanentChannelError) as exc:
                    failure = exc
                else:
                    delivery.tries += 1
                    delivery.status = DeliveryStatus.SENDING.value
                    delivery.provider = provider.name
            if failure is not None:
                raise await self._record_failure(attempt, common, channel, failure) from failure

            # 2. Hand it to the provider.
            try:
                receipt = await _with_heartbeat(provider.send(outgoing))
            except PermanentChannelError as exc:
                log.warning(
                    "permanent send failure", provider=provider.name, error=str(exc), code=exc.code
                )
                detail = {"provider": provider.name, "code": exc.code}
                raise await self._record_failure(attempt, common, channel, exc, detail) from exc
            except RetryableChannelError as exc:
                async with self.store.transaction() as session:
                    row = await repo.get_delivery(session, attempt=attempt)
                    if row is not None:
                        row.error = str(exc)
                log.warning("send failed, will retry", provider=provider.name, error=str(exc))
                raise ApplicationError(str(exc), type="RetryableChannelError") from exc

            # 3. Record the acceptance: from here on, a retry never sends again.
            async with self.store.transaction() as session:
                row = await repo.get_delivery(session, attempt=attempt)
                assert row is not None
                await repo.set_delivery_status(
                    session,
                    delivery=row,
                    status=DeliveryStatus.SENT,
                    provider=receipt.provider,
                    provider_message_id=receipt.provider_message_id,
                )
                await repo.append_audit(
                    session,
                    kind=AuditKind.SENT,
                    **common,
                    channel=channel,
                    detail={
                        "provider": receipt.provider,
                        "provider_message_id": receipt.provider_message_id,
                        "template": data.template,
                        "version": data.template_version,
                    },
                    dedupe_key=f"{mid}:sent:{channel.value}",
                )
            log.info(
                "sent", provider=receipt.provider, provider_message_id=receipt.provider_message_id
            )
            await failpoint(self.settings.failpoints, "after_send_recorded")
            return SendResult(
                status=DeliveryStatus.SENT,
                channel=channel,
                provider=receipt.provider,
                provider_message_id=receipt.provider_message_id,
            )

    async def _cap(
        self,
        session: AsyncSession,
        data: SendInput,
        customer: Customer,
        delivery: Delivery,
        common: dict[str, Any],
    ) -> SendResult | None:
        """Hold the message back when a frequency cap of the customer's jurisdiction is
        full: suppress it, or defer it until the rolling window has room. Audited."""
        caps = self.compliance.rules_for(customer.attributes).caps_for(data.purpose, data.channel)
        if not caps:
            return None
        now = data.decided_at or utcnow()
        sent = await repo.cap_send_times(
            session,
            caps=caps,
            customer_external_id=customer.external_id,
            purpose=data.purpose,
            now=now,
            exclude_message_id=data.message_id,
        )
        verdict = decide_cap(caps, sent, now)
        if verdict.allowed:
            return None
        mid, channel = data.message_id, data.channel
        reason = f"frequency_cap: {verdict.cap}"
        if verdict.action is CapAction.DEFER and verdict.retry_at is not None:
            await repo.set_delivery_status(
                session, delivery=delivery, status=DeliveryStatus.DEFERRED, error=reason
            )
            await repo.append_audit(
                session,
                kind=AuditKind.DEFERRED,
                **common,
                channel=channel,
                reason=reason,
                detail={"until": verdict.retry_at.isoformat(), "cap": verdict.cap},
                dedupe_key=f"{mid}:deferred:{channel.value}:{verdict.retry_at.isoformat()}",
            )
            log.info("deferred by a frequency cap", cap=verdict.cap, until=verdict.retry_at)
            return SendResult(
                status=DeliveryStatus.DEFERRED,
                channel=channel,
                reason=reason,
                retry_at=verdict.retry_at,
            )
        await repo.set_delivery_status(
            session, delivery=delivery, status=DeliveryStatus.SUPPRESSED, error=reason
        )
        await repo.append_audit(
            session,
            kind=AuditKind.SUPPRESSED,
            **common,
            channel=channel,
            reason=reason,
            detail={"purpose": data.purpose.value, "cap": verdict.cap, "at": "send"},
            dedupe_key=f"{mid}:suppressed:{channel.value}",
        )
        log.info("suppressed by a frequency cap", cap=verdict.cap)
        return SendResult(status=DeliveryStatus.SUPPRESSED, channel=channel, reason=reason)

    @activity.defn(name="defer_message")
    async def defer_message(self, data: DeferralInput) -> None:
        """Audit that a message waits (quiet hours) until ``data.until``."""
        async with self.store.transaction() as session:
            await repo.append_audit(
                session,
                kind=AuditKind.DEFERRED,
                customer_external_id=data.customer_id,
                message_id=data.message_id,
                workflow_id=data.workflow_id,
                channel=data.channel,
                reason=data.reason,
                detail={"until": data.until.isoformat(), **data.detail},
                dedupe_key=f"{data.message_id}:deferred:{data.channel.value}:"
                f"{data.until.isoformat()}",
            )
        log.info(
            "message deferred",
            message_id=data.message_id,
            workflow_id=data.workflow_id,
            reason=data.reason,
            until=data.until.isoformat(),
        )

    @activity.defn(name="escalate_message")
    async def escalate_message(self, data: EscalationInput) -> str | None:
        """Audit a step down the acknowledgement ladder; with no next channel, open a task
        for a human agent and return its id."""
        task_id = None if data.to_channel is not None else f"{data.message_id}:agent"
        async with self.store.transaction() as session:
            if task_id is not None and await session.get(AgentTask, task_id) is None:
                session.add(
                    AgentTask(
                        id=task_id,
                        message_id=data.message_id,
                        customer_external_id=data.customer_id,
                        reason=data.reason,
                    )
                )
            await repo.append_audit(
                session,
                kind=AuditKind.ESCALATED if task_id is None else AuditKind.AGENT_TASK,
                customer_external_id=data.customer_id,
                message_id=data.message_id,
                workflow_id=data.workflow_id,
                channel=data.to_channel,
                reason=data.reason,
                detail={
                    "from": data.from_channel.value,
                    "to": data.to_channel.value if data.to_channel else "agent",
                    **({"task": task_id} if task_id else {}),
                },
                dedupe_key=f"{data.message_id}:escalated:{data.to_channel or 'agent'}",
            )
        log.info(
            "message escalated",
            message_id=data.message_id,
            to=data.to_channel.value if data.to_channel else "agent",
        )
        return task_id

    @activity.defn(name="record_outcome")
    async def record_outcome(self, data: RecordOutcomeInput) -> None:
        """The final word on a message in the audit trail."""
        outcome: DeliveryOutcome = data.outcome
        kind = {
            OutcomeStatus.DELIVERED: AuditKind.DELIVERED,
            OutcomeStatus.FAILED: AuditKind.UNDELIVERABLE,
            OutcomeStatus.SUPPRESSED: AuditKind.UNDELIVERABLE,
        }[outcome.status]
        async with self.store.transaction() as session:
            if outcome.acknowledged_by is not None and outcome.channel is not None:
                await repo.mark_acknowledged(
                    session,
                    attempt=repo.attempt_id(outcome.message_id, outcome.channel),
                    at=utcnow(),
                )
            await repo.append_audit(
                session,
                kind=kind,
                customer_external_id=outcome.customer_id,
                message_id=outcome.message_id,
                workflow_id=data.workflow_id,
                channel=outcome.channel,
                reason=outcome.reason,
                detail={
                    "status": outcome.status.value,
                    "attempts": [a.model_dump(mode="json") for a in outcome.attempts],
                },
                dedupe_key=f"{outcome.message_id}:outcome",
            )
        log.info(
            "message finished",
            message_id=outcome.message_id,
            status=outcome.status.value,
            reason=outcome.reason,
        )
