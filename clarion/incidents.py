"""Payloads of alert intake and the IncidentWorkflow: keys, counts and times, never
contact data."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from clarion.policy.alerts import KEY_PATTERN, AlertSeverity, check_segment

INCIDENT_LAUNCH = "incident_launch"  # the approval category of a proposed launch
INCIDENT_RESOLUTION = "incident_resolution"  # ... and of a proposed resolution notice


class _Payload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Alert(_Payload):
    """One alert from an operations system: ``key`` names what is alerting (one incident
    per key at a time), ``severity`` ``resolved`` says it recovered."""

    source: str = Field(min_length=1, max_length=100)
    key: str = Field(pattern=KEY_PATTERN)
    severity: AlertSeverity
    summary: str = Field(default="", max_length=300)
    affects: str | None = Field(default=None, max_length=2000)  # a segment expression
    type: str = Field(default="", max_length=64)  # the alert type; "" matches by key
    at: datetime  # when Clarion received it

    @field_validator("severity", mode="before")
    @classmethod
    def _severity(cls, value: Any) -> Any:
        return AlertSeverity.parse(value) if isinstance(value, str) else value

    _affects = field_validator("affects")(lambda value: check_segment(value))


class IncidentStatus(StrEnum):
    WATCHING = "watching"  # debouncing: not confirmed yet
    CLEARED = "cleared"  # recovered (or flapped) before confirmation: nothing sent; ended
    UNMAPPED = "unmapped"  # confirmed, but no template or audience to propose
    PROPOSED = "proposed"  # the launch waits for the incident manager
    WITHDRAWN = "withdrawn"  # recovered before launch: the proposal was cancelled; ended
    DECLINED = "declined"  # the launch was rejected or nobody decided
    LAUNCHED = "launched"  # the broadcast runs
    RESOLUTION_PROPOSED = "resolution_proposed"  # recovered: the resolution notice waits
    RESOLVED = "resolved"  # the resolution notice went out; ended
    CLOSED = "closed"  # recovered after an unmapped or declined incident; ended


ENDED = {
    IncidentStatus.CLEARED,
    IncidentStatus.WITHDRAWN,
    IncidentStatus.RESOLVED,
    IncidentStatus.CLOSED,
}


class IncidentState(BaseModel):
    """What an incident is and has been through (the workflow's state and query answer;
    the store keeps a copy after every change)."""

    model_config = ConfigDict(extra="forbid")

    incident_id: str
    key: str
    source: str = ""
    type: str = ""
    severity: AlertSeverity = AlertSeverity.MINOR  # the highest seen while firing
    summary: str = ""
    affects: str | None = None
    status: IncidentStatus = IncidentStatus.WATCHING
    firing: bool = True
    alerts: int = 0  # alerts received for this incident (duplicates included)
    flaps: int = 0  # recoveries followed by a new firing
    first_alert_at: datetime | None = None
    firing_since: datetime | None = None
    recovered_at: datetime | None = None
    confirmed_at: datetime | None = None
    proposed_at: datetime | None = None
    launched_at: datetime | None = None
    ended_at: datetime | None = None
    template: str | None = None
    resolution_template: str | None = None
    segment: str | None = None
    audience_size: int | None = None
    broadcast_id: str | None = None
    approved_by: list[str] = Field(default_factory=list)
    reason: str = ""
    changes: int = 0  # status changes so far (each is audited once)

    @property
    def ended(self) -> bool:
        return self.status in ENDED


class IncidentInput(_Payload):
    key: str
    carried: IncidentState | None = None  # continued as new with this state


class DebounceRules(_Payload):
    sustain_s: float
    settle_s: float
    immediate: list[AlertSeverity]


class ProposeInput(_Payload):
    incident_id: str
    key: str
    type: str
    affects: str | None


class Proposal(_Payload):
    ok: bool
    reason: str = ""
    type: str = ""
    template: str = ""
    template_version: int = 0
    resolution_template: str | None = None
    segment: str = ""
    audience_size: int = 0
    launch_rule: dict[str, Any] = Field(default_factory=dict)  # ApprovalRule as JSON
    resolution_rule: dict[str, Any] = Field(default_factory=dict)


class LaunchInput(_Payload):
    incident_id: str
    title: str
    severity: AlertSeverity
    template: str
    segment: str
    requested_by: str


class ResolveInput(_Payload):
    broadcast_id: str
    template: str


class Resolved(_Payload):
    ok: bool
    gen: int = 0
    note: str = ""


def incident_workflow_id(key: str) -> str:
    return f"alert:{key}"
