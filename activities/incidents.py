"""Side effects of the IncidentWorkflow: the store copy of an incident, the proposal
(template, audience size), and launching or resolving its crisis broadcast."""

from __future__ import annotations

import contextlib

from temporalio import activity
from temporalio.client import WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from clarion.config import Settings
from clarion.crisis.models import Audience, BroadcastInput, FollowUp, Incident, Severity
from clarion.crisis.tiers import load_tiers
from clarion.errors import NotFound
from clarion.expressions import ExpressionError
from clarion.incidents import (
    INCIDENT_LAUNCH,
    INCIDENT_RESOLUTION,
    DebounceRules,
    IncidentState,
    LaunchInput,
    Proposal,
    ProposeInput,
    Resolved,
    ResolveInput,
)
from clarion.logging import get_logger
from clarion.models import AuditKind
from clarion.policy.alerts import AlertRules, AlertSeverity, load_rules
from clarion.policy.approval import DEFAULT_RULES, ApprovalPolicy, load_policy
from clarion.store import Store, repo
from clarion.store import incidents as incidents_repo
from clarion.store.segments import SegmentError, count_segment

log = get_logger(__name__)

CRISIS_CATEGORY = "crisis"
SEVERITY = {
    AlertSeverity.CRITICAL: Severity.CRITICAL,
    AlertSeverity.MAJOR: Severity.MAJOR,
    AlertSeverity.MINOR: Severity.MINOR,
    AlertSeverity.RESOLVED: Severity.MINOR,
}


def broadcast_id_for(incident_id: str) -> str:
    return incident_id


class IncidentActivities:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        rules: AlertRules | None = None,
        policy: ApprovalPolicy | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.rules = rules if rules is not None else load_rules(settings.alerts_file)
        self.policy = policy if policy is not None else load_policy(settings.approval_policy_file)

    @activity.defn(name="alert_rules")
    async def alert_rules(self) -> DebounceRules:
        debounce = self.rules.debounce
        return DebounceRules(
            sustain_s=debounce.sustain_s, settle_s=debounce.settle_s, immediate=debounce.immediate
        )

    @activity.defn(name="save_incident")
    async def save_incident(self, state: IncidentState) -> None:
        async with self.store.transaction() as session:
            changed = await incidents_repo.save_incident(session, state)
            if changed:
                await repo.append_audit(
                    session,
                    kind=AuditKind.INCIDENT,
                    workflow_id=activity.info().workflow_id,
                    actor=(state.approved_by or [f"alert:{state.source}"])[-1],
                    reason=state.reason or state.status.value,
                    detail={
                        "incident": state.incident_id,
                        "key": state.key,
                        "status": state.status.value,
                        "alerts": state.alerts,
                        "flaps": state.flaps,
                        "broadcast": state.broadcast_id,
                    },
                    dedupe_key=f"incident:{state.incident_id}:{state.changes}",
                )
        if changed:
            log.info(
                "incident status",
                incident_id=state.incident_id,
                status=state.status.value,
                workflow_id=activity.info().workflow_id,
            )

    def _rule(self, category: str) -> dict[str, object]:
        rule = self.policy.rule_for(category) or DEFAULT_RULES[category]
        return rule.model_dump(mode="json")

    @activity.defn(name="propose_incident")
    async def propose_incident(self, inp: ProposeInput) -> Proposal:
        """The template mapped to the alert's type and the audience it would reach."""
        kind = self.rules.type_for(inp.key, inp.type)
        if kind is None:
            wanted = f"type {inp.type!r}" if inp.type else f"key {inp.key!r}"
            return Proposal(ok=False, reason=f"no alert type in the rules matches {wanted}")
        segment = inp.affects or kind.audience
        if not segment:
            return Proposal(
                ok=False,
                type=kind.name,
                reason=f"the alert names no audience (--affects) and type {kind.name!r} has none",
            )
        async with self.store.session() as session:
            try:
                version, _ = await repo.get_template_version(session, name=kind.template)
            except NotFound as exc:
                return Proposal(ok=False, type=kind.name, reason=str(exc))
            try:
                size = await count_segment(session, segment)
            except (ExpressionError, SegmentError) as exc:
                return Proposal(ok=False, type=kind.name, reason=f"audience {segment!r}: {exc}")
        note = ""
        if not (version.category == CRISIS_CATEGORY and version.status == "approved"):
            note = (
                f"template {kind.template!r} is not a pre-approved crisis template: "
                "the broadcast will ask for its own approval"
            )
        return Proposal(
            ok=True,
            reason=note,
            type=kind.name,
            template=kind.template,
            template_version=version.version,
            resolution_template=kind.resolution_template,
            segment=segment,
            audience_size=size,
            launch_rule=self._rule(INCIDENT_LAUNCH),
            resolution_rule=self._rule(INCIDENT_RESOLUTION),
        )

    @activity.defn(name="launch_incident_broadcast")
    async def launch_incident_broadcast(self, inp: LaunchInput) -> str:
        """Start the incident's crisis broadcast (once: a retry finds it started)."""
        broadcast_id = broadcast_id_for(inp.incident_id)
        request = BroadcastInput(
            broadcast_id=broadcast_id,
            incident=Incident(
                id=inp.incident_id, title=inp.title[:300], severity=SEVERITY[inp.severity]
            ),
            template=inp.template,
            audience=Audience(segment=inp.segment),
            tiers=load_tiers(self.settings.crisis_tiers_file),
            requested_by=inp.requested_by,
        )
        # A retry finds it started (running: used as is; closed: left alone).
        with contextlib.suppress(WorkflowAlreadyStartedError):
            await activity.client().start_workflow(
                "CrisisBroadcast",
                request,
                id=f"crisis:{broadcast_id}",
                task_queue=activity.info().task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            )
        log.info(
            "incident broadcast launched",
            incident_id=inp.incident_id,
            broadcast_id=broadcast_id,
            workflow_id=activity.info().workflow_id,
        )
        return broadcast_id

    @activity.defn(name="resolve_incident_broadcast")
    async def resolve_incident_broadcast(self, inp: ResolveInput) -> Resolved:
        """Send the resolution notice through the broadcast (its follow-up update)."""
        handle = activity.client().get_workflow_handle(f"crisis:{inp.broadcast_id}")
        try:
            gen = await handle.execute_update(
                "follow_up", FollowUp(template=inp.template, kind="resolution"), result_type=int
            )
        except WorkflowUpdateFailedError as exc:
            # Resolved or cancelled by hand meanwhile: nothing more to send.
            why = str(getattr(exc.cause, "message", exc.cause))
            return Resolved(ok=False, note=why)
        except RPCError as exc:
            if exc.status not in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
                raise
            return Resolved(ok=False, note=f"the broadcast has ended ({exc.message})")
        return Resolved(ok=True, gen=gen)
