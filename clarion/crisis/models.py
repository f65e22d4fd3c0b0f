"""Payloads of the crisis broadcast workflows: ids and counts, never contact data."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from clarion.expressions import ExpressionError, parse
from clarion.models import Channel
from clarion.policy.timing import parse_duration


class _Payload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Severity(StrEnum):
    CRITICAL = "critical"
    MAJOR = "major"
    MINOR = "minor"


class BroadcastState(StrEnum):
    PREPARING = "preparing"
    AWAITING_APPROVAL = "awaiting_approval"
    DISPATCHING = "dispatching"
    ACTIVE = "active"  # everyone reached; follow-ups may come
    RESOLVED = "resolved"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


class Incident(_Payload):
    id: str = Field(min_length=1, max_length=100)
    title: str = Field(min_length=1, max_length=300)
    severity: Severity = Severity.MAJOR


class Tier(_Payload):
    """A priority tier: the first tier whose segment matches a customer takes them."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")
    segment: str = "true"
    channels: list[Channel] = Field(
        default_factory=lambda: [Channel.EMAIL, Channel.SMS], min_length=1
    )
    # Recipients who have not acknowledged within this time (e.g. "15m") are escalated:
    # the message goes again on the escalate_to ladder (e.g. a voice call).
    acknowledge_within: str | None = None
    escalate_to: list[Channel] = Field(default_factory=list)

    @field_validator("acknowledge_within")
    @classmethod
    def _within(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)  # DurationError is a ValueError: reported with the field
        return value

    @model_validator(mode="after")
    def _escalation(self) -> Tier:
        if self.escalate_to and self.acknowledge_within is None:
            raise ValueError("escalate_to needs acknowledge_within (how long to wait)")
        return self

    @field_validator("segment")
    @classmethod
    def _segment(cls, value: str) -> str:
        try:
            parse(value)
        except ExpressionError as exc:
            raise ValueError(str(exc)) from None
        return value


DEFAULT_TIERS = [Tier(name="everyone")]


class Audience(_Payload):
    """Who: a segment over customers, or a list of ids staged in the store (list_id)."""

    segment: str | None = None
    list_id: str | None = None


class BroadcastInput(_Payload):
    broadcast_id: str
    incident: Incident
    template: str
    audience: Audience
    tiers: list[Tier] = Field(default_factory=lambda: list(DEFAULT_TIERS), min_length=1)
    batch_size: int = Field(default=5000, ge=1, le=5000)
    shard_size: int = Field(default=10_000, ge=1)
    max_parallel_shards: int = Field(default=4, ge=1, le=64)
    requested_by: str = "system"  # who launched it (four-eyes when it needs approval)
    heartbeat_timeout_s: int = Field(default=30, ge=2, le=3600)


class TierRange(_Payload):
    tier: int  # 0-based index into tiers
    seq_from: int
    seq_to: int  # inclusive
    count: int


class PreparedBroadcast(_Payload):
    ok: bool
    error: str = ""
    pre_approved: bool = False
    template_version: int = 0
    approval_rule: dict[str, Any] | None = None  # for a template that is not pre-approved
    ranges: list[TierRange] = Field(default_factory=list)
    unknown_customers: int = 0


class BatchInput(_Payload):
    broadcast_id: str
    tier: int
    seq_from: int
    seq_to: int
    channels: list[Channel]
    workflow_id: str
    escalate: bool = False  # send to reached recipients who have not acknowledged
    ack_within_s: float | None = None  # the tier asks for acknowledgements: sign links


class Tally(BaseModel):
    """Counts by tier, channel and status; adds up across batches."""

    model_config = ConfigDict(extra="forbid")

    counts: dict[str, int] = Field(default_factory=dict)  # "tier|channel|status" -> n
    possible_duplicates: int = 0

    def add(self, tier: int, channel: str, status: str, n: int = 1) -> None:
        key = f"{tier}|{channel}|{status}"
        self.counts[key] = self.counts.get(key, 0) + n

    def merge(self, other: Tally) -> None:
        for key, n in other.counts.items():
            self.counts[key] = self.counts.get(key, 0) + n
        self.possible_duplicates += other.possible_duplicates

    def total(self, *, tier: int | None = None, status: str | None = None) -> int:
        out = 0
        for key, n in self.counts.items():
            t, _, s = key.split("|")
            if (tier is None or int(t) == tier) and (status is None or s == status):
                out += n
        return out


class BatchReport(_Payload):
    shard_id: str
    batch_no: int
    tier: int
    tally: Tally
    gen: int
    escalation: bool = False


def batch_task_queue(task_queue: str) -> str:
    """The task queue of a broadcast's batches, next to the workflows' ``task_queue``:
    each worker takes ``broadcast_batch_slots`` batches from it at a time."""
    return f"{task_queue}-broadcast-batches"


class ShardInput(_Payload):
    broadcast_id: str
    parent_id: str
    tier: int
    seq_from: int
    seq_to: int
    channels: list[Channel]
    batch_size: int
    heartbeat_timeout_s: int = 30
    escalate: bool = False
    ack_within_s: float | None = None


class FollowUp(_Payload):
    template: str
    kind: str = "update"  # update or resolution


class NewGeneration(_Payload):
    broadcast_id: str
    template: str
    kind: str


class GenerationResult(_Payload):
    ok: bool
    gen: int = 0
    error: str = ""


class FinishBroadcastInput(_Payload):
    broadcast_id: str
    state: BroadcastState


class TierProgress(_Payload):
    tier: str
    total: int
    pending: int
    sent: int
    failed: int
    suppressed: int
    notified_after_s: float | None = None  # seconds from launch until the tier was dispatched
    acknowledged: int = 0
    escalated: int = 0


class BroadcastProgress(_Payload):
    broadcast_id: str
    state: BroadcastState
    gen: int
    total: int
    done: int
    by_status: dict[str, int]
    by_channel: dict[str, int]
    tiers: list[TierProgress]
    rate_per_s: float
    eta_s: float | None
    launched_at: datetime | None
    possible_duplicates: int
    unknown_customers: int = 0  # ids in an explicit audience list that are not customers
    acknowledged: int = 0
    escalated: int = 0
    reason: str = ""
