"""JourneyWorkflow: one customer's pass through one journey definition.

The definition is pinned when the journey starts (loaded once, carried in the state).
Events arrive by signal into an inbox: ``exit_on`` and ``goal`` events end the journey
wherever it stands (a running send finishes first); ``wait_for`` steps take the oldest
matching event. Sends are DeliverMessage child workflows, so they keep every guarantee
of a single message. The run continues as new before its history grows large.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from activities.journeys import JourneyActivities
    from clarion.journeys.definition import JourneyDefinition, Step
    from clarion.journeys.models import (
        ERASURE_EVENT,
        HISTORY_LIMIT,
        INBOX_LIMIT,
        SEEN_LIMIT,
        ApprovalDecision,
        BranchInput,
        FinishJourneyInput,
        JourneyApprovalRuleInput,
        JourneyEvent,
        JourneyInput,
        JourneyResult,
        JourneyRunStatus,
        JourneyState,
        JourneyStatus,
        LoadJourneyInput,
        RecordStepsInput,
        StepRecord,
    )
    from clarion.journeys.split import assign_variant
    from clarion.models import ApprovalGateInput, DeliverMessageInput
    from clarion.policy.timing import parse_duration, parse_time_of_day, wait_until
    from workflows.approval import approval_gate
    from workflows.deliver import DeliverMessageWorkflow

SA_JOURNEY = SearchAttributeKey.for_keyword("ClarionJourney")
SA_VERSION = SearchAttributeKey.for_int("ClarionJourneyVersion")
SA_STEP = SearchAttributeKey.for_keyword("ClarionJourneyStep")
SA_CUSTOMER = SearchAttributeKey.for_keyword("ClarionCustomer")

LOCAL_TIMEOUT = timedelta(seconds=30)
LOCAL_RETRY = RetryPolicy(maximum_interval=timedelta(seconds=30))
INTERRUPTED = "\x00interrupted"  # a step ended early because an exit or goal event arrived


def message_id_for(state: JourneyState, seq: int, step: str) -> str:
    return f"journey-{state.run_id}-{seq}-{step}"


@workflow.defn(name="Journey")
class JourneyWorkflow:
    def __init__(self) -> None:
        self.state: JourneyState | None = None
        self._early: list[JourneyEvent] = []
        self._approval: ApprovalDecision | None = None
        self._waiting_until: datetime | None = None
        self._waiting_for: str | None = None
        self._pending: list[tuple[int, StepRecord]] = []
        self._gate_request: str | None = None  # the approval request being waited for

    # -------------------------------------------------------------- messages

    @workflow.signal(name="event")
    def event(self, event: JourneyEvent) -> None:
        if self.state is None:
            self._early.append(event)
        else:
            self._receive(event)

    @workflow.update(name="decide")
    async def decide(self, decision: ApprovalDecision) -> str:
        self._approval = decision
        return "approved" if decision.approved else "rejected"

    @decide.validator
    def _check_decision(self, decision: ApprovalDecision) -> None:
        if self._gate_request is not None:
            raise ValueError(
                "this approval goes through the approval gate: "
                f"clarion approvals approve {self._gate_request!r}"
            )
        if self.state is None or self._waiting_for != "approval" or self._approval is not None:
            raise ValueError("no approval is pending in this journey")
        if not decision.approved and not decision.reason.strip():
            raise ValueError("a rejection needs a reason")

    @workflow.query(name="status")
    def status(self) -> JourneyStatus:
        info = workflow.info()
        s = self.state
        if s is None:
            return JourneyStatus(
                workflow_id=info.workflow_id,
                journey="",
                version=None,
                customer_id="",
                status=JourneyRunStatus.RUNNING,
            )
        step = s.definition.steps.get(s.current) if s.current else None
        return JourneyStatus(
            workflow_id=info.workflow_id,
            journey=s.journey,
            version=s.version,
            customer_id=s.customer_id,
            status=s.status,
            current_step=s.current,
            current_kind=step.kind if step else None,
            waiting_until=self._waiting_until,
            waiting_for=self._waiting_for,
            history=list(s.history),
            variants=dict(s.variants),
            inbox=[e.name for e in s.inbox],
            continued=s.continued,
            reason=s.reason,
        )

    # -------------------------------------------------------------- run

    @workflow.run
    async def run(self, inp: JourneyInput) -> JourneyResult:
        info = workflow.info()
        if inp.state is not None:
            self.state = inp.state
        else:
            started = workflow.now()
            loaded = await workflow.execute_local_activity_method(
                JourneyActivities.load_journey,
                LoadJourneyInput(
                    journey=inp.journey,
                    version=inp.version,
                    customer_id=inp.customer_id,
                    workflow_id=info.workflow_id,
                    started_at=started,
                ),
                start_to_close_timeout=LOCAL_TIMEOUT,
                retry_policy=LOCAL_RETRY,
            )
            if not loaded.ok or loaded.definition is None:
                return JourneyResult(
                    journey=inp.journey,
                    customer_id=inp.customer_id,
                    status=JourneyRunStatus.FAILED,
                    reason=loaded.error,
                )
            self.state = JourneyState(
                journey=inp.journey,
                version=loaded.version,
                customer_id=inp.customer_id,
                run_id=loaded.run_id,
                timezone=loaded.timezone,
                definition=loaded.definition,
                context=dict(inp.context),
                current=loaded.definition.start,
                last_event=inp.trigger,
                started_at=started,
            )
            if inp.trigger is not None:
                self.state.seen_event_ids.append(inp.trigger.event_id)
        for event in self._early:
            self._receive(event)
        self._early.clear()
        s = self.state
        fresh = inp.state is None  # the first step was recorded with the run
        workflow.upsert_search_attributes(
            [
                SA_JOURNEY.value_set(s.journey),
                SA_VERSION.value_set(s.version),
                SA_CUSTOMER.value_set(s.customer_id),
                *([SA_STEP.value_set(s.current)] if s.current else []),
            ]
        )

        while s.current is not None and s.status is JourneyRunStatus.RUNNING:
            if self._take_exit_event():
                if fresh and s.steps_taken == 0:
                    # Ended before its first step ran: close the record opened at start.
                    first = s.definition.steps[s.current]
                    left = StepRecord(
                        step=s.current,
                        kind=first.kind,
                        entered_at=s.started_at,
                        left_at=workflow.now(),
                        outcome="interrupted",
                    )
                    self._pending.append((0, left))
                    s.steps_taken = 1
                break
            if self._should_continue_as_new(inp):
                await self._flush()
                await workflow.wait_condition(workflow.all_handlers_finished)
                s.continued += 1
                workflow.continue_as_new(
                    JourneyInput(
                        journey=s.journey,
                        customer_id=s.customer_id,
                        state=s,
                        max_history_events=inp.max_history_events,
                    )
                )
            step_id = s.current
            step = s.definition.steps[step_id]
            seq = s.steps_taken
            s.steps_taken += 1
            if fresh and seq == 0:
                record = StepRecord(step=step_id, kind=step.kind, entered_at=s.started_at)
            else:
                record = StepRecord(step=step_id, kind=step.kind, entered_at=workflow.now())
                workflow.upsert_search_attributes([SA_STEP.value_set(step_id)])
                self._pending.append((seq, record))
                await self._flush(current=step_id)
            nxt, outcome, variant = await self._run_step(step_id, step, seq)
            self._waiting_until = None
            self._waiting_for = None
            done = record.model_copy(
                update={"left_at": workflow.now(), "outcome": outcome, "variant": variant}
            )
            s.history.append(done)
            del s.history[:-HISTORY_LIMIT]
            self._pending.append((seq, done))
            if nxt == INTERRUPTED:
                continue  # the loop takes the exit event
            s.current = nxt

        if s.status is JourneyRunStatus.RUNNING:
            s.status = JourneyRunStatus.COMPLETED
            s.reason = s.reason or "end of journey"
        s.current = None
        workflow.upsert_search_attributes([SA_STEP.value_set(f"({s.status.value})")])
        await self._flush()
        await workflow.execute_local_activity_method(
            JourneyActivities.finish_journey,
            FinishJourneyInput(
                run_id=s.run_id, status=s.status, reason=s.reason, ended_at=workflow.now()
            ),
            start_to_close_timeout=LOCAL_TIMEOUT,
            retry_policy=LOCAL_RETRY,
        )
        await workflow.wait_condition(workflow.all_handlers_finished)
        return JourneyResult(
            journey=s.journey,
            customer_id=s.customer_id,
            status=s.status,
            reason=s.reason,
            steps_taken=s.steps_taken,
        )

    # -------------------------------------------------------------- steps

    async def _run_step(
        self, step_id: str, step: Step, seq: int
    ) -> tuple[str | None, str, str | None]:
        """Returns (next step or None to finish, outcome, variant)."""
        s = self.state
        assert s is not None
        if step.send is not None:
            return step.next, await self._send(step_id, step, seq), None
        if step.wait is not None:
            at = parse_time_of_day(step.wait.until) if step.wait.until else None
            until = wait_until(workflow.now(), duration=step.wait.delta, at=at, tz=s.timezone)
            self._waiting_until = until
            if await self._sleep_until(until, lambda: False):
                return INTERRUPTED, "interrupted", None
            return step.next, f"waited until {until.isoformat()}", None
        if step.wait_for is not None:
            name = step.wait_for.event
            until = workflow.now() + parse_duration(step.wait_for.timeout)
            self._waiting_until, self._waiting_for = until, name
            if await self._sleep_until(until, lambda: self._find(name) is not None):
                event = self._find(name)
                if event is None or event.name in self._exit_names():
                    return (
                        INTERRUPTED,
                        "interrupted",
                        None,
                    )  # exit_on and goal events end the journey
                s.inbox.remove(event)
                s.last_event = event
                return step.on_event, f"event {name}", None
            return step.on_timeout, "timeout", None
        if step.branch is not None:
            index = await workflow.execute_local_activity_method(
                JourneyActivities.evaluate_branch,
                BranchInput(
                    customer_id=s.customer_id,
                    conditions=[case.condition for case in step.branch],
                    event=s.last_event,
                ),
                start_to_close_timeout=LOCAL_TIMEOUT,
                retry_policy=LOCAL_RETRY,
            )
            if index < 0:
                s.reason = f"no case of branch {step_id!r} matched"
                return None, "no case matched", None
            case = step.branch[index]
            return (
                case.next,
                ("else" if case.otherwise else f"case {index}: {case.condition}"),
                None,
            )
        if step.split is not None:
            variant = assign_variant(
                step.split, journey=s.journey, step=step_id, customer_id=s.customer_id
            )
            s.variants[step_id] = variant.variant
            return variant.next, f"variant {variant.variant}", variant.variant
        if step.approval is not None:
            approval = step.approval
            until = workflow.now() + parse_duration(approval.timeout)
            if workflow.patched("approval-gate"):
                return await self._approval_gate(step_id, step, seq, until)
            self._approval = None
            self._waiting_until, self._waiting_for = until, "approval"
            if await self._sleep_until(until, lambda: self._approval is not None):
                decision = self._approval
                if decision is None:
                    return INTERRUPTED, "interrupted", None
                if decision.approved:
                    return approval.on_approved, f"approved by {decision.operator}", None
                return (
                    approval.on_rejected,
                    f"rejected by {decision.operator}: {decision.reason}",
                    None,
                )
            return approval.on_timeout, "timeout", None
        assert step.exit is not None
        s.status = JourneyRunStatus.COMPLETED
        s.reason = step.exit.reason
        return None, f"exit: {step.exit.reason}", None

    async def _approval_gate(
        self, step_id: str, step: Step, seq: int, until: datetime
    ) -> tuple[str | None, str, str | None]:
        """The approval step through the approval gate (roles, four-eyes, escalation):
        approved -> on_approved, rejected -> on_rejected, expired or the step's timeout
        -> on_timeout; an exit event cancels the request."""
        s, approval = self.state, step.approval
        assert s is not None and approval is not None
        timeout = approval.timeout if isinstance(approval.timeout, str) else f"{approval.timeout}s"
        rule = await workflow.execute_local_activity_method(
            JourneyActivities.approval_rule,
            JourneyApprovalRuleInput(category=approval.category, timeout=timeout),
            start_to_close_timeout=LOCAL_TIMEOUT,
            retry_policy=LOCAL_RETRY,
        )
        wf_id = workflow.info().workflow_id
        request_id = f"{wf_id}/{seq}-{step_id}"
        gate = asyncio.ensure_future(
            approval_gate(
                ApprovalGateInput(
                    request_id=request_id,
                    subject_kind="journey",
                    subject_id=wf_id,
                    category=approval.category,
                    template=approval.template or "",
                    template_version=0,
                    customer_id=s.customer_id,
                    context=s.context,
                    requested_by=f"journey:{s.journey}",
                    rule=rule,
                )
            )
        )
        self._gate_request = request_id
        self._waiting_until, self._waiting_for = until, "approval"
        try:
            woken = await self._sleep_until(until, gate.done)
        finally:
            self._gate_request = None
        if not gate.done():
            gate.cancel()  # the step timed out, or an exit event came: nobody need decide
            with contextlib.suppress(asyncio.CancelledError, ChildWorkflowError):
                await gate
            return (
                (INTERRUPTED, "interrupted", None)
                if woken
                else (approval.on_timeout, "timeout", None)
            )
        outcome = gate.result()
        if outcome.status == "approved":
            return approval.on_approved, outcome.reason, None
        if outcome.status == "rejected":
            return approval.on_rejected, outcome.reason, None
        return approval.on_timeout, "timeout", None

    async def _send(self, step_id: str, step: Step, seq: int) -> str:
        s = self.state
        assert s is not None and step.send is not None
        message_id = message_id_for(s, seq, step_id)
        context = {**s.context, **step.send.context, "journey": s.journey}
        if s.last_event is not None:
            context["event"] = {"name": s.last_event.name, **s.last_event.data}
        try:
            outcome = await workflow.execute_child_workflow(
                DeliverMessageWorkflow.run,
                DeliverMessageInput(
                    message_id=message_id,
                    customer_id=s.customer_id,
                    template=step.send.template,
                    purpose=step.send.purpose,
                    channels=step.send.channels,
                    context=context,
                    journey=s.journey,
                ),
                id=f"message:{message_id}",
            )
        except ChildWorkflowError as err:
            return f"failed: {err.cause or err}"
        return f"{outcome.status.value} ({message_id})"

    # -------------------------------------------------------------- helpers

    def _receive(self, event: JourneyEvent) -> None:
        s = self.state
        assert s is not None
        if event.event_id in s.seen_event_ids:
            return
        s.seen_event_ids.append(event.event_id)
        del s.seen_event_ids[:-SEEN_LIMIT]
        s.inbox.append(event)
        del s.inbox[:-INBOX_LIMIT]

    def _find(self, name: str) -> JourneyEvent | None:
        assert self.state is not None
        return next((e for e in self.state.inbox if e.name == name), None)

    def _exit_names(self) -> set[str]:
        assert self.state is not None
        d: JourneyDefinition = self.state.definition
        return {*d.exit_on, *([d.goal] if d.goal else []), ERASURE_EVENT}

    def _exit_pending(self) -> bool:
        names = self._exit_names()
        return any(e.name in names for e in self.state.inbox) if self.state else False

    def _take_exit_event(self) -> bool:
        s = self.state
        assert s is not None
        names = self._exit_names()
        event = next((e for e in s.inbox if e.name in names), None)
        if event is None:
            return False
        s.inbox.remove(event)
        s.last_event = event
        converted = event.name == s.definition.goal
        s.status = JourneyRunStatus.CONVERTED if converted else JourneyRunStatus.EXITED
        s.reason = f"{'goal' if converted else 'exit_on'} event {event.name}"
        if event.name == ERASURE_EVENT:
            s.reason = "the customer's data was erased"
        return True

    async def _sleep_until(self, until: datetime, ready: Callable[[], bool]) -> bool:
        """Wait until ``until`` or until ``ready()`` or an exit event; True if woken early."""
        remaining = (until - workflow.now()).total_seconds()
        if remaining <= 0:
            return ready() or self._exit_pending()
        try:
            await workflow.wait_condition(
                lambda: ready() or self._exit_pending(), timeout=remaining
            )
        except TimeoutError:
            return False
        return True

    def _should_continue_as_new(self, inp: JourneyInput) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() >= inp.max_history_events
        )

    async def _flush(self, current: str | None = None) -> None:
        if not self._pending or self.state is None:
            return
        records, self._pending = self._pending, []
        await workflow.execute_local_activity_method(
            JourneyActivities.record_steps,
            RecordStepsInput(run_id=self.state.run_id, records=records, current=current),
            start_to_close_timeout=LOCAL_TIMEOUT,
            retry_policy=LOCAL_RETRY,
        )
