"""Alert rules: parsing with precise errors, type matching, severities."""

from __future__ import annotations

from pathlib import Path

import pytest

from clarion.policy.alerts import (
    AlertRules,
    AlertRulesError,
    AlertSeverity,
    load_rules,
    parse_rules,
)

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_and_test_rules() -> None:
    rules = load_rules(None)
    assert rules.debounce.sustain_s == 300 and rules.debounce.settle_s == 600
    assert rules.at_once(AlertSeverity.CRITICAL) and not rules.at_once(AlertSeverity.MAJOR)
    assert rules.type_for("anything") is None
    fast = load_rules(ROOT / "tests" / "data" / "alerts" / "fast.yaml")
    assert fast.debounce.sustain_s == 3


def test_type_by_name_or_key_first_match() -> None:
    rules = parse_rules(
        {
            "types": [
                {"name": "db", "keys": ["db.*", "postgres-*"], "template": "crisis-outage"},
                {"name": "any", "keys": ["*"], "template": "crisis-generic"},
                {"name": "named", "template": "crisis-named", "audience": "tier == 'gold'"},
            ]
        }
    )
    assert rules.type_for("db.primary").name == "db"  # type: ignore[union-attr]
    assert rules.type_for("postgres-eu").name == "db"  # type: ignore[union-attr]
    assert rules.type_for("web.eu").name == "any"  # type: ignore[union-attr]
    assert rules.type_for("db.primary", "named").name == "named"  # type: ignore[union-attr]
    assert rules.type_for("db.primary", "unknown") is None


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"debounce": {"sustain": "soon"}}, "debounce.sustain"),
        ({"debounce": {"immediate": ["loud"]}}, "debounce.immediate.0"),
        ({"types": [{"name": "x", "template": "t", "audience": "a =="}]}, "types.0.audience"),
        ({"types": [{"name": "Bad Name", "template": "t"}]}, "types.0.name"),
        ({"types": [{"name": "x"}]}, "types.0.template"),
        ({"typo": 1}, "typo"),
    ],
)
def test_bad_rules_name_the_field(data: dict[str, object], named: str) -> None:
    with pytest.raises(AlertRulesError) as bad:
        parse_rules(data, source="rules.yaml")
    assert f"rules.yaml: {named}" in str(bad.value)


def test_duplicate_type_names_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(AlertRulesError, match="distinct"):
        parse_rules({"types": [{"name": "a", "template": "t"}, {"name": "a", "template": "u"}]})
    with pytest.raises(AlertRulesError, match="No such file"):
        load_rules(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("types: [\n")
    with pytest.raises(AlertRulesError, match="invalid YAML"):
        load_rules(broken)


def test_severity_aliases() -> None:
    assert AlertSeverity.parse("OK") is AlertSeverity.RESOLVED
    assert AlertSeverity.parse("cleared") is AlertSeverity.RESOLVED
    assert AlertSeverity.parse(" Critical ") is AlertSeverity.CRITICAL
    with pytest.raises(ValueError):
        AlertSeverity.parse("loud")
    assert isinstance(AlertRules(), AlertRules)
