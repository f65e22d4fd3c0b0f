"""Approval policy: which messages need a human decision, from whom, and what happens
when nobody decides. Pure data and functions; the policy file is loaded by the caller.

A policy file (YAML) maps template categories to rules::

    categories:
      billing:
        role: approver            # who may decide at the first level
        approvals: 1              # distinct approvers needed to approve
        ladder:                   # who is asked, and how long each level waits
          - {roles: [approver], after: 4h}
          - {roles: [admin], after: 4h}
        final: expire             # when the ladder runs out: expire or reject

A level's roles may decide from that level on (levels add up: once escalated to
admins, the approvers may still decide). ``admin`` may always decide.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from clarion.policy.timing import parse_duration


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    APPROVER = "approver"
    INCIDENT_MANAGER = "incident_manager"
    COMPLIANCE = "compliance"
    ADMIN = "admin"


class FinalOutcome(StrEnum):
    EXPIRE = "expire"
    REJECT = "reject"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EscalationLevel(_Strict):
    roles: list[Role] = Field(min_length=1)
    after: str  # how long this level waits before the next one is asked

    @field_validator("after")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)  # DurationError (a ValueError) names the bad value
        return value

    @property
    def after_seconds(self) -> float:
        return parse_duration(self.after).total_seconds()


class ApprovalRule(_Strict):
    category: str
    approvals: int = Field(default=1, ge=1, le=5)
    ladder: list[EscalationLevel] = Field(min_length=1)
    final: FinalOutcome = FinalOutcome.EXPIRE

    def roles_at(self, level: int) -> set[Role]:
        """Roles that may decide once the request has reached ``level`` (0-based)."""
        roles: set[Role] = {Role.ADMIN}
        for step in self.ladder[: level + 1]:
            roles.update(step.roles)
        return roles


DEFAULT_LADDER = [
    EscalationLevel(roles=[Role.APPROVER], after="4h"),
    EscalationLevel(roles=[Role.ADMIN], after="4h"),
]

DEFAULT_RULES: dict[str, ApprovalRule] = {
    "billing": ApprovalRule(category="billing", ladder=DEFAULT_LADDER),
    "contract_change": ApprovalRule(category="contract_change", ladder=DEFAULT_LADDER),
    "price_change": ApprovalRule(category="price_change", approvals=2, ladder=DEFAULT_LADDER),
    "regulatory": ApprovalRule(
        category="regulatory",
        ladder=[
            EscalationLevel(roles=[Role.COMPLIANCE], after="8h"),
            EscalationLevel(roles=[Role.ADMIN], after="8h"),
        ],
        final=FinalOutcome.REJECT,
    ),
    "crisis_unapproved": ApprovalRule(
        category="crisis_unapproved",
        ladder=[
            EscalationLevel(roles=[Role.INCIDENT_MANAGER], after="10m"),
            EscalationLevel(roles=[Role.ADMIN], after="10m"),
        ],
    ),
    # Alert intake: launching a proposed broadcast, and sending its resolution notice.
    "incident_launch": ApprovalRule(
        category="incident_launch",
        ladder=[
            EscalationLevel(roles=[Role.INCIDENT_MANAGER], after="10m"),
            EscalationLevel(roles=[Role.ADMIN], after="20m"),
        ],
    ),
    "incident_resolution": ApprovalRule(
        category="incident_resolution",
        ladder=[
            EscalationLevel(roles=[Role.INCIDENT_MANAGER], after="30m"),
            EscalationLevel(roles=[Role.ADMIN], after="2h"),
        ],
    ),
}


class ApprovalPolicy(_Strict):
    rules: dict[str, ApprovalRule] = Field(default_factory=lambda: dict(DEFAULT_RULES))

    def rule_for(self, category: str) -> ApprovalRule | None:
        return self.rules.get(category)


class PolicyError(ValueError):
    pass


def parse_policy(data: Mapping[str, Any], *, source: str = "approval policy") -> ApprovalPolicy:
    """A policy from its YAML mapping; PolicyError names the field and the value."""
    categories = data.get("categories")
    if not isinstance(categories, Mapping):
        raise PolicyError(f"{source}: 'categories' must be a mapping of category -> rule")
    rules: dict[str, ApprovalRule] = {}
    for name, body in categories.items():
        if body is None:
            continue  # "billing:" with nothing under it: no approval for that category
        if not isinstance(body, Mapping):
            raise PolicyError(f"{source}: categories.{name}: expected a mapping, got {body!r}")
        body = dict(body)
        if "role" in body:  # shorthand: one role, default waiting time
            role = body.pop("role")
            body.setdefault("ladder", [{"roles": [role], "after": body.pop("after", "4h")}])
        try:
            rules[str(name)] = ApprovalRule(category=str(name), **body)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise PolicyError(
                f"{source}: categories.{name}.{where}: {first['msg']} (got {first.get('input')!r})"
            ) from None
    return ApprovalPolicy(rules=rules)


def load_policy(path: Path | None) -> ApprovalPolicy:
    """The policy in ``path``, or the built-in defaults when there is none."""
    if path is None:
        return ApprovalPolicy()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise PolicyError(f"approval policy {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise PolicyError(f"approval policy {path}: invalid YAML: {exc}") from None
    if not isinstance(data, Mapping):
        raise PolicyError(f"approval policy {path}: expected a mapping at the top")
    return parse_policy(data, source=str(path))


class DecisionFacts(_Strict):
    """What the gate knows when a decision arrives (all of it in the workflow's state)."""

    state: str  # pending / approved / rejected / expired
    requested_by: str
    level: int
    approvals_needed: int
    approved_by: list[str] = Field(default_factory=list)


def refusal(
    facts: DecisionFacts,
    rule: ApprovalRule,
    *,
    operator: str,
    operator_roles: Iterable[str] | None,
    approved: bool,
    reason: str,
) -> str | None:
    """Why this decision is refused, or None when it counts.

    ``operator_roles`` is None for an unknown operator."""
    if facts.state != "pending":
        return f"the request is already {facts.state}"
    if operator_roles is None:
        return f"unknown operator {operator!r}"
    allowed = rule.roles_at(facts.level)
    if not allowed.intersection(Role(r) for r in operator_roles if r in Role.__members__.values()):
        wanted = ", ".join(sorted(r.value for r in allowed))
        return f"operator {operator!r} lacks a role that may decide now ({wanted})"
    if operator == facts.requested_by:
        return f"operator {operator!r} requested this message and cannot decide on it (four-eyes)"
    if operator in facts.approved_by:
        return f"operator {operator!r} has already approved; another approver is needed"
    if not approved and not reason.strip():
        return "a rejection needs a reason"
    return None
