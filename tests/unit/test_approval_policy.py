"""The approval policy: parsing, roles per escalation level, and every refusal."""

from __future__ import annotations

from pathlib import Path

import pytest

from clarion.policy.approval import (
    ApprovalPolicy,
    DecisionFacts,
    FinalOutcome,
    PolicyError,
    Role,
    load_policy,
    parse_policy,
    refusal,
)


def rule(approvals: int = 1):  # type: ignore[no-untyped-def]
    return parse_policy(
        {
            "categories": {
                "billing": {
                    "approvals": approvals,
                    "ladder": [
                        {"roles": ["approver"], "after": "4h"},
                        {"roles": ["compliance"], "after": "2h"},
                    ],
                    "final": "reject",
                }
            }
        }
    ).rules["billing"]


def facts(**kw: object) -> DecisionFacts:
    base: dict[str, object] = {
        "state": "pending",
        "requested_by": "rita",
        "level": 0,
        "approvals_needed": 1,
    }
    return DecisionFacts(**(base | kw))  # type: ignore[arg-type]


def test_defaults_cover_the_high_risk_categories() -> None:
    policy = ApprovalPolicy()
    for category in ("billing", "contract_change", "price_change", "regulatory"):
        assert policy.rule_for(category) is not None
    assert policy.rule_for("crisis_unapproved") is not None
    assert policy.rule_for("shipping") is None
    assert policy.rules["price_change"].approvals == 2
    assert policy.rules["regulatory"].final is FinalOutcome.REJECT


def test_roles_add_up_along_the_ladder() -> None:
    r = rule()
    assert r.roles_at(0) == {Role.APPROVER, Role.ADMIN}
    assert r.roles_at(1) == {Role.APPROVER, Role.COMPLIANCE, Role.ADMIN}
    assert r.ladder[1].after_seconds == 7200


def test_shorthand_role_and_after() -> None:
    r = parse_policy({"categories": {"regulatory": {"role": "compliance", "after": "30m"}}})
    [level] = r.rules["regulatory"].ladder
    assert level.roles == [Role.COMPLIANCE] and level.after == "30m"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"ladder": [{"roles": ["wizard"], "after": "1h"}]}, "categories.billing.ladder.0.roles.0"),
        ({"ladder": [{"roles": ["approver"], "after": "soon"}]}, "soon"),
        ({"ladder": []}, "categories.billing.ladder"),
        ({"ladder": [{"roles": ["approver"], "after": "1h"}], "final": "shrug"}, "final"),
        ({"ladder": [{"roles": ["approver"], "after": "1h"}], "approvals": 0}, "approvals"),
        ("approver", "expected a mapping"),
    ],
)
def test_bad_policy_names_field_and_value(body: object, message: str) -> None:
    with pytest.raises(PolicyError, match=message.replace(".", r"\.")):
        parse_policy({"categories": {"billing": body}})


def test_load_policy_file(tmp_path: Path) -> None:
    path = tmp_path / "approvals.yaml"
    path.write_text("categories:\n  billing:\n    role: approver\n    after: 1h\n")
    assert set(load_policy(path).rules) == {"billing"}
    assert load_policy(None).rule_for("billing") is not None
    path.write_text("categories: [1, 2")
    with pytest.raises(PolicyError, match="invalid YAML"):
        load_policy(path)
    with pytest.raises(PolicyError, match=r"missing\.yaml"):
        load_policy(tmp_path / "missing.yaml")


def test_a_valid_decision_counts() -> None:
    assert (
        refusal(
            facts(), rule(), operator="ann", operator_roles=["approver"], approved=True, reason=""
        )
        is None
    )
    assert (
        refusal(
            facts(), rule(), operator="adm", operator_roles=["admin"], approved=False, reason="no"
        )
        is None
    )


@pytest.mark.parametrize(
    ("fact_changes", "operator", "roles", "approved", "reason", "expected"),
    [
        ({}, "vic", ["viewer"], True, "", "lacks a role"),
        ({}, "carl", ["compliance"], True, "", "lacks a role"),  # not yet: level 0
        ({}, "zed", None, True, "", "unknown operator"),
        ({"requested_by": "ann"}, "ann", ["approver"], True, "", "four-eyes"),
        ({}, "ann", ["approver"], False, "  ", "needs a reason"),
        ({"state": "approved"}, "ann", ["approver"], True, "", "already approved"),
        ({"state": "expired"}, "ann", ["approver"], True, "", "already expired"),
        (
            {"approved_by": ["ann"], "approvals_needed": 2},
            "ann",
            ["approver"],
            True,
            "",
            "already approved",
        ),
    ],
)
def test_refusals(
    fact_changes: dict[str, object],
    operator: str,
    roles: list[str] | None,
    approved: bool,
    reason: str,
    expected: str,
) -> None:
    why = refusal(
        facts(**fact_changes),
        rule(2),
        operator=operator,
        operator_roles=roles,
        approved=approved,
        reason=reason,
    )
    assert why is not None and expected in why


def test_escalated_level_lets_its_roles_decide() -> None:
    assert (
        refusal(
            facts(level=1),
            rule(),
            operator="carl",
            operator_roles=["compliance"],
            approved=True,
            reason="",
        )
        is None
    )


def test_example_policy_loads() -> None:
    path = Path(__file__).resolve().parents[2] / "examples" / "approvals.yaml"
    policy = load_policy(path)
    assert policy.rules["price_change"].approvals == 2
    assert policy.rules["regulatory"].final is FinalOutcome.REJECT
