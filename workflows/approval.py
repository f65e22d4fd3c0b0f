"""ApprovalGate: one request for a human decision, with roles, four-eyes and escalation.

Any workflow that needs a decision runs it as a child (id ``approval:<request id>``)
and waits for its ApprovalOutcome:

  open (store row with a rendered preview, audit) -> notify the first level's approvers
  -> wait for decisions; after each level's time with no final decision, escalate to the
     next level (its roles may decide from then on, and are notified)
  -> when the ladder runs out: the rule's final outcome (expire or reject)

Decisions arrive as the Update ``decide``: its validator refuses an unknown operator, one
without a role that may decide at the current level, the requester (four-eyes), an
operator who already approved, a rejection without a reason, and any decision once the
request is decided. The signal ``decide`` takes the same decision from systems that can
only signal; a refused signal is recorded in the audit trail and changes nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import is_cancelled_exception
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.approvals import ApprovalActivities
    from clarion.models import (
        ApprovalCloseInput,
        ApprovalDecisionRecordInput,
        ApprovalGateInput,
        ApprovalLevelInput,
        ApprovalOpened,
        ApprovalOutcome,
        ApprovalState,
        OperatorDecision,
    )
    from clarion.policy.approval import ApprovalRule, DecisionFacts, FinalOutcome, refusal
    from workflows.retries import STORE_RETRY

STORE_TIMEOUT = timedelta(seconds=30)
NOT_OPEN_YET = "the request is not open yet; try again in a moment"


def approval_workflow_id(request_id: str) -> str:
    return f"approval:{request_id}"


def approval_gate(inp: ApprovalGateInput) -> Awaitable[ApprovalOutcome]:
    """Run the gate for ``inp`` as a child of the calling workflow (id
    ``approval:<request id>``), cancelled when its parent ends; await its outcome."""
    return workflow.execute_child_workflow(
        ApprovalGateWorkflow.run,
        inp,
        id=approval_workflow_id(inp.request_id),
        parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
    )


@workflow.defn(name="ApprovalGate")
class ApprovalGateWorkflow:
    def __init__(self) -> None:
        self.inp: ApprovalGateInput | None = None
        self.rule: ApprovalRule | None = None
        self.roster: dict[str, list[str]] = {}
        self.level = 0
        self.status = "opening"
        self.approved_by: list[str] = []
        self.outcome: ApprovalOutcome | None = None

    # ----------------------------------------------------------------- decisions

    def _refusal(self, decision: OperatorDecision) -> str | None:
        if self.inp is None or self.rule is None or self.status == "opening":
            return NOT_OPEN_YET
        facts = DecisionFacts(
            state="pending" if self.outcome is None and self.status == "pending" else self.status,
            requested_by=self.inp.requested_by,
            level=self.level,
            approvals_needed=self.rule.approvals,
            approved_by=self.approved_by,
        )
        return refusal(
            facts,
            self.rule,
            operator=decision.operator,
            operator_roles=self.roster.get(decision.operator),
            approved=decision.approved,
            reason=decision.reason,
        )

    def _apply(self, decision: OperatorDecision) -> str:
        """Count a decision (already checked); settles the outcome when it is final."""
        assert self.inp is not None and self.rule is not None
        if not decision.approved:
            self.outcome = ApprovalOutcome(
                request_id=self.inp.request_id,
                status="rejected",
                reason=f"rejected by {decision.operator}: {decision.reason}",
                decided_by=[*self.approved_by, decision.operator],
            )
            self.status = "rejected"
            return "rejected"
        self.approved_by.append(decision.operator)
        if len(self.approved_by) >= self.rule.approvals:
            self.outcome = ApprovalOutcome(
                request_id=self.inp.request_id,
                status="approved",
                reason=f"approved by {', '.join(self.approved_by)}",
                decided_by=list(self.approved_by),
            )
            self.status = "approved"
            return "approved"
        return f"approval {len(self.approved_by)} of {self.rule.approvals} recorded"

    async def _record(self, decision: OperatorDecision, *, counted: bool, why: str = "") -> None:
        assert self.inp is not None
        await workflow.execute_activity_method(
            ApprovalActivities.record_approval_decision,
            ApprovalDecisionRecordInput(
                request_id=self.inp.request_id,
                workflow_id=workflow.info().workflow_id,
                decision=decision,
                counted=counted,
                refusal=why,
            ),
            start_to_close_timeout=STORE_TIMEOUT,
            retry_policy=STORE_RETRY,
        )

    @workflow.update(name="decide")
    async def decide(self, decision: OperatorDecision) -> str:
        result = self._apply(decision)  # before any await: a second decision sees it
        await self._record(decision, counted=True)
        return result

    @decide.validator
    def _check_decide(self, decision: OperatorDecision) -> None:
        why = self._refusal(decision)
        if why is not None:
            raise ValueError(why)

    @workflow.signal(name="decide")
    async def decide_signal(self, decision: OperatorDecision) -> None:
        await workflow.wait_condition(lambda: self.status != "opening")
        why = self._refusal(decision)
        if why is not None:
            await self._record(decision, counted=False, why=why)
            return
        self._apply(decision)
        await self._record(decision, counted=True)

    @workflow.signal(name="refresh_roster")
    async def refresh_roster(self) -> None:
        """Operators were added or changed: read who may decide again."""
        loaded: ApprovalOpened = await workflow.execute_activity_method(
            ApprovalActivities.load_roster,
            start_to_close_timeout=STORE_TIMEOUT,
            retry_policy=STORE_RETRY,
        )
        self.roster = loaded.roster

    @workflow.query(name="state")
    def state(self) -> ApprovalState:
        assert self.inp is not None
        return ApprovalState(
            request_id=self.inp.request_id,
            status=self.status,
            level=self.level,
            approvals_needed=self.rule.approvals if self.rule else 1,
            approved_by=list(self.approved_by),
            requested_by=self.inp.requested_by,
        )

    # ----------------------------------------------------------------- run

    @workflow.run
    async def run(self, inp: ApprovalGateInput) -> ApprovalOutcome:
        self.inp = inp
        self.rule = rule = ApprovalRule.model_validate(inp.rule)
        wf_id = workflow.info().workflow_id
        opened: ApprovalOpened = await workflow.execute_activity_method(
            ApprovalActivities.open_approval,
            inp,
            start_to_close_timeout=STORE_TIMEOUT,
            retry_policy=STORE_RETRY,
        )
        self.roster = opened.roster
        self.status = "pending"
        try:
            await self._ladder(inp, rule, wf_id)
        except BaseException as exc:
            if not is_cancelled_exception(exc):
                raise
            # Whatever waited for the decision has ended (a journey exited, a broadcast
            # was cancelled): close the request so nobody is asked any more.
            self.status = "cancelled"
            self.outcome = ApprovalOutcome(
                request_id=inp.request_id, status="cancelled", reason="no longer needed"
            )
            await self._close(inp, wf_id)
            raise
        if self.outcome is None:
            final = "expired" if rule.final is FinalOutcome.EXPIRE else "rejected"
            self.status = final
            self.outcome = ApprovalOutcome(
                request_id=inp.request_id,
                status=final,
                reason=f"nobody decided within the escalation ladder ({len(rule.ladder)} levels)",
                decided_by=[],
            )
        await workflow.wait_condition(workflow.all_handlers_finished)
        await self._close(inp, wf_id)
        return self.outcome

    async def _close(self, inp: ApprovalGateInput, wf_id: str) -> None:
        assert self.outcome is not None
        await workflow.execute_activity_method(
            ApprovalActivities.close_approval,
            ApprovalCloseInput(
                request_id=inp.request_id,
                workflow_id=wf_id,
                status=self.outcome.status,
                reason=self.outcome.reason,
                decided_by=self.outcome.decided_by,
            ),
            start_to_close_timeout=STORE_TIMEOUT,
            retry_policy=STORE_RETRY,
        )

    async def _ladder(self, inp: ApprovalGateInput, rule: ApprovalRule, wf_id: str) -> None:
        """Ask each level in turn until a decision settles the request or the ladder ends."""
        for level, step in enumerate(rule.ladder):
            self.level = level
            asked: ApprovalOpened = await workflow.execute_activity_method(
                ApprovalActivities.ask_approvers,
                ApprovalLevelInput(
                    request_id=inp.request_id,
                    workflow_id=wf_id,
                    level=level,
                    roles=sorted(r.value for r in rule.roles_at(level)),
                    notify=[r.value for r in step.roles],
                    category=inp.category,
                ),
                start_to_close_timeout=timedelta(minutes=2),
                retry_policy=STORE_RETRY,
            )
            self.roster = asked.roster  # operators added meanwhile may decide too
            try:
                await workflow.wait_condition(
                    lambda: self.outcome is not None, timeout=timedelta(seconds=step.after_seconds)
                )
                break
            except TimeoutError:
                continue
