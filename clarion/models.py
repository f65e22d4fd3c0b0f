"""Pydantic payloads shared by workflows, activities and starters.

Payloads carry ids (customer, message, template), never raw email addresses or
phone numbers: everything personal is looked up by the activities that need it.
"""

from __future__ import annotations

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


class PreparedDelivery(_Payload):
    """What the workflow needs to go on: ids and decisions, no personal data."""

    ok: bool
    error: str = ""  # unknown_customer / unknown_template: nothing can be sent
    purpose: Purpose | None = None
    template_version: int | None = None
    plans: list[ChannelPlan] = Field(default_factory=list)


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


class SendResult(_Payload):
    status: DeliveryStatus  # sent or suppressed (consent withdrawn at send time)
    channel: Channel
    provider: str = ""
    provider_message_id: str = ""
    reason: str = ""
    already_sent: bool = False  # a retry found the provider's acceptance already recorded


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


class RecordOutcomeInput(_Payload):
    workflow_id: str
    outcome: DeliveryOutcome
