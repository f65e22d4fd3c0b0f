"""Pydantic payloads shared by workflows, activities and starters.

Payloads carry ids (customer, message, template), never raw email addresses or
phone numbers: everything personal is looked up by the activities that need it.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"
    VOICE = "voice"  # a phone call that reads the message (Twilio, TwiML <Say>)


class Purpose(StrEnum):
    TRANSACTIONAL = "transactional"
    SERVICE = "service"
    MARKETING = "marketing"


class ConsentStatus(StrEnum):
    GRANTED = "granted"
    REVOKED = "revoked"


class DeliveryStatus(StrEnum):
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    DEFERRED = "deferred"  # held back (frequency cap); the workflow retries at retry_at


class OutcomeStatus(StrEnum):
    DELIVERED = "delivered"
    SUPPRESSED = "suppressed"
    FAILED = "failed"


class AuditKind(StrEnum):
    REQUESTED = "requested"
    SUPPRESSED = "suppressed"
    RENDER_FAILED = "render_failed"
    SENT = "sent"
    FAILED = "failed"
    FELL_BACK = "fell_back"
    DELIVERED = "delivered"
    UNDELIVERABLE = "undeliverable"
    CONSENT_CHANGED = "consent_changed"
    APPROVAL_REQUESTED = "approval_requested"
    APPROVAL_NOTIFIED = "approval_notified"
    APPROVAL_DECISION = "approval_decision"  # one operator's approve / reject
    APPROVAL_REFUSED = "approval_refused"  # a decision that did not count, and why
    APPROVAL_ESCALATED = "approval_escalated"
    APPROVED = "approved"
    REJECTED = "rejected"
    APPROVAL_EXPIRED = "approval_expired"
    APPROVAL_CANCELLED = "approval_cancelled"  # whatever waited for it ended first
    ESCALATED = "escalated"  # a sent message moved down its ladder (no acknowledgement)
    AGENT_TASK = "agent_task"  # handed to a human agent
    DEFERRED = "deferred"  # held back by quiet hours or a frequency cap until a later time
    CONSENT_OVERRIDDEN = "consent_overridden"  # a safety category sent despite an opt-out
    ERASURE_REQUESTED = "erasure_requested"
    ERASED = "erased"  # the customer's personal data is gone; a tombstone remains
    RETENTION_PURGED = "retention_purged"
    PROVIDER_STATUS = "provider_status"  # the provider reported on a sent message
    INCIDENT = "incident"  # an incident opened by alerts changed status


class _Payload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DeliverMessageInput(_Payload):
    """Input of the DeliverMessage workflow: one message to one customer."""

    message_id: str = Field(min_length=1, max_length=200)
    customer_id: str = Field(min_length=1, max_length=200)
    template: str = Field(min_length=1, max_length=200)
    purpose: Purpose | None = None  # None: the template's own purpose
    channels: list[Channel] = Field(default_factory=lambda: [Channel.EMAIL])
    context: dict[str, Any] = Field(default_factory=dict)
    template_version: int | None = None  # None: the latest version, pinned at start
    requested_by: str = "system"  # the operator or service asking (four-eyes for approvals)
    # Ask for an acknowledgement: when none comes within this time (e.g. "15m") after a
    # channel delivered, the next channel of the ladder is tried; after the last one, a
    # human agent gets a task.
    acknowledge_within: str | None = None
    # The journey that sends it ("" for a message on its own), for delivery analytics.
    journey: str = ""

    @field_validator("acknowledge_within")
    @classmethod
    def _ack_duration(cls, value: str | None) -> str | None:
        if value is not None:
            from clarion.policy.timing import parse_duration

            parse_duration(value)
        return value

    @field_validator("channels")
    @classmethod
    def _channels(cls, value: list[Channel]) -> list[Channel]:
        if not value:
            raise ValueError("channels: at least one channel is required")
        if len(set(value)) != len(value):
            raise ValueError(f"channels: each channel at most once, got {[c.value for c in value]}")
        return value


class PrepareDeliveryInput(_Payload):
    message_id: str
    workflow_id: str
    request: DeliverMessageInput


class ChannelPlan(_Payload):
    channel: Channel
    allowed: bool
    reason: str = ""  # why not allowed: no_consent, opted_out, no_contact_point, template_error
    # Quiet hours: the local window ("08:00-21:00") the send must wait for, and the zones
    # in which it must be open (the customer's, or the conservative set when unknown).
    quiet_allowed: str = ""
    quiet_zones: list[str] = Field(default_factory=list)


class PreparedDelivery(_Payload):
    """What the workflow needs to go on: ids and decisions, no personal data."""

    ok: bool
    error: str = ""  # unknown_customer / unknown_template: nothing can be sent
    purpose: Purpose | None = None
    template_version: int | None = None
    plans: list[ChannelPlan] = Field(default_factory=list)
    category: str = ""
    approval_rule: dict[str, Any] | None = None  # the template's category needs approval


class SendInput(_Payload):
    message_id: str
    workflow_id: str
    customer_id: str
    template: str
    template_version: int
    purpose: Purpose
    channel: Channel
    context: dict[str, Any] = Field(default_factory=dict)
    fallback_from: Channel | None = None
    fallback_reason: str = ""
    category: str = ""  # the template's category (safety overrides)
    decided_at: datetime | None = None  # the workflow's clock when it asked (caps)
    journey: str = ""  # the journey that sends it, recorded on the delivery


class SendResult(_Payload):
    status: DeliveryStatus  # sent, suppressed (consent, cap) or deferred (cap)
    retry_at: datetime | None = None  # deferred: when to ask again
    channel: Channel
    provider: str = ""
    provider_message_id: str = ""
    reason: str = ""
    already_sent: bool = False  # a retry found the provider's acceptance already recorded


class DeferralInput(_Payload):
    message_id: str
    workflow_id: str
    customer_id: str
    channel: Channel
    reason: str  # quiet_hours / frequency_cap
    until: datetime
    detail: dict[str, Any] = Field(default_factory=dict)


class ChannelAttempt(_Payload):
    channel: Channel
    status: DeliveryStatus
    reason: str = ""


class DeliveryOutcome(_Payload):
    """Result of the DeliverMessage workflow."""

    message_id: str
    customer_id: str
    status: OutcomeStatus
    channel: Channel | None = None
    provider_message_id: str = ""
    template_version: int | None = None
    reason: str = ""
    attempts: list[ChannelAttempt] = Field(default_factory=list)
    acknowledged_by: str | None = None  # who acknowledged (messages that ask for it)
    escalated_to: list[Channel] = Field(default_factory=list)  # channels tried for want of one
    agent_task: str | None = None  # the human task opened when nobody acknowledged


class Acknowledgement(_Payload):
    """The recipient (or someone for them) confirmed they got the message."""

    by: str = Field(default="customer", min_length=1, max_length=100)
    channel: Channel | None = None


class ProviderFailure(_Payload):
    """The provider reported that a sent message did not arrive (a status callback)."""

    channel: Channel
    provider_message_id: str = Field(min_length=1, max_length=200)
    status: str = Field(min_length=1, max_length=32)  # e.g. undelivered, failed
    error_code: str = Field(default="", max_length=32)


class EscalationInput(_Payload):
    message_id: str
    workflow_id: str
    customer_id: str
    from_channel: Channel
    to_channel: Channel | None  # None: to a human agent
    reason: str


class RecordOutcomeInput(_Payload):
    workflow_id: str
    outcome: DeliveryOutcome


# ---------------------------------------------------------------- approvals


class OperatorDecision(_Payload):
    """An operator's decision on an approval request (an Update, or a signal)."""

    operator: str = Field(min_length=1, max_length=100)
    approved: bool
    reason: str = Field(default="", max_length=2000)


class ApprovalGateInput(_Payload):
    """What needs approval: ids and the rule, never the message text (that is rendered
    into the store's preview by the opening activity)."""

    request_id: str = Field(min_length=1, max_length=200)
    subject_kind: str  # message / journey / broadcast
    subject_id: str
    category: str
    template: str
    template_version: int
    customer_id: str | None = None
    context: dict[str, Any] = Field(default_factory=dict)
    requested_by: str = "system"
    rule: dict[str, Any]  # clarion.policy.approval.ApprovalRule, as JSON


class ApprovalOpened(_Payload):
    roster: dict[str, list[str]]  # operators who may decide: name -> roles


class ApprovalLevelInput(_Payload):
    request_id: str
    workflow_id: str
    level: int
    roles: list[str]  # roles that may decide from this level on
    notify: list[str]  # roles asked (notified) at this level
    category: str


class ApprovalDecisionRecordInput(_Payload):
    request_id: str
    workflow_id: str
    decision: OperatorDecision
    counted: bool = True
    refusal: str = ""


class ApprovalCloseInput(_Payload):
    request_id: str
    workflow_id: str
    status: str  # approved / rejected / expired
    reason: str
    decided_by: list[str] = Field(default_factory=list)


class ApprovalOutcome(_Payload):
    request_id: str
    status: str  # approved / rejected / expired
    reason: str = ""
    decided_by: list[str] = Field(default_factory=list)

    @property
    def approved(self) -> bool:
        return self.status == "approved"


class ApprovalState(_Payload):
    """The gate's live state (query ``state``)."""

    request_id: str
    status: str
    level: int
    approvals_needed: int
    approved_by: list[str] = Field(default_factory=list)
    requested_by: str = ""


# -- erasure (right to be forgotten)


class ErasureInput(_Payload):
    """Input of the Erasure workflow: forget one customer."""

    request_id: str = Field(min_length=1, max_length=200)
    customer_id: str = Field(min_length=1, max_length=200)
    reference: str = Field(default="", max_length=200)  # the data-subject request's ticket
    requested_by: str = "system"
    # A second pass catches rows written by work that was still ending during the first.
    sweep_after: str = "5m"


class ErasurePlan(_Payload):
    customer_ref: str  # the tombstone's hashed id
    found: bool  # the customer exists in the store
    journeys: list[str] = Field(default_factory=list)  # running journeys' workflow ids
    messages: list[str] = Field(default_factory=list)  # messages in flight: workflow ids


class ErasureWaitInput(_Payload):
    journeys: list[str]
    within_s: float = 600.0


class ErasureStep(_Payload):
    request_id: str
    customer_id: str
    sweep: bool = False


class ErasureCloseInput(_Payload):
    request_id: str
    customer_id: str
    journeys_ended: int
    messages_cancelled: int
    rows: dict[str, int]


class ErasureReceipt(_Payload):
    request_id: str
    customer_ref: str
    reference: str
    requested_by: str
    requested_at: datetime
    completed_at: datetime
    customer_found: bool
    journeys_ended: int
    messages_cancelled: int
    rows: dict[str, int]  # table -> rows deleted or anonymised


class ErasureProgress(_Payload):
    request_id: str
    stage: str  # starting, ending_journeys, erasing, sweeping, done
    journeys: int = 0
    messages: int = 0
    rows: dict[str, int] = Field(default_factory=dict)


# -- retention


class RetentionInput(_Payload):
    """Input of the Retention workflow: purge what is older than ``days``."""

    days: int = Field(ge=1, le=36_500)


class PurgeInput(_Payload):
    cutoff: datetime
    days: int


class RetentionReport(_Payload):
    cutoff: datetime
    rows: dict[str, int]  # table (or "outbox_files") -> rows purged
