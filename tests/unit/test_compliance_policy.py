"""Compliance rules: parsing and inheritance, consent modes, overrides, quiet hours and
frequency caps as pure functions of (facts, time)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from clarion.models import Channel, ConsentStatus, Purpose
from clarion.policy import ConsentFact
from clarion.policy.compliance import (
    DEFAULT_POLICY,
    CapAction,
    ComplianceError,
    FrequencyCap,
    QuietWindow,
    consent_decision,
    decide_cap,
    load_compliance,
    next_allowed,
    parse_compliance,
    quiet_window,
)

T0 = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


def fact(channel: Channel, purpose: Purpose, status: ConsentStatus) -> ConsentFact:
    return ConsentFact(channel=channel, purpose=purpose, status=status, recorded_at=T0)


# -- rules and inheritance


def test_builtin_jurisdictions_and_defaults() -> None:
    assert DEFAULT_POLICY.default_jurisdiction == "default"
    assert set(DEFAULT_POLICY.jurisdictions) == {"default", "US", "EU", "UK"}
    assert DEFAULT_POLICY.jurisdiction_of({"jurisdiction": "US"}) == "US"
    assert DEFAULT_POLICY.jurisdiction_of({"jurisdiction": "Mars"}) == "default"
    assert DEFAULT_POLICY.jurisdiction_of(None) == "default"
    us = DEFAULT_POLICY.jurisdictions["US"]
    assert us.consent_mode(Purpose.MARKETING, Channel.EMAIL) == "opt_out"  # CAN-SPAM
    assert us.consent_mode(Purpose.MARKETING, Channel.SMS) == "opt_in"  # TCPA
    eu = DEFAULT_POLICY.jurisdictions["EU"]
    assert eu.consent_mode(Purpose.MARKETING, Channel.EMAIL) == "opt_in"
    assert eu.quiet_hours_for(Purpose.MARKETING, Channel.SMS) is not None
    assert eu.quiet_hours_for(Purpose.MARKETING, Channel.EMAIL) is None
    assert eu.quiet_hours_for(Purpose.SERVICE, Channel.SMS) is None


def test_a_jurisdiction_inherits_what_it_does_not_set_from_default() -> None:
    policy = parse_compliance(
        {
            "default_jurisdiction": "CA",
            "jurisdictions": {
                "default": {"caps": [{"purpose": "marketing", "max": 3, "per": "7d"}]},
                "CA": {"override_categories": ["safety"]},
            },
        }
    )
    ca = policy.jurisdictions["CA"]
    assert ca.overrides("safety") and not ca.overrides("promotion") and not ca.overrides("")
    assert [c.describe() for c in ca.caps] == ["marketing on all channels: at most 3 per 7d"]
    assert policy.jurisdiction_of({}) == "CA"
    # The built-in US rules keep their own consent modes and take the file's default caps.
    assert policy.jurisdictions["US"].consent_mode(Purpose.MARKETING, Channel.EMAIL) == "opt_out"
    assert len(policy.jurisdictions["US"].caps) == 1


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (
            {"jurisdictions": {"US": {"caps": [{"purpose": "marketing", "max": 0, "per": "1d"}]}}},
            "jurisdictions.US.caps.0.max",
        ),
        (
            {
                "jurisdictions": {
                    "US": {"caps": [{"purpose": "marketing", "max": 1, "per": "1 fortnight"}]}
                }
            },
            "'1 fortnight'",
        ),
        ({"jurisdictions": {"EU": {"consent": {"marketing": "maybe"}}}}, "'maybe'"),
        ({"jurisdictions": {"EU": {"unknown_timezones": ["Mars/Olympus"]}}}, "'Mars/Olympus'"),
        (
            {
                "jurisdictions": {
                    "EU": {
                        "quiet_hours": [
                            {
                                "purposes": ["marketing"],
                                "channels": ["sms"],
                                "allowed": "09:00-09:00",
                            }
                        ]
                    }
                }
            },
            "'09:00-09:00'",
        ),
        ({"jurisdictions": {"EU": {"colour": "blue"}}}, "jurisdictions.EU.colour"),
        ({"default_jurisdiction": "XX"}, "'XX' is not among"),
        ({"rules": {}}, "unknown key 'rules'"),
        ({"jurisdictions": {"EU": ["no"]}}, "jurisdictions.EU: expected a mapping"),
    ],
)
def test_bad_rules_name_the_field_and_value(data: dict, needle: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ComplianceError) as info:
        parse_compliance(data, source="rules.yaml")
    assert needle in str(info.value) and str(info.value).startswith("rules.yaml: ")


def test_unknown_zones_that_never_share_an_open_hour_are_refused() -> None:
    with pytest.raises(ComplianceError, match="never open in all of"):
        parse_compliance(
            {
                "jurisdictions": {
                    "WORLD": {
                        "quiet_hours": [
                            {
                                "purposes": ["marketing"],
                                "channels": ["sms"],
                                "allowed": "09:00-12:00",
                            }
                        ],
                        "unknown_timezones": ["Asia/Tokyo", "America/New_York"],
                    }
                }
            }
        )


def test_load_from_file_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("jurisdictions:\n  US:\n    override_categories: [crisis]\n")
    assert load_compliance(path).jurisdictions["US"].overrides("crisis")
    assert load_compliance(None) is DEFAULT_POLICY
    with pytest.raises(ComplianceError, match="No such file"):
        load_compliance(tmp_path / "missing.yaml")
    path.write_text("jurisdictions: [")
    with pytest.raises(ComplianceError, match="invalid YAML"):
        load_compliance(path)


# -- consent


def test_consent_modes_per_jurisdiction_and_channel() -> None:
    us = DEFAULT_POLICY.jurisdictions["US"]
    eu = DEFAULT_POLICY.jurisdictions["EU"]
    none: list[ConsentFact] = []

    def reason(rules, channel, purpose, facts=none, category="promotion"):  # type: ignore[no-untyped-def]
        return consent_decision(
            rules, facts, channel, purpose, category=category, has_contact_point=True
        ).reason

    assert reason(us, Channel.EMAIL, Purpose.MARKETING) == "not_opted_out"
    assert reason(us, Channel.SMS, Purpose.MARKETING) == "no_opt_in"
    assert reason(eu, Channel.EMAIL, Purpose.MARKETING) == "no_opt_in"
    revoked = [fact(Channel.EMAIL, Purpose.MARKETING, ConsentStatus.REVOKED)]
    assert reason(us, Channel.EMAIL, Purpose.MARKETING, revoked) == "opted_out"
    assert reason(eu, Channel.EMAIL, Purpose.SERVICE) == "not_opted_out"


def test_safety_override_only_where_configured_and_never_without_an_address() -> None:
    policy = parse_compliance({"jurisdictions": {"US": {"override_categories": ["safety"]}}})
    stopped = [fact(Channel.SMS, Purpose.SERVICE, ConsentStatus.REVOKED)]
    us, eu = policy.jurisdictions["US"], policy.jurisdictions["EU"]
    args = {"category": "safety", "has_contact_point": True}
    assert consent_decision(us, stopped, Channel.SMS, Purpose.SERVICE, **args).reason == (  # type: ignore[arg-type]
        "safety_override"
    )
    assert not consent_decision(eu, stopped, Channel.SMS, Purpose.SERVICE, **args).allowed  # type: ignore[arg-type]
    assert not consent_decision(
        us, stopped, Channel.SMS, Purpose.SERVICE, category="promotion", has_contact_point=True
    ).allowed
    assert (
        consent_decision(
            us, stopped, Channel.SMS, Purpose.SERVICE, category="safety", has_contact_point=False
        ).reason
        == "no_contact_point"
    )


# -- quiet hours


def test_quiet_window_uses_the_customer_zone_or_the_conservative_set() -> None:
    us = DEFAULT_POLICY.jurisdictions["US"]
    known = quiet_window(us, Purpose.MARKETING, Channel.SMS, "Asia/Tokyo")
    assert known == QuietWindow(allowed="08:00-21:00", zones=["Asia/Tokyo"])
    unknown = quiet_window(us, Purpose.MARKETING, Channel.VOICE, "")
    assert unknown is not None and unknown.unknown_timezone and "Pacific/Honolulu" in unknown.zones
    garbled = quiet_window(us, Purpose.MARKETING, Channel.SMS, "Not/AZone")
    assert garbled is not None and garbled.unknown_timezone
    assert quiet_window(us, Purpose.MARKETING, Channel.EMAIL, "Asia/Tokyo") is None
    assert quiet_window(us, Purpose.SERVICE, Channel.SMS, "Asia/Tokyo") is None


def test_next_allowed_in_a_far_zone() -> None:
    tokyo = QuietWindow(allowed="08:00-21:00", zones=["Asia/Tokyo"])
    # 14:00 UTC is 23:00 in Tokyo: wait for 08:00 there, 23:00 UTC.
    assert next_allowed(datetime(2026, 1, 15, 14, tzinfo=UTC), tokyo) == datetime(
        2026, 1, 15, 23, tzinfo=UTC
    )
    # 02:00 UTC is 11:00 in Tokyo: open now.
    now = datetime(2026, 1, 15, 2, tzinfo=UTC)
    assert next_allowed(now, tokyo) == now
    # The end is exclusive: 21:00 sharp is closed.
    assert next_allowed(datetime(2026, 1, 15, 12, tzinfo=UTC), tokyo) == datetime(
        2026, 1, 15, 23, tzinfo=UTC
    )


def test_next_allowed_across_a_dst_change_and_a_window_over_midnight() -> None:
    ny = QuietWindow(allowed="08:00-21:00", zones=["America/New_York"])
    # Sunday 8 March 2026, 03:00 local (after the jump): 08:00 EDT is 12:00 UTC.
    assert next_allowed(datetime(2026, 3, 8, 7, tzinfo=UTC), ny) == datetime(
        2026, 3, 8, 12, tzinfo=UTC
    )
    night = QuietWindow(allowed="22:00-06:00", zones=["UTC"])
    assert next_allowed(datetime(2026, 1, 15, 23, tzinfo=UTC), night) == datetime(
        2026, 1, 15, 23, tzinfo=UTC
    )
    assert next_allowed(datetime(2026, 1, 15, 12, tzinfo=UTC), night) == datetime(
        2026, 1, 15, 22, tzinfo=UTC
    )


def test_unknown_zone_waits_until_open_everywhere() -> None:
    us = DEFAULT_POLICY.jurisdictions["US"]
    window = quiet_window(us, Purpose.MARKETING, Channel.SMS, "")
    assert window is not None
    # January: 08:00 in Honolulu is 18:00 UTC; 21:00 in New York is 02:00 UTC.
    assert next_allowed(datetime(2026, 1, 15, 12, tzinfo=UTC), window) == datetime(
        2026, 1, 15, 18, tzinfo=UTC
    )
    late = datetime(2026, 1, 16, 1, 30, tzinfo=UTC)
    assert next_allowed(late, window) == late
    assert next_allowed(datetime(2026, 1, 16, 2, tzinfo=UTC), window) == datetime(
        2026, 1, 16, 18, tzinfo=UTC
    )


def test_next_allowed_needs_an_aware_time() -> None:
    with pytest.raises(ValueError, match="aware"):
        next_allowed(datetime(2026, 1, 15), QuietWindow(allowed="08:00-21:00", zones=["UTC"]))


# -- frequency caps


def cap(max_: int, per: str, action: CapAction = CapAction.SUPPRESS) -> FrequencyCap:
    return FrequencyCap(purpose=Purpose.MARKETING, max=max_, per=per, action=action)


def test_cap_counts_a_rolling_window() -> None:
    weekly = cap(3, "7d")
    sent = [T0 - timedelta(days=d) for d in (1, 3, 8)]  # the 8-day-old one is out
    assert decide_cap([weekly], {0: sent}, T0).allowed
    sent.append(T0 - timedelta(hours=1))
    verdict = decide_cap([weekly], {0: sent}, T0)
    assert not verdict.allowed and verdict.action is CapAction.SUPPRESS
    assert verdict.cap == "marketing on all channels: at most 3 per 7d" and verdict.retry_at is None


def test_deferred_cap_retries_when_enough_messages_leave_the_window() -> None:
    two_a_day = cap(2, "1d", CapAction.DEFER)
    sent = [T0 - timedelta(hours=h) for h in (20, 10, 2)]  # three inside: one over
    verdict = decide_cap([two_a_day], {0: sent}, T0)
    # Room for one more once both the 20h- and the 10h-old ones have left the day.
    assert not verdict.allowed and verdict.retry_at == T0 + timedelta(hours=14)
    assert decide_cap([two_a_day], {0: sent}, verdict.retry_at).allowed


def test_the_first_full_cap_decides() -> None:
    hourly, daily = cap(1, "1h"), cap(5, "1d", CapAction.DEFER)
    verdict = decide_cap([hourly, daily], {0: [T0 - timedelta(minutes=5)], 1: []}, T0)
    assert verdict.cap.endswith("at most 1 per 1h") and verdict.action is CapAction.SUPPRESS
    channel_cap = FrequencyCap(purpose=Purpose.MARKETING, channels=[Channel.SMS], max=1, per="1d")
    assert channel_cap.applies(Purpose.MARKETING, Channel.SMS)
    assert not channel_cap.applies(Purpose.MARKETING, Channel.EMAIL)
    assert not channel_cap.applies(Purpose.SERVICE, Channel.SMS)
    assert channel_cap.counted_channels() == [Channel.SMS]


def test_the_example_rules_file_loads() -> None:
    policy = load_compliance(Path(__file__).parents[2] / "examples" / "compliance.yaml")
    assert policy.jurisdictions["US"].overrides("crisis")
    assert len(policy.jurisdictions["EU"].caps) == 2
