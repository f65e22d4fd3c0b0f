"""Compliance rules per jurisdiction: consent modes, safety overrides, quiet hours and
frequency caps. Pure data and functions; the rules file is read by the caller.

A rules file (YAML; CLARION_COMPLIANCE_FILE) names the jurisdiction used for customers
without one and lists rules per jurisdiction. A jurisdiction inherits every key it
does not set from ``default`` (which inherits from the built-in defaults)::

    default_jurisdiction: default
    jurisdictions:
      default:
        consent:                       # opt_in: needs an explicit grant;
          marketing: opt_in            # opt_out: goes unless the customer opted out
          transactional: opt_out
          service: opt_out
        override_categories: []        # template categories sent despite an opt-out
        quiet_hours:                   # sends outside ``allowed`` wait for the window
          - {purposes: [marketing], channels: [sms, voice], allowed: "08:00-21:00"}
        unknown_timezones: [UTC]       # customers without a time zone: the window must
                                       # be open in every one of these zones
        caps:                          # rolling windows; suppress or defer when full
          - {purpose: marketing, max: 3, per: 7d, action: suppress}
      US:
        consent:
          marketing: {email: opt_out, sms: opt_in, voice: opt_in}
        override_categories: [crisis, safety]

A customer's jurisdiction is their ``jurisdiction`` attribute (``US``, ``EU``, ...).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from clarion.models import Channel, Purpose
from clarion.policy.consent import ConsentDecision, ConsentFact, decide_consent
from clarion.policy.timing import next_local_time, parse_duration, parse_time_of_day


class ComplianceError(ValueError):
    """A rules file that cannot be used; the message names the field and the value."""


class ConsentMode(StrEnum):
    OPT_IN = "opt_in"  # needs an explicit grant for the channel and purpose
    OPT_OUT = "opt_out"  # goes unless the customer revoked the channel and purpose


class CapAction(StrEnum):
    SUPPRESS = "suppress"
    DEFER = "defer"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError, TypeError) as exc:
        raise ValueError(f"unknown time zone {value!r}: expected an IANA name") from exc
    return value


class QuietHours(_Strict):
    """Messages of these purposes on these channels go only inside ``allowed`` (local)."""

    purposes: list[Purpose] = Field(min_length=1)
    channels: list[Channel] = Field(min_length=1)
    allowed: str  # "08:00-21:00"; a window may wrap midnight ("22:00-06:00")

    @field_validator("allowed")
    @classmethod
    def _window(cls, value: str) -> str:
        start, sep, end = value.partition("-")
        if not sep:
            raise ValueError(f"invalid window {value!r}: expected HH:MM-HH:MM")
        if parse_time_of_day(start) == parse_time_of_day(end):
            raise ValueError(f"invalid window {value!r}: start and end are the same")
        return value

    @property
    def start(self) -> time:
        return parse_time_of_day(self.allowed.partition("-")[0])

    @property
    def end(self) -> time:
        return parse_time_of_day(self.allowed.partition("-")[2])

    def applies(self, purpose: Purpose, channel: Channel) -> bool:
        return purpose in self.purposes and channel in self.channels


class FrequencyCap(_Strict):
    """At most ``max`` messages of ``purpose`` (on ``channels``; all when empty) per
    rolling ``per``; a message over the cap is suppressed or deferred."""

    purpose: Purpose
    channels: list[Channel] = Field(default_factory=list)
    max: int = Field(ge=1, le=10_000)
    per: str
    action: CapAction = CapAction.SUPPRESS

    @field_validator("per")
    @classmethod
    def _per(cls, value: str) -> str:
        parse_duration(value)
        return value

    @property
    def window(self) -> timedelta:
        return parse_duration(self.per)

    def applies(self, purpose: Purpose, channel: Channel) -> bool:
        return purpose is self.purpose and (not self.channels or channel in self.channels)

    def counted_channels(self) -> list[Channel]:
        return list(self.channels) or list(Channel)

    def describe(self) -> str:
        on = "+".join(c.value for c in self.channels) if self.channels else "all channels"
        return f"{self.purpose.value} on {on}: at most {self.max} per {self.per}"


class JurisdictionRules(_Strict):
    consent: dict[Purpose, ConsentMode | dict[Channel, ConsentMode]]
    override_categories: list[str] = Field(default_factory=list)
    quiet_hours: list[QuietHours] = Field(default_factory=list)
    unknown_timezones: list[str] = Field(default_factory=lambda: ["UTC"], min_length=1)
    caps: list[FrequencyCap] = Field(default_factory=list)

    @field_validator("unknown_timezones")
    @classmethod
    def _zones(cls, value: list[str]) -> list[str]:
        return [_check_zone(z) for z in value]

    def consent_mode(self, purpose: Purpose, channel: Channel) -> ConsentMode:
        mode = self.consent.get(purpose)
        if isinstance(mode, dict):
            mode = mode.get(channel)
        if mode is None:
            return ConsentMode.OPT_IN if purpose is Purpose.MARKETING else ConsentMode.OPT_OUT
        return mode

    def overrides(self, category: str) -> bool:
        return bool(category) and category in self.override_categories

    def quiet_hours_for(self, purpose: Purpose, channel: Channel) -> QuietHours | None:
        return next((q for q in self.quiet_hours if q.applies(purpose, channel)), None)

    def caps_for(self, purpose: Purpose, channel: Channel) -> list[FrequencyCap]:
        return [c for c in self.caps if c.applies(purpose, channel)]

    def may_hold(self, purpose: Purpose, channel: Channel) -> bool:
        """Whether quiet hours or a frequency cap covers ``purpose`` on ``channel`` here
        (by default both cover marketing only)."""
        return self.quiet_hours_for(purpose, channel) is not None or bool(
            self.caps_for(purpose, channel)
        )


BUILTIN_DEFAULT: dict[str, Any] = {
    "consent": {"marketing": "opt_in", "transactional": "opt_out", "service": "opt_out"},
    "override_categories": [],
    "quiet_hours": [
        {"purposes": ["marketing"], "channels": ["sms", "voice"], "allowed": "08:00-21:00"}
    ],
    "unknown_timezones": ["UTC"],
    "caps": [],
}

BUILTIN_JURISDICTIONS: dict[str, dict[str, Any]] = {
    # TCPA / CAN-SPAM: marketing texts and calls need prior express consent, marketing
    # email goes until the customer unsubscribes; calling hours 08:00-21:00 local, and
    # for a customer of unknown zone the window must be open from Hawaii to New York.
    "US": {
        "consent": {
            "marketing": {"email": "opt_out", "sms": "opt_in", "voice": "opt_in"},
            "transactional": "opt_out",
            "service": "opt_out",
        },
        "unknown_timezones": [
            "America/New_York",
            "America/Chicago",
            "America/Denver",
            "America/Los_Angeles",
            "America/Anchorage",
            "Pacific/Honolulu",
        ],
    },
    # GDPR / ePrivacy: marketing needs an opt-in on every channel.
    "EU": {"unknown_timezones": ["Europe/Lisbon", "Europe/Helsinki"]},
    "UK": {"unknown_timezones": ["Europe/London"]},
}


class CompliancePolicy(_Strict):
    default_jurisdiction: str = "default"
    jurisdictions: dict[str, JurisdictionRules]

    def jurisdiction_of(self, attributes: Mapping[str, Any] | None) -> str:
        """The customer's jurisdiction: their ``jurisdiction`` attribute when this
        policy knows it, else the default."""
        value = (attributes or {}).get("jurisdiction")
        if isinstance(value, str) and value.strip() in self.jurisdictions:
            return value.strip()
        return self.default_jurisdiction

    def rules_for(self, attributes: Mapping[str, Any] | None) -> JurisdictionRules:
        return self.jurisdictions[self.jurisdiction_of(attributes)]


def _build(
    data: Mapping[str, Any], source: str, base: Mapping[str, dict[str, Any]]
) -> CompliancePolicy:
    default_name = data.get("default_jurisdiction", "default")
    if not isinstance(default_name, str) or not default_name.strip():
        raise ComplianceError(
            f"{source}: default_jurisdiction: expected a name, got {default_name!r}"
        )
    given = data.get("jurisdictions") or {}
    if not isinstance(given, Mapping):
        raise ComplianceError(f"{source}: jurisdictions: expected a mapping, got {given!r}")
    unknown_keys = set(data) - {"default_jurisdiction", "jurisdictions"}
    if unknown_keys:
        raise ComplianceError(f"{source}: unknown key {sorted(unknown_keys)[0]!r}")
    default_body = given.get("default") or {}
    if not isinstance(default_body, Mapping):
        raise ComplianceError(f"{source}: jurisdictions.default: expected a mapping")
    defaults = {**BUILTIN_DEFAULT, **default_body}
    names = {"default", *base, *given}
    rules: dict[str, JurisdictionRules] = {}
    for name in sorted(names, key=str):
        body = given.get(name) if name in given else base.get(name, {})
        if body is None:
            body = {}
        if not isinstance(body, Mapping):
            raise ComplianceError(
                f"{source}: jurisdictions.{name}: expected a mapping, got {body!r}"
            )
        merged = {**defaults, **body}
        try:
            rules[str(name)] = JurisdictionRules(**merged)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ComplianceError(
                f"{source}: jurisdictions.{name}.{where}: {first['msg']} "
                f"(got {first.get('input')!r})"
            ) from None
        except ValueError as exc:
            raise ComplianceError(f"{source}: jurisdictions.{name}: {exc}") from None
    if default_name not in rules:
        raise ComplianceError(
            f"{source}: default_jurisdiction: {default_name!r} is not among the jurisdictions "
            f"({', '.join(sorted(rules))})"
        )
    return CompliancePolicy(default_jurisdiction=default_name, jurisdictions=rules)


def parse_compliance(
    data: Mapping[str, Any], *, source: str = "compliance rules"
) -> CompliancePolicy:
    """Rules from their YAML mapping over the built-in ones; ComplianceError names the
    field and the value."""
    policy = _build(data, source, BUILTIN_JURISDICTIONS)
    check_windows(policy, source=source)
    return policy


def load_compliance(path: Path | None) -> CompliancePolicy:
    """The rules in ``path``, or the built-in ones when there is none."""
    if path is None:
        return DEFAULT_POLICY
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ComplianceError(f"compliance rules {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ComplianceError(f"compliance rules {path}: invalid YAML: {exc}") from None
    if not isinstance(data, Mapping):
        raise ComplianceError(f"compliance rules {path}: expected a mapping at the top")
    return parse_compliance(data, source=str(path))


def consent_decision(
    rules: JurisdictionRules,
    facts: Iterable[ConsentFact],
    channel: Channel,
    purpose: Purpose,
    *,
    category: str,
    has_contact_point: bool,
) -> ConsentDecision:
    """The consent decision under a jurisdiction's rules."""
    return decide_consent(
        facts,
        channel,
        purpose,
        has_contact_point=has_contact_point,
        opt_in_required=rules.consent_mode(purpose, channel) is ConsentMode.OPT_IN,
        override=rules.overrides(category),
    )


# -- quiet hours


class QuietWindow(_Strict):
    """What the workflow needs to honour quiet hours: the window and the zones in which
    it must be open (the customer's zone, or the conservative set when unknown)."""

    allowed: str
    zones: list[str] = Field(min_length=1)
    unknown_timezone: bool = False


def quiet_window(
    rules: JurisdictionRules, purpose: Purpose, channel: Channel, timezone: str
) -> QuietWindow | None:
    """The window a message must wait for, or None when no quiet hours apply."""
    rule = rules.quiet_hours_for(purpose, channel)
    if rule is None:
        return None
    zone = (timezone or "").strip()
    if zone:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            zone = ""
    if not zone:
        return QuietWindow(
            allowed=rule.allowed, zones=list(rules.unknown_timezones), unknown_timezone=True
        )
    return QuietWindow(allowed=rule.allowed, zones=[zone])


def _open_in(instant: datetime, zone: str, start: time, end: time) -> bool:
    local = instant.astimezone(ZoneInfo(zone)).time().replace(tzinfo=None)
    if start < end:
        return start <= local < end
    return local >= start or local < end  # wraps midnight


def next_allowed(now: datetime, window: QuietWindow) -> datetime:
    """The first instant at or after ``now`` at which ``window`` is open in every zone
    (aware UTC). ``now`` itself when it already is. ValueError when the zones never
    share an open moment (checked when the rules are loaded)."""
    if now.tzinfo is None:
        raise ValueError(f"now must be an aware datetime, got naive {now.isoformat()}")
    start, end = (parse_time_of_day(p) for p in window.allowed.split("-", 1))
    candidate = now.astimezone(UTC)
    for _ in range(8 * len(window.zones) + 8):
        closed = [z for z in window.zones if not _open_in(candidate, z, start, end)]
        if not closed:
            return candidate
        candidate = max(next_local_time(candidate, z, start) for z in closed)
    raise ValueError(
        f"the window {window.allowed} is never open in all of {', '.join(window.zones)} at once"
    )


# -- frequency caps


class CapDecision(_Strict):
    allowed: bool
    cap: str = ""  # the rule, described, when not allowed
    action: CapAction | None = None
    retry_at: datetime | None = None  # defer: when the window has room again


def decide_cap(
    caps: Sequence[FrequencyCap], sent: Mapping[int, Sequence[datetime]], now: datetime
) -> CapDecision:
    """Is there room under every cap? ``sent[i]`` lists when the messages counted by
    ``caps[i]`` went out (any order). The first full cap decides; for ``defer`` the
    retry time is when enough of them leave the rolling window."""
    for i, cap in enumerate(caps):
        since = now - cap.window
        inside = sorted(t for t in sent.get(i, ()) if t > since)
        if len(inside) < cap.max:
            continue
        # One slot frees when the (len - max + 1)-th oldest leaves the window.
        frees_at = inside[len(inside) - cap.max] + cap.window
        return CapDecision(
            allowed=False,
            cap=cap.describe(),
            action=cap.action,
            retry_at=frees_at if cap.action is CapAction.DEFER else None,
        )
    return CapDecision(allowed=True)


def check_windows(
    policy: CompliancePolicy, *, source: str = "compliance rules", reference: datetime | None = None
) -> None:
    """Refuse rules whose unknown-time-zone sets never open together (ComplianceError)."""
    now = reference or datetime(2025, 1, 15, tzinfo=UTC)
    for name, rules in policy.jurisdictions.items():
        for q in rules.quiet_hours:
            try:
                next_allowed(now, QuietWindow(allowed=q.allowed, zones=rules.unknown_timezones))
            except ValueError as exc:
                raise ComplianceError(
                    f"{source}: jurisdictions.{name}.unknown_timezones: {exc}; widen the window or "
                    "list fewer zones"
                ) from None


DEFAULT_POLICY = parse_compliance({}, source="built-in compliance rules")
