"""Activities of the JourneyWorkflow (run as local activities: small, quick store work)."""

from __future__ import annotations

from typing import Any

import structlog
from temporalio import activity

from clarion.errors import NotFound
from clarion.expressions import evaluate, parse
from clarion.journeys.models import (
    BranchInput,
    FinishJourneyInput,
    JourneyApprovalRuleInput,
    JourneyEvent,
    LoadedJourney,
    LoadJourneyInput,
    RecordStepsInput,
    StepRecord,
)
from clarion.logging import get_logger
from clarion.policy.approval import ApprovalPolicy, ApprovalRule, EscalationLevel, Role
from clarion.store import Store, repo
from clarion.store import journeys as journey_repo
from clarion.store.tables import Customer

log = get_logger(__name__)


def condition_env(customer: Customer, event: JourneyEvent | None) -> dict[str, Any]:
    """What a branch condition sees: fields and attributes by bare name (fields win),
    ``customer.*``, ``attributes.*`` and ``event.*``."""
    attributes = dict(customer.attributes or {})
    fields = {
        "id": customer.external_id,
        "name": customer.name,
        "locale": customer.locale,
        "timezone": customer.timezone,
    }
    event_view: dict[str, Any] = {}
    if event is not None:
        event_view = {**event.data, "name": event.name, "data": dict(event.data)}
    return {
        **attributes,
        **fields,  # fields win over attributes of the same name
        "attributes": attributes,
        "customer": {**attributes, **fields, "attributes": attributes},
        "event": event_view,
    }


class JourneyActivities:
    def __init__(self, store: Store, policy: ApprovalPolicy | None = None) -> None:
        self.store = store
        self.policy = policy or ApprovalPolicy()

    @activity.defn(name="journey_approval_rule")
    async def approval_rule(self, data: JourneyApprovalRuleInput) -> dict[str, Any]:
        """The rule for a journey's approval step: the policy's for its category, else
        approvers for the step's timeout, then expiry (the step's on_timeout)."""
        rule = self.policy.rule_for(data.category) or ApprovalRule(
            category=data.category,
            ladder=[EscalationLevel(roles=[Role.APPROVER], after=data.timeout)],
        )
        return rule.model_dump(mode="json")

    @activity.defn(name="load_journey")
    async def load_journey(self, data: LoadJourneyInput) -> LoadedJourney:
        """Pin the journey version, read the customer's time zone, open the run record."""
        info = activity.info()
        with structlog.contextvars.bound_contextvars(
            workflow_id=data.workflow_id, journey=data.journey
        ):
            async with self.store.transaction() as session:
                customer = await repo.get_customer(session, external_id=data.customer_id)
                if customer is None:
                    log.warning("journey for an unknown customer", customer_id=data.customer_id)
                    return LoadedJourney(ok=False, error=f"unknown customer {data.customer_id!r}")
                try:
                    version, definition = await journey_repo.get_journey_version(
                        session, name=data.journey, version=data.version
                    )
                except NotFound as exc:
                    return LoadedJourney(ok=False, error=str(exc))
                run = await journey_repo.start_run(
                    session,
                    journey=data.journey,
                    version=version,
                    customer_external_id=data.customer_id,
                    workflow_id=data.workflow_id,
                    temporal_run_id=info.workflow_run_id or data.workflow_id,
                    started_at=data.started_at,
                )
                # The first step is entered now: record it in the same transaction.
                first = definition.steps[definition.start]
                await journey_repo.record_step(
                    session,
                    run_id=run.id,
                    seq=0,
                    record=StepRecord(
                        step=definition.start, kind=first.kind, entered_at=data.started_at
                    ),
                    current=definition.start,
                )
                return LoadedJourney(
                    ok=True,
                    version=version,
                    definition=definition,
                    timezone=customer.timezone or "UTC",
                    run_id=run.id,
                )

    @activity.defn(name="record_journey_steps")
    async def record_steps(self, data: RecordStepsInput) -> None:
        async with self.store.transaction() as session:
            for seq, record in data.records:
                await journey_repo.record_step(
                    session, run_id=data.run_id, seq=seq, record=record, current=data.current
                )

    @activity.defn(name="evaluate_branch")
    async def evaluate_branch(self, data: BranchInput) -> int:
        """The index of the first case whose condition holds (``else`` always does); -1: none."""
        async with self.store.session() as session:
            customer = await repo.require_customer(session, external_id=data.customer_id)
            env = condition_env(customer, data.event)
        for index, condition in enumerate(data.conditions):
            if condition is None or evaluate(parse(condition), env):
                return index
        return -1

    @activity.defn(name="finish_journey")
    async def finish_journey(self, data: FinishJourneyInput) -> None:
        async with self.store.transaction() as session:
            for seq, record in data.records:
                await journey_repo.record_step(
                    session, run_id=data.run_id, seq=seq, record=record, current=None
                )
            await journey_repo.finish_run(
                session,
                run_id=data.run_id,
                status=data.status,
                reason=data.reason,
                ended_at=data.ended_at,
            )
        log.info(
            "journey finished", run_id=data.run_id, status=data.status.value, reason=data.reason
        )
