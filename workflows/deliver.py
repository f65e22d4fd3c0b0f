"""DeliverMessage: one message to one customer, durable from request to provider receipt.

prepare (customer, pinned template version, consent and rendering per channel)
  -> for each allowed channel in the caller's order: send (retried with backoff
     while the failure is retryable) -> on a permanent failure, fall back to the next
  -> with ``acknowledge_within``: wait for an acknowledgement; none in time, or the
     provider reports the message undelivered (signal ``provider_failed``): next channel
  -> record the outcome
Every decision is written to the audit trail by the activities.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import TimeoutError as ActivityTimeout

with workflow.unsafe.imports_passed_through():
    from activities.deliver import PERMANENT_ERROR_TYPES, DeliveryActivities
    from clarion.models import (
        Acknowledgement,
        ApprovalGateInput,
        Channel,
        ChannelAttempt,
        ChannelPlan,
        DeferralInput,
        DeliverMessageInput,
        DeliveryOutcome,
        DeliveryStatus,
        EscalationInput,
        OutcomeStatus,
        PreparedDelivery,
        PrepareDeliveryInput,
        ProviderFailure,
        RecordOutcomeInput,
        SendInput,
        SendResult,
    )
    from clarion.policy.compliance import QuietWindow, next_allowed
    from clarion.policy.timing import parse_duration
    from workflows.approval import approval_gate
    from workflows.retries import STORE_RETRY

SEND_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=2),
    non_retryable_error_types=PERMANENT_ERROR_TYPES,
)
# How long one channel may keep failing with retryable errors before we fall back.
SEND_DEADLINE = timedelta(hours=6)
SEND_ATTEMPT_TIMEOUT = timedelta(seconds=60)
SEND_HEARTBEAT_TIMEOUT = timedelta(seconds=10)
# Histories recorded before the provider_failed signal ignore it while they wait.
PROVIDER_FAILURES_PATCH = "provider-failed-falls-back"


def _failure_reason(err: ActivityError) -> str:
    cause = err.cause
    if isinstance(cause, ApplicationError):
        return f"{cause.type}: {cause.message}" if cause.type else cause.message
    if isinstance(cause, ActivityTimeout):
        return f"gave up after retrying: {cause.message}"
    return str(cause or err)


@workflow.defn(name="DeliverMessage")
class DeliverMessageWorkflow:
    def __init__(self) -> None:
        self._stage = "starting"
        self._attempts: list[ChannelAttempt] = []
        self._outcome: DeliveryOutcome | None = None
        self._ack: Acknowledgement | None = None
        self._escalated_to: list[Channel] = []
        self._agent_task: str | None = None
        self._provider_failures: list[ProviderFailure] = []

    @workflow.signal(name="acknowledge")
    def acknowledge(self, ack: Acknowledgement) -> None:
        if self._ack is None:
            self._ack = ack

    @workflow.signal(name="provider_failed")
    def provider_failed(self, failure: ProviderFailure) -> None:
        """The provider reported a sent message undelivered (a status callback)."""
        self._provider_failures.append(failure)

    @workflow.query(name="outcome")
    def outcome(self) -> DeliveryOutcome | None:
        return self._outcome

    @workflow.query(name="stage")
    def stage(self) -> str:
        return self._stage

    @workflow.run
    async def run(self, req: DeliverMessageInput) -> DeliveryOutcome:
        wf_id = workflow.info().workflow_id
        self._stage = "preparing"
        prepared: PreparedDelivery = await workflow.execute_activity_method(
            DeliveryActivities.prepare_delivery,
            PrepareDeliveryInput(message_id=req.message_id, workflow_id=wf_id, request=req),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=STORE_RETRY,
        )
        if not prepared.ok:
            return await self._finish(wf_id, req, OutcomeStatus.FAILED, reason=prepared.error)
        assert prepared.purpose is not None and prepared.template_version is not None

        if prepared.approval_rule is not None and any(p.allowed for p in prepared.plans):
            self._stage = "awaiting_approval"
            decision = await approval_gate(
                ApprovalGateInput(
                    request_id=req.message_id,
                    subject_kind="message",
                    subject_id=req.message_id,
                    category=prepared.category,
                    template=req.template,
                    template_version=prepared.template_version,
                    customer_id=req.customer_id,
                    context=req.context,
                    requested_by=req.requested_by,
                    rule=prepared.approval_rule,
                )
            )
            if not decision.approved:
                return await self._finish(
                    wf_id,
                    req,
                    OutcomeStatus.SUPPRESSED,
                    reason=f"approval {decision.status}: {decision.reason}",
                    template_version=prepared.template_version,
                )

        fallback_from: Channel | None = None
        fallback_reason = ""
        any_failed = False
        unacknowledged: SendResult | None = None  # delivered, then nobody acknowledged
        for plan in prepared.plans:
            if not plan.allowed:
                failed = plan.reason.startswith("template_error")
                any_failed = any_failed or failed
                self._attempts.append(
                    ChannelAttempt(
                        channel=plan.channel,
                        status=DeliveryStatus.FAILED if failed else DeliveryStatus.SUPPRESSED,
                        reason=plan.reason,
                    )
                )
                continue
            if unacknowledged is not None:
                await self._escalate(wf_id, req, unacknowledged.channel, plan.channel)
            try:
                while True:
                    await self._quiet_hours(wf_id, req, plan)
                    self._stage = f"sending:{plan.channel.value}"
                    result: SendResult = await workflow.execute_activity_method(
                        DeliveryActivities.send_message,
                        SendInput(
                            message_id=req.message_id,
                            workflow_id=wf_id,
                            customer_id=req.customer_id,
                            template=req.template,
                            template_version=prepared.template_version,
                            purpose=prepared.purpose,
                            channel=plan.channel,
                            context=req.context,
                            fallback_from=fallback_from,
                            fallback_reason=fallback_reason,
                            category=prepared.category,
                            decided_at=workflow.now(),
                            journey=req.journey,
                        ),
                        start_to_close_timeout=SEND_ATTEMPT_TIMEOUT,
                        heartbeat_timeout=SEND_HEARTBEAT_TIMEOUT,
                        schedule_to_close_timeout=SEND_DEADLINE,
                        retry_policy=SEND_RETRY,
                    )
                    if result.status is not DeliveryStatus.DEFERRED or result.retry_at is None:
                        break
                    # A frequency cap is full: the activity audited it; wait for room.
                    await self._sleep_until(result.retry_at, plan.channel, "frequency_cap")
            except ActivityError as err:
                reason = _failure_reason(err)
                any_failed = True
                self._attempts.append(
                    ChannelAttempt(
                        channel=plan.channel, status=DeliveryStatus.FAILED, reason=reason
                    )
                )
                fallback_from, fallback_reason = plan.channel, reason
                continue
            self._attempts.append(
                ChannelAttempt(channel=result.channel, status=result.status, reason=result.reason)
            )
            if result.status is DeliveryStatus.SENT:
                acked = (
                    True
                    if req.acknowledge_within is None
                    else await self._acknowledged(req.acknowledge_within, result)
                )
                if isinstance(acked, ProviderFailure):
                    reason = f"provider reported {acked.status}" + (
                        f" (error {acked.error_code})" if acked.error_code else ""
                    )
                    any_failed = True
                    self._attempts.append(
                        ChannelAttempt(
                            channel=result.channel, status=DeliveryStatus.FAILED, reason=reason
                        )
                    )
                    fallback_from, fallback_reason = result.channel, reason
                    continue
                if not acked:
                    unacknowledged = result  # down the ladder: the next allowed channel
                    fallback_from, fallback_reason = None, ""
                    continue
                return await self._finish(
                    wf_id,
                    req,
                    OutcomeStatus.DELIVERED,
                    channel=result.channel,
                    provider_message_id=result.provider_message_id,
                    template_version=prepared.template_version,
                )
        if unacknowledged is not None:
            # Delivered, yet nobody confirmed after every channel: a person takes over.
            self._agent_task = await self._escalate(wf_id, req, unacknowledged.channel, None)
            return await self._finish(
                wf_id,
                req,
                OutcomeStatus.DELIVERED,
                reason="not acknowledged on any channel; handed to an agent",
                channel=unacknowledged.channel,
                provider_message_id=unacknowledged.provider_message_id,
                template_version=prepared.template_version,
            )
        status = OutcomeStatus.FAILED if any_failed else OutcomeStatus.SUPPRESSED
        reason = "; ".join(f"{a.channel.value}: {a.reason}" for a in self._attempts)
        return await self._finish(
            wf_id, req, status, reason=reason, template_version=prepared.template_version
        )

    async def _quiet_hours(self, wf_id: str, req: DeliverMessageInput, plan: ChannelPlan) -> None:
        """Outside the customer's allowed hours: audit the deferral, then wait for the
        window on a durable timer (never drop the message)."""
        if not plan.quiet_allowed or not plan.quiet_zones:
            return
        window = QuietWindow(allowed=plan.quiet_allowed, zones=plan.quiet_zones)
        until = next_allowed(workflow.now(), window)
        if until <= workflow.now():
            return
        await workflow.execute_activity_method(
            DeliveryActivities.defer_message,
            DeferralInput(
                message_id=req.message_id,
                workflow_id=wf_id,
                customer_id=req.customer_id,
                channel=plan.channel,
                reason="quiet_hours",
                until=until,
                detail={"allowed": plan.quiet_allowed, "zones": plan.quiet_zones},
            ),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=STORE_RETRY,
        )
        await self._sleep_until(until, plan.channel, "quiet_hours")

    async def _sleep_until(self, until: datetime, channel: Channel, why: str) -> None:
        self._stage = f"deferred:{channel.value}:{why}:{until.isoformat()}"
        delay = until - workflow.now()
        if delay > timedelta(0):
            await workflow.sleep(delay)

    async def _acknowledged(self, within: str, sent: SendResult) -> bool | ProviderFailure:
        """Wait up to ``within`` for an acknowledgement of the message: True when it came,
        False when the time ran out, the provider's report when it said the message did
        not arrive (then there is no point waiting)."""
        self._stage = f"awaiting_acknowledgement:{sent.channel.value}"
        watch_failures = workflow.patched(PROVIDER_FAILURES_PATCH)

        def failure() -> ProviderFailure | None:
            if not watch_failures or not sent.provider_message_id:
                return None
            for reported in self._provider_failures:
                if reported.provider_message_id == sent.provider_message_id:
                    return reported
            return None

        try:
            await workflow.wait_condition(
                lambda: self._ack is not None or failure() is not None,
                timeout=parse_duration(within),
            )
        except TimeoutError:
            return False
        if self._ack is None:
            found = failure()
            if found is not None:
                return found
        return True

    async def _escalate(
        self, wf_id: str, req: DeliverMessageInput, from_channel: Channel, to: Channel | None
    ) -> str | None:
        """Record a step down the ladder; to None: open a task for a human agent."""
        if to is not None:
            self._escalated_to.append(to)
        reason = f"not acknowledged within {req.acknowledge_within} on {from_channel.value}"
        return await workflow.execute_activity_method(
            DeliveryActivities.escalate_message,
            EscalationInput(
                message_id=req.message_id,
                workflow_id=wf_id,
                customer_id=req.customer_id,
                from_channel=from_channel,
                to_channel=to,
                reason=reason,
            ),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=STORE_RETRY,
        )

    async def _finish(
        self,
        wf_id: str,
        req: DeliverMessageInput,
        status: OutcomeStatus,
        *,
        reason: str = "",
        channel: Channel | None = None,
        provider_message_id: str = "",
        template_version: int | None = None,
    ) -> DeliveryOutcome:
        self._outcome = DeliveryOutcome(
            message_id=req.message_id,
            customer_id=req.customer_id,
            status=status,
            channel=channel,
            provider_message_id=provider_message_id,
            template_version=template_version,
            reason=reason,
            attempts=list(self._attempts),
            acknowledged_by=self._ack.by if self._ack else None,
            escalated_to=list(self._escalated_to),
            agent_task=self._agent_task,
        )
        outcome = self._outcome
        self._stage = "recording"
        await workflow.execute_activity_method(
            DeliveryActivities.record_outcome,
            RecordOutcomeInput(workflow_id=wf_id, outcome=outcome),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=STORE_RETRY,
        )
        self._stage = "done"
        return outcome
