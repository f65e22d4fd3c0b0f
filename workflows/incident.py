"""IncidentWorkflow: one per alert key (id ``alert:<key>``), fed by the ``alert`` signal.

  watching: a critical alert (or any severity the rules name ``immediate``) confirms at
    once; a minor or major one must keep firing for ``sustain``. A recovery stops the
    clock; a new firing starts it again (a flap). Nothing firing for ``settle`` after a
    recovery ends the watch quietly: a flapping alert sends nothing.
  confirmed: the template mapped to the alert's type and the audience (the alert's
    ``affects`` segment, else the type's) are proposed to the incident managers through
    the approval gate, with the audience size and a preview. A recovery before anyone
    launches withdraws the proposal.
  launched: the crisis broadcast runs. A recovery proposes the resolution notice; a new
    firing before anyone decides withdraws that proposal, and the next recovery asks again.

Duplicate alerts for the key reach the same workflow: one incident. Every status change
is copied to the store (and audited) with the times from the first alert to the launch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from activities.incidents import IncidentActivities
    from clarion.incidents import (
        INCIDENT_LAUNCH,
        INCIDENT_RESOLUTION,
        Alert,
        DebounceRules,
        IncidentInput,
        IncidentState,
        IncidentStatus,
        LaunchInput,
        Proposal,
        ProposeInput,
        Resolved,
        ResolveInput,
    )
    from clarion.models import ApprovalGateInput, ApprovalOutcome
    from clarion.policy.alerts import AlertSeverity
    from workflows.approval import approval_gate
    from workflows.retries import STORE_RETRY

TIMEOUT = timedelta(seconds=30)
RANK = {AlertSeverity.MINOR: 1, AlertSeverity.MAJOR: 2, AlertSeverity.CRITICAL: 3}


@workflow.defn(name="Incident")
class IncidentWorkflow:
    def __init__(self) -> None:
        self.s: IncidentState | None = None
        self.rules: DebounceRules | None = None
        self.inbox: list[Alert] = []  # alerts that came before the state was made
        self.version = 0  # bumps whenever an alert changes firing or severity

    # ----------------------------------------------------------------- alerts

    @workflow.signal(name="alert")
    def alert(self, alert: Alert) -> None:
        if self.s is None:
            self.inbox.append(alert)
        else:
            self._take(self.s, alert)

    def _take(self, s: IncidentState, alert: Alert) -> None:
        s.alerts += 1
        if alert.severity is AlertSeverity.RESOLVED:
            if s.firing:
                s.firing = False
                s.recovered_at = workflow.now()
                self.version += 1
            return
        if not s.firing:
            s.firing = True
            s.flaps += 1
            s.firing_since = workflow.now()
            self.version += 1
        if RANK[alert.severity] > RANK.get(s.severity, 0):
            s.severity = alert.severity
            self.version += 1
        s.source = alert.source
        if alert.summary:
            s.summary = alert.summary
        if alert.affects:
            s.affects = alert.affects
        if alert.type:
            s.type = alert.type

    @workflow.query(name="state")
    def state(self) -> IncidentState:
        assert self.s is not None
        return self.s

    # ----------------------------------------------------------------- run

    @workflow.run
    async def run(self, inp: IncidentInput) -> IncidentState:
        if inp.carried is not None:
            self.s = inp.carried
        else:
            await workflow.wait_condition(lambda: bool(self.inbox))
            first = self.inbox[0]
            now = workflow.now()
            self.s = IncidentState(
                incident_id=f"inc-{now:%Y%m%d-%H%M%S}-{workflow.info().run_id[:6]}",
                key=inp.key,
                source=first.source,
                first_alert_at=first.at,
                firing=False,
                severity=AlertSeverity.MINOR,
            )
            self.s.flaps = -1  # the first firing is not a flap
            if first.severity is AlertSeverity.RESOLVED:
                self.s.flaps = 0
                self.s.recovered_at = now
            for alert in self.inbox:
                self._take(self.s, alert)
            self.inbox.clear()
            if self.s.firing_since is None:  # only recoveries: there is nothing to watch
                return await self._end(IncidentStatus.CLEARED, "recovered; nothing was firing")
        self.rules = await workflow.execute_activity_method(
            IncidentActivities.alert_rules, start_to_close_timeout=TIMEOUT, retry_policy=STORE_RETRY
        )
        s = self.s
        if s.status is IncidentStatus.LAUNCHED:
            return await self._after_launch()
        if s.status in (IncidentStatus.DECLINED, IncidentStatus.UNMAPPED):
            return await self._close_after_recovery()
        await self._save()
        if not await self._watch():
            return await self._end(
                IncidentStatus.CLEARED,
                f"recovered before it was confirmed ({s.flaps} flaps): nothing sent",
            )
        s.confirmed_at = workflow.now()
        proposal: Proposal = await workflow.execute_activity_method(
            IncidentActivities.propose_incident,
            ProposeInput(incident_id=s.incident_id, key=s.key, type=s.type, affects=s.affects),
            start_to_close_timeout=timedelta(minutes=2),
            retry_policy=STORE_RETRY,
        )
        if not proposal.ok:
            s.type = proposal.type or s.type
            await self._set(IncidentStatus.UNMAPPED, proposal.reason)
            return await self._close_after_recovery()
        s.type = proposal.type
        s.template = proposal.template
        s.resolution_template = proposal.resolution_template
        s.segment = proposal.segment
        s.audience_size = proposal.audience_size
        s.proposed_at = workflow.now()
        await self._set(IncidentStatus.PROPOSED, proposal.reason)
        outcome = await self._ask(
            request_id=f"incident:{s.incident_id}",
            category=INCIDENT_LAUNCH,
            template=proposal.template,
            version=proposal.template_version,
            rule=proposal.launch_rule,
            withdraw=lambda: not s.firing,
        )
        if outcome is None:
            return await self._end(
                IncidentStatus.WITHDRAWN, "recovered before launch: the proposal was withdrawn"
            )
        if not outcome.approved:
            await self._set(IncidentStatus.DECLINED, f"launch {outcome.status}: {outcome.reason}")
            return await self._close_after_recovery()
        s.approved_by = list(outcome.decided_by)
        s.broadcast_id = await workflow.execute_activity_method(
            IncidentActivities.launch_incident_broadcast,
            LaunchInput(
                incident_id=s.incident_id,
                title=s.summary or s.key,
                severity=s.severity,
                template=proposal.template,
                segment=proposal.segment,
                requested_by=(outcome.decided_by or ["system"])[0],
            ),
            start_to_close_timeout=TIMEOUT,
            retry_policy=STORE_RETRY,
        )
        s.launched_at = workflow.now()
        await self._set(IncidentStatus.LAUNCHED, outcome.reason)
        return await self._after_launch()

    async def _watch(self) -> bool:
        """True when the alert is confirmed; False when it recovered and stayed quiet."""
        assert self.s is not None and self.rules is not None
        s, rules = self.s, self.rules
        while True:
            if s.firing and s.severity in rules.immediate:
                return True
            now = workflow.now()
            if s.firing:
                assert s.firing_since is not None
                left = rules.sustain_s - _seconds(now, s.firing_since)
                if left <= 0:
                    return True
            else:
                assert s.recovered_at is not None
                left = rules.settle_s - _seconds(now, s.recovered_at)
                if left <= 0:
                    return False
            seen = self.version
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda seen=seen: self.version != seen,  # type: ignore[misc]
                    timeout=timedelta(seconds=left),
                )

    async def _ask(
        self,
        *,
        request_id: str,
        category: str,
        template: str,
        version: int,
        rule: dict[str, object],
        withdraw: Callable[[], bool],
    ) -> ApprovalOutcome | None:
        """A decision through the approval gate; None when ``withdraw`` came true first."""
        s = self.s
        assert s is not None
        gate = asyncio.ensure_future(
            approval_gate(
                ApprovalGateInput(
                    request_id=request_id,
                    subject_kind="incident",
                    subject_id=s.incident_id,
                    category=category,
                    template=template,
                    template_version=version,
                    requested_by=f"alert:{s.source}",
                    rule=rule,
                    context={
                        "proposal": {
                            "incident": s.incident_id,
                            "alert": s.key,
                            "severity": s.severity.value,
                            "summary": s.summary,
                            "segment": s.segment,
                            "audience_size": s.audience_size,
                        }
                    },
                )
            )
        )
        await workflow.wait_condition(lambda: gate.done() or withdraw())
        if gate.done():
            return gate.result()
        gate.cancel()  # the gate closes its request as cancelled: nobody is asked any more
        with contextlib.suppress(asyncio.CancelledError, ChildWorkflowError):
            await gate
        return None

    async def _after_launch(self) -> IncidentState:
        """While the broadcast runs: each recovery proposes the resolution notice."""
        s = self.s
        assert s is not None and s.broadcast_id is not None
        while True:
            await self._until(lambda: not s.firing)
            if not s.resolution_template:
                return await self._end(
                    IncidentStatus.CLOSED,
                    "recovered; no resolution template is mapped: resolve the broadcast by hand",
                )
            await self._set(IncidentStatus.RESOLUTION_PROPOSED, "recovered")
            outcome = await self._ask(
                request_id=f"incident:{s.incident_id}:resolution:{s.changes}",
                category=INCIDENT_RESOLUTION,
                template=s.resolution_template,
                version=0,
                rule=await self._resolution_rule(),
                withdraw=lambda: s.firing,
            )
            if outcome is None:
                await self._set(IncidentStatus.LAUNCHED, "firing again: resolution withdrawn")
                continue
            if not outcome.approved:
                await self._set(
                    IncidentStatus.LAUNCHED, f"resolution {outcome.status}: {outcome.reason}"
                )
                await self._until(lambda: s.firing)  # ask again after the next recovery
                continue
            resolved: Resolved = await workflow.execute_activity_method(
                IncidentActivities.resolve_incident_broadcast,
                ResolveInput(broadcast_id=s.broadcast_id, template=s.resolution_template),
                start_to_close_timeout=TIMEOUT,
                retry_policy=STORE_RETRY,
            )
            s.approved_by = [*s.approved_by, *outcome.decided_by]
            why = "resolution notice sent" if resolved.ok else f"not sent: {resolved.note}"
            return await self._end(IncidentStatus.RESOLVED, why)

    async def _resolution_rule(self) -> dict[str, object]:
        s = self.s
        assert s is not None
        proposal: Proposal = await workflow.execute_activity_method(
            IncidentActivities.propose_incident,
            ProposeInput(incident_id=s.incident_id, key=s.key, type=s.type, affects=s.affects),
            start_to_close_timeout=timedelta(minutes=2),
            retry_policy=STORE_RETRY,
        )
        return proposal.resolution_rule or proposal.launch_rule

    async def _close_after_recovery(self) -> IncidentState:
        s = self.s
        assert s is not None
        await self._until(lambda: not s.firing)
        return await self._end(IncidentStatus.CLOSED, f"recovered after {s.status.value}")

    async def _until(self, condition: Callable[[], bool]) -> None:
        """Wait for ``condition``; a long wait continues as new to keep history short."""
        await workflow.wait_condition(
            lambda: condition() or workflow.info().is_continue_as_new_suggested()
        )
        if condition():
            return
        await workflow.wait_condition(workflow.all_handlers_finished)
        assert self.s is not None
        workflow.continue_as_new(IncidentInput(key=self.s.key, carried=self.s))

    # ----------------------------------------------------------------- store

    async def _save(self) -> None:
        assert self.s is not None
        await workflow.execute_activity_method(
            IncidentActivities.save_incident,
            self.s,
            start_to_close_timeout=TIMEOUT,
            retry_policy=STORE_RETRY,
        )

    async def _set(self, status: IncidentStatus, reason: str = "") -> None:
        assert self.s is not None
        self.s.status = status
        self.s.reason = reason
        self.s.changes += 1
        await self._save()

    async def _end(self, status: IncidentStatus, reason: str) -> IncidentState:
        assert self.s is not None
        self.s.ended_at = workflow.now()
        await self._set(status, reason)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.s


def _seconds(later: datetime, earlier: datetime) -> float:
    return (later - earlier).total_seconds()
