"""Alert intake rules: which alerts become incidents, when, and what they propose.

Pure data and functions (safe in workflows). The rules come from the YAML file named by
``CLARION_ALERTS_FILE`` (built-in defaults without one)::

    debounce:
      sustain: 5m          # a minor or major alert must keep firing this long
      settle: 10m          # after a recovery, how long a new firing still counts as the
                           # same (flapping) alert before the watch ends quietly
      immediate: [critical]  # severities that open an incident at once
    types:
      - name: power-outage
        keys: ["power.*", "grid-*"]      # globs on the alert key (or the alert's type)
        template: crisis-outage          # a pre-approved crisis template
        resolution_template: crisis-resolved
        audience: "region == 'eu-west'"  # when the alert names no segment (--affects)

An alert is matched to a type by its ``type`` when it gives one (the type's name), else
by its key against each type's globs, first match first.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from clarion.expressions import ExpressionError, parse
from clarion.policy.timing import parse_duration

KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,99}$"


class AlertSeverity(StrEnum):
    CRITICAL = "critical"
    MAJOR = "major"
    MINOR = "minor"
    RESOLVED = "resolved"  # the alert recovered

    @classmethod
    def parse(cls, value: str) -> AlertSeverity:
        """A severity by name; ``ok``, ``clear`` and ``cleared`` mean ``resolved``."""
        text = value.strip().lower()
        if text in ("ok", "clear", "cleared", "recovered"):
            return cls.RESOLVED
        return cls(text)


def check_segment(value: str | None) -> str | None:
    """A segment expression that parses (ValueError naming the problem otherwise)."""
    if value is not None:
        try:
            parse(value)
        except ExpressionError as exc:
            raise ValueError(str(exc)) from None
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _duration(value: str) -> str:
    parse_duration(value)  # DurationError (a ValueError) names the bad value
    return value


class Debounce(_Strict):
    sustain: str = "5m"
    settle: str = "10m"
    immediate: list[AlertSeverity] = Field(default_factory=lambda: [AlertSeverity.CRITICAL])

    @field_validator("sustain", "settle")
    @classmethod
    def _durations(cls, value: str) -> str:
        return _duration(value)

    @property
    def sustain_s(self) -> float:
        return parse_duration(self.sustain).total_seconds()

    @property
    def settle_s(self) -> float:
        return parse_duration(self.settle).total_seconds()


class AlertType(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    keys: list[str] = Field(default_factory=list)
    template: str = Field(min_length=1, max_length=100)
    resolution_template: str | None = Field(default=None, min_length=1, max_length=100)
    audience: str | None = None

    _audience = field_validator("audience")(lambda value: check_segment(value))


class AlertRules(_Strict):
    debounce: Debounce = Field(default_factory=Debounce)
    types: list[AlertType] = Field(default_factory=list)

    def type_for(self, key: str, alert_type: str = "") -> AlertType | None:
        """The type an alert belongs to: by its own type name, else by its key."""
        if alert_type:
            return next((t for t in self.types if t.name == alert_type), None)
        for t in self.types:
            if any(fnmatch.fnmatchcase(key, pattern) for pattern in t.keys):
                return t
        return None

    def at_once(self, severity: AlertSeverity) -> bool:
        """A firing alert of this severity opens an incident without waiting."""
        return severity in self.debounce.immediate


class AlertRulesError(ValueError):
    pass


def parse_rules(data: Mapping[str, Any], *, source: str = "alert rules") -> AlertRules:
    """Rules from their YAML mapping; AlertRulesError names the field and the value."""
    try:
        rules = AlertRules.model_validate(dict(data))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        raise AlertRulesError(
            f"{source}: {where}: {message} (got {first.get('input')!r})"
        ) from None
    names = [t.name for t in rules.types]
    if len(set(names)) != len(names):
        raise AlertRulesError(f"{source}: types: names must be distinct (got {names})")
    return rules


def load_rules(path: Path | None) -> AlertRules:
    """The rules in ``path``, or the defaults (no types: incidents open, nothing proposed)."""
    if path is None:
        return AlertRules()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise AlertRulesError(f"alert rules {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise AlertRulesError(f"alert rules {path}: invalid YAML: {exc}") from None
    if not isinstance(data, Mapping):
        raise AlertRulesError(f"alert rules {path}: expected a mapping at the top")
    return parse_rules(data, source=str(path))
