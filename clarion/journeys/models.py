"""Payloads of the JourneyWorkflow: input, state carried across continue-as-new, events,
status for queries. Ids only: customer data is read by activities when needed."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from clarion.journeys.definition import JourneyDefinition

INBOX_LIMIT = 200  # events waiting to be consumed by a step
SEEN_LIMIT = 500  # event ids remembered to drop duplicates
HISTORY_LIMIT = 100  # step records kept in the workflow (the store keeps all)


def journey_workflow_id(journey: str, customer_id: str) -> str:
    return f"journey:{journey}:{customer_id}"


class _Payload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class JourneyRunStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"  # reached an exit step or a step without next
    EXITED = "exited"  # an exit_on event ended it
    CONVERTED = "converted"  # the goal event arrived
    FAILED = "failed"  # could not start (unknown customer or journey)


class JourneyEvent(_Payload):
    event_id: str = Field(min_length=1, max_length=200)
    name: str = Field(min_length=1, max_length=100)
    data: dict[str, Any] = Field(default_factory=dict)
    at: datetime | None = None


class StepRecord(_Payload):
    step: str
    kind: str
    entered_at: datetime
    left_at: datetime | None = None
    outcome: str = ""
    variant: str | None = None


class JourneyState(BaseModel):
    """Everything the workflow needs to go on; carried into a continued run."""

    model_config = ConfigDict(extra="forbid")

    journey: str
    version: int
    customer_id: str
    run_id: int  # the journey_runs row in the store
    timezone: str
    definition: JourneyDefinition
    context: dict[str, Any] = Field(default_factory=dict)
    current: str | None = None
    steps_taken: int = 0
    history: list[StepRecord] = Field(default_factory=list)
    variants: dict[str, str] = Field(default_factory=dict)
    inbox: list[JourneyEvent] = Field(default_factory=list)
    seen_event_ids: list[str] = Field(default_factory=list)
    last_event: JourneyEvent | None = None
    started_at: datetime
    continued: int = 0  # how many times the run continued-as-new
    status: JourneyRunStatus = JourneyRunStatus.RUNNING
    reason: str = ""


class JourneyInput(_Payload):
    journey: str
    customer_id: str
    version: int | None = None  # None: the latest published version, pinned at start
    context: dict[str, Any] = Field(default_factory=dict)
    trigger: JourneyEvent | None = None
    state: JourneyState | None = None  # set when the run continues as new
    max_history_events: int = Field(default=10_000, ge=10)


class JourneyResult(_Payload):
    journey: str
    customer_id: str
    status: JourneyRunStatus
    reason: str = ""
    steps_taken: int = 0


class JourneyStatus(_Payload):
    workflow_id: str
    journey: str
    version: int | None
    customer_id: str
    status: JourneyRunStatus
    current_step: str | None = None
    current_kind: str | None = None
    waiting_until: datetime | None = None
    waiting_for: str | None = None  # event name or "approval"
    history: list[StepRecord] = Field(default_factory=list)
    variants: dict[str, str] = Field(default_factory=dict)
    inbox: list[str] = Field(default_factory=list)
    continued: int = 0
    reason: str = ""


class ApprovalDecision(_Payload):
    approved: bool
    operator: str = Field(min_length=1, max_length=100)
    reason: str = ""


# -- activity payloads


class LoadJourneyInput(_Payload):
    journey: str
    version: int | None
    customer_id: str
    workflow_id: str
    started_at: datetime


class LoadedJourney(_Payload):
    ok: bool
    error: str = ""
    version: int = 0
    definition: JourneyDefinition | None = None
    timezone: str = "UTC"
    run_id: int = 0


class BranchInput(_Payload):
    customer_id: str
    conditions: list[str | None]  # None: the else case
    event: JourneyEvent | None = None


class FinishJourneyInput(_Payload):
    run_id: int
    status: JourneyRunStatus
    reason: str = ""
    ended_at: datetime
    records: list[tuple[int, StepRecord]] = Field(default_factory=list)  # not yet written


class RecordStepsInput(_Payload):
    run_id: int
    records: list[tuple[int, StepRecord]]  # (sequence number in the run, record)
    current: str | None


# Search attributes (name -> type) that make journeys findable in Temporal's UI and CLI.
# The event an erasure sends to the customer's running journeys: every journey exits on it.
ERASURE_EVENT = "clarion.erasure"

SEARCH_ATTRIBUTES = {
    "ClarionJourney": "keyword",
    "ClarionJourneyVersion": "int",
    "ClarionJourneyStep": "keyword",
    "ClarionCustomer": "keyword",
}


class JourneyApprovalRuleInput(_Payload):
    category: str
    timeout: str
