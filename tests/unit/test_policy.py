"""Consent rules: marketing needs an opt-in, transactional/service go unless opted out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from clarion.models import Channel, ConsentStatus, Purpose
from clarion.policy.consent import ConsentDecision, ConsentFact, current_consent, decide_consent

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def fact(
    status: ConsentStatus,
    *,
    channel: Channel = Channel.EMAIL,
    purpose: Purpose = Purpose.MARKETING,
    at: datetime = T0,
    source: str = "",
) -> ConsentFact:
    return ConsentFact(
        channel=channel, purpose=purpose, status=status, recorded_at=at, source=source
    )


GRANTED = ConsentStatus.GRANTED
REVOKED = ConsentStatus.REVOKED


# -- marketing


def test_marketing_without_any_fact_is_refused() -> None:
    decision = decide_consent([], Channel.EMAIL, Purpose.MARKETING, has_contact_point=True)
    assert decision == ConsentDecision(allowed=False, reason="no_opt_in")


def test_marketing_with_opt_in_is_allowed() -> None:
    decision = decide_consent(
        [fact(GRANTED)], Channel.EMAIL, Purpose.MARKETING, has_contact_point=True
    )
    assert decision == ConsentDecision(allowed=True, reason="opt_in")


def test_marketing_after_revocation_is_refused() -> None:
    facts = [fact(GRANTED, at=T0), fact(REVOKED, at=T0 + timedelta(minutes=1))]
    decision = decide_consent(facts, Channel.EMAIL, Purpose.MARKETING, has_contact_point=True)
    assert decision == ConsentDecision(allowed=False, reason="opted_out")


def test_marketing_regranted_after_revocation_is_allowed() -> None:
    facts = [
        fact(GRANTED, at=T0),
        fact(REVOKED, at=T0 + timedelta(days=1)),
        fact(GRANTED, at=T0 + timedelta(days=2)),
    ]
    decision = decide_consent(facts, Channel.EMAIL, Purpose.MARKETING, has_contact_point=True)
    assert decision == ConsentDecision(allowed=True, reason="opt_in")


def test_latest_fact_wins_regardless_of_ledger_order() -> None:
    # The newer grant comes first in the list; the older revocation must not win.
    facts = [fact(GRANTED, at=T0 + timedelta(hours=2)), fact(REVOKED, at=T0)]
    decision = decide_consent(facts, Channel.EMAIL, Purpose.MARKETING, has_contact_point=True)
    assert decision.allowed is True
    assert decision.reason == "opt_in"


def test_tie_on_recorded_at_goes_to_the_later_ledger_entry() -> None:
    grant = fact(GRANTED, source="first")
    revoke = fact(REVOKED, source="second")
    assert current_consent([grant, revoke], Channel.EMAIL, Purpose.MARKETING) == revoke
    assert current_consent([revoke, grant], Channel.EMAIL, Purpose.MARKETING) == grant
    assert not decide_consent(
        [grant, revoke], Channel.EMAIL, Purpose.MARKETING, has_contact_point=True
    ).allowed
    assert decide_consent(
        [revoke, grant], Channel.EMAIL, Purpose.MARKETING, has_contact_point=True
    ).allowed


def test_marketing_opt_in_on_another_channel_does_not_count() -> None:
    facts = [fact(GRANTED, channel=Channel.SMS)]
    decision = decide_consent(facts, Channel.EMAIL, Purpose.MARKETING, has_contact_point=True)
    assert decision == ConsentDecision(allowed=False, reason="no_opt_in")


def test_grant_for_another_purpose_does_not_count_for_marketing() -> None:
    facts = [fact(GRANTED, purpose=Purpose.SERVICE)]
    decision = decide_consent(facts, Channel.EMAIL, Purpose.MARKETING, has_contact_point=True)
    assert decision == ConsentDecision(allowed=False, reason="no_opt_in")


def test_newer_fact_of_another_channel_does_not_shadow_this_channel() -> None:
    facts = [
        fact(GRANTED, channel=Channel.EMAIL, at=T0),
        fact(REVOKED, channel=Channel.SMS, at=T0 + timedelta(days=1)),
        fact(REVOKED, channel=Channel.EMAIL, purpose=Purpose.SERVICE, at=T0 + timedelta(days=1)),
    ]
    decision = decide_consent(facts, Channel.EMAIL, Purpose.MARKETING, has_contact_point=True)
    assert decision == ConsentDecision(allowed=True, reason="opt_in")


# -- transactional and service


@pytest.mark.parametrize("purpose", [Purpose.TRANSACTIONAL, Purpose.SERVICE])
def test_non_marketing_goes_without_any_fact(purpose: Purpose) -> None:
    decision = decide_consent([], Channel.SMS, purpose, has_contact_point=True)
    assert decision == ConsentDecision(allowed=True, reason="not_opted_out")


@pytest.mark.parametrize("purpose", [Purpose.TRANSACTIONAL, Purpose.SERVICE])
def test_non_marketing_refused_after_opt_out_of_that_channel_and_purpose(
    purpose: Purpose,
) -> None:
    facts = [fact(REVOKED, channel=Channel.SMS, purpose=purpose)]
    decision = decide_consent(facts, Channel.SMS, purpose, has_contact_point=True)
    assert decision == ConsentDecision(allowed=False, reason="opted_out")


def test_non_marketing_allowed_again_after_a_newer_grant() -> None:
    facts = [
        fact(REVOKED, purpose=Purpose.SERVICE, at=T0),
        fact(GRANTED, purpose=Purpose.SERVICE, at=T0 + timedelta(seconds=1)),
    ]
    decision = decide_consent(facts, Channel.EMAIL, Purpose.SERVICE, has_contact_point=True)
    assert decision == ConsentDecision(allowed=True, reason="not_opted_out")


def test_marketing_opt_out_does_not_block_transactional() -> None:
    facts = [fact(REVOKED, purpose=Purpose.MARKETING)]
    decision = decide_consent(facts, Channel.EMAIL, Purpose.TRANSACTIONAL, has_contact_point=True)
    assert decision == ConsentDecision(allowed=True, reason="not_opted_out")


def test_opt_out_of_another_channel_does_not_block_transactional() -> None:
    facts = [fact(REVOKED, channel=Channel.SMS, purpose=Purpose.TRANSACTIONAL)]
    decision = decide_consent(facts, Channel.EMAIL, Purpose.TRANSACTIONAL, has_contact_point=True)
    assert decision == ConsentDecision(allowed=True, reason="not_opted_out")


def test_service_opt_out_does_not_block_transactional() -> None:
    facts = [fact(REVOKED, purpose=Purpose.SERVICE)]
    decision = decide_consent(facts, Channel.EMAIL, Purpose.TRANSACTIONAL, has_contact_point=True)
    assert decision.allowed is True


# -- contact point


@pytest.mark.parametrize("purpose", list(Purpose))
def test_no_contact_point_is_refused_whatever_the_consent(purpose: Purpose) -> None:
    facts = [fact(GRANTED, purpose=purpose)]
    decision = decide_consent(facts, Channel.EMAIL, purpose, has_contact_point=False)
    assert decision == ConsentDecision(allowed=False, reason="no_contact_point")


# -- current_consent


def test_current_consent_is_none_without_matching_facts() -> None:
    facts = [fact(GRANTED, channel=Channel.SMS), fact(GRANTED, purpose=Purpose.SERVICE)]
    assert current_consent(facts, Channel.EMAIL, Purpose.MARKETING) is None


def test_current_consent_returns_latest_matching_fact() -> None:
    newest = fact(REVOKED, at=T0 + timedelta(days=3), source="newest")
    facts = [fact(GRANTED, at=T0), newest, fact(GRANTED, at=T0 + timedelta(days=1))]
    assert current_consent(facts, Channel.EMAIL, Purpose.MARKETING) == newest


def test_current_consent_accepts_a_one_shot_iterable() -> None:
    facts = iter([fact(GRANTED, at=T0), fact(REVOKED, at=T0 + timedelta(seconds=5))])
    found = current_consent(facts, Channel.EMAIL, Purpose.MARKETING)
    assert found is not None
    assert found.status is REVOKED


def test_consent_fact_parses_string_enums_and_is_frozen() -> None:
    parsed = ConsentFact.model_validate(
        {
            "channel": "sms",
            "purpose": "service",
            "status": "revoked",
            "recorded_at": "2024-05-01T12:00:00Z",
        }
    )
    assert parsed.channel is Channel.SMS
    assert parsed.purpose is Purpose.SERVICE
    assert parsed.status is ConsentStatus.REVOKED
    assert parsed.recorded_at == T0
    with pytest.raises(ValidationError, match="frozen"):
        parsed.status = ConsentStatus.GRANTED  # type: ignore[misc]
