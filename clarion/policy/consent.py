"""Consent rules.

The ledger is a list of facts (customer x channel x purpose -> granted/revoked at a
time); the current state for a channel and purpose is the latest fact. The rules:

- marketing needs an explicit opt-in (a ``granted`` fact) for that channel;
- transactional and service messages go unless the customer opted out of that
  channel for that purpose;
- a message needs a contact point for the channel (an email address for email,
  a phone number for SMS).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from clarion.models import Channel, ConsentStatus, Purpose


class ConsentFact(BaseModel):
    model_config = ConfigDict(frozen=True)

    channel: Channel
    purpose: Purpose
    status: ConsentStatus
    recorded_at: datetime
    source: str = ""


class ConsentDecision(BaseModel):
    model_config = ConfigDict(frozen=True)

    allowed: bool
    reason: str  # machine-readable: opt_in, no_opt_in, opted_out, not_opted_out, no_contact_point


def current_consent(
    facts: Iterable[ConsentFact], channel: Channel, purpose: Purpose
) -> ConsentFact | None:
    """The latest fact for this channel and purpose, or None when there is none.

    Facts recorded at the same instant keep their ledger order: the later one wins.
    """
    latest: ConsentFact | None = None
    for fact in facts:
        if fact.channel != channel or fact.purpose != purpose:
            continue
        if latest is None or fact.recorded_at >= latest.recorded_at:
            latest = fact
    return latest


def decide_consent(
    facts: Iterable[ConsentFact],
    channel: Channel,
    purpose: Purpose,
    *,
    has_contact_point: bool,
    opt_in_required: bool | None = None,
    override: bool = False,
) -> ConsentDecision:
    """May a message of ``purpose`` go to this customer on ``channel``?

    ``opt_in_required`` is the jurisdiction's consent mode for the channel and purpose
    (None: marketing needs an opt-in, the rest goes unless opted out). ``override``:
    the message is of a safety category the jurisdiction sends despite an opt-out.
    """
    if not has_contact_point:
        return ConsentDecision(allowed=False, reason="no_contact_point")
    fact = current_consent(facts, channel, purpose)
    if override:
        if fact is not None and fact.status is ConsentStatus.REVOKED:
            return ConsentDecision(allowed=True, reason="safety_override")
        return ConsentDecision(allowed=True, reason="safety_category")
    if opt_in_required is None:
        opt_in_required = purpose is Purpose.MARKETING
    if opt_in_required:
        if fact is not None and fact.status is ConsentStatus.GRANTED:
            return ConsentDecision(allowed=True, reason="opt_in")
        if fact is not None:
            return ConsentDecision(allowed=False, reason="opted_out")
        return ConsentDecision(allowed=False, reason="no_opt_in")
    if fact is not None and fact.status is ConsentStatus.REVOKED:
        return ConsentDecision(allowed=False, reason="opted_out")
    return ConsentDecision(allowed=True, reason="not_opted_out")
