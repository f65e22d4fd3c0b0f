"""Journey definitions: YAML files validated by a pydantic schema.

    name: onboarding
    description: Welcome new customers and help them activate.
    entry:
      events: [signed_up]        # these events start the journey (signal-with-start)
      reentry: never             # never | after_completion | {after_days: 30}
    exit_on: [unsubscribed]      # end the journey wherever it stands
    goal: activated              # recorded as a conversion; ends the journey
    steps:                       # an ordered mapping: the first step is where it starts
      welcome:
        send: {template: welcome, channels: [email]}
        next: wait-activation
      wait-activation:
        wait_for: {event: activated, timeout: 3d}
        on_event: done
        on_timeout: tips
      ...

Step kinds (exactly one per step): send, wait, wait_for, branch, split, approval, exit.
A step without ``next`` (send, wait) ends the journey as completed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from datetime import timedelta
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from clarion.expressions import ExpressionError, names, parse
from clarion.models import Channel, Purpose
from clarion.policy.timing import parse_duration, parse_time_of_day

ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
EVENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
# Roots a branch condition may name: customer fields and attributes, the event.
CONDITION_ROOTS = {"customer", "event", "attributes"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _duration(value: str | int | float) -> str | int | float:
    parse_duration(value)  # DurationError is a ValueError: pydantic reports it with the field
    return value


def _event_name(value: str) -> str:
    if not EVENT_RE.match(value):
        raise ValueError(f"{value!r} is not an event name (letters, digits, . _ : -)")
    return value


class SendStep(_Strict):
    template: str
    purpose: Purpose | None = None
    channels: list[Channel] = Field(default_factory=lambda: [Channel.EMAIL], min_length=1)
    context: dict[str, Any] = Field(default_factory=dict)


class WaitStep(_Strict):
    duration: str | int | None = None
    until: str | None = None  # local time of day in the customer's time zone, "09:00"

    @field_validator("duration")
    @classmethod
    def _d(cls, value: str | int | None) -> str | int | None:
        return None if value is None else _duration(value)  # type: ignore[return-value]

    @field_validator("until")
    @classmethod
    def _u(cls, value: str | None) -> str | None:
        if value is not None:
            parse_time_of_day(value)
        return value

    @model_validator(mode="after")
    def _one(self) -> WaitStep:
        if self.duration is None and self.until is None:
            raise ValueError("a wait needs a duration, an until time of day, or both")
        return self

    @property
    def delta(self) -> timedelta | None:
        return None if self.duration is None else parse_duration(self.duration)


class WaitForStep(_Strict):
    event: str
    timeout: str | int

    @field_validator("event")
    @classmethod
    def _event(cls, value: str) -> str:
        return _event_name(value)

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: str | int) -> str | int:
        return _duration(value)  # type: ignore[return-value]


class BranchCase(_Strict):
    condition: str | None = Field(default=None, alias="if")
    otherwise: bool = Field(default=False, alias="else")
    next: str

    @model_validator(mode="before")
    @classmethod
    def _else_form(cls, data: Any) -> Any:
        # `- else: step-id` is the readable form of the default case.
        if isinstance(data, dict) and "else" in data and isinstance(data["else"], str):
            if "if" in data or "next" in data:
                raise ValueError(
                    "a branch case has either `if: <condition>` and `next`, or `else: <step>`"
                )
            return {"else": True, "next": data["else"]}
        return data

    @field_validator("condition")
    @classmethod
    def _parse(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            expr = parse(value)
        except ExpressionError as exc:
            raise ValueError(str(exc)) from None
        for path in names(expr):
            if len(path) == 1 or path[0] in CONDITION_ROOTS:
                continue
            raise ValueError(
                f"{'.'.join(path)!r}: conditions name attributes, customer.* or event.*"
            )
        return value

    @model_validator(mode="after")
    def _one(self) -> BranchCase:
        if (self.condition is None) == (not self.otherwise):
            raise ValueError("a branch case has either `if: <condition>` or `else: <step>`")
        return self


class SplitVariant(_Strict):
    variant: str = Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")
    weight: float = Field(gt=0)
    next: str


class ApprovalStep(_Strict):
    timeout: str | int
    on_approved: str
    on_rejected: str
    on_timeout: str
    # The approval policy's category (who decides, escalation); without a rule for it,
    # approvers decide within the timeout.
    category: str = Field(default="journey", pattern=r"^[a-z0-9_]{1,64}$")
    template: str | None = None  # shown to the approver as the preview, when given

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: str | int) -> str | int:
        return _duration(value)  # type: ignore[return-value]


class ExitStep(_Strict):
    reason: str = "completed"


StepKind = Literal["send", "wait", "wait_for", "branch", "split", "approval", "exit"]
KINDS: tuple[StepKind, ...] = ("send", "wait", "wait_for", "branch", "split", "approval", "exit")
WAITING_KINDS = {"wait", "wait_for", "approval"}


class Step(_Strict):
    send: SendStep | None = None
    wait: WaitStep | None = None
    wait_for: WaitForStep | None = None
    branch: list[BranchCase] | None = None
    split: list[SplitVariant] | None = None
    approval: ApprovalStep | None = None
    exit: ExitStep | None = None
    next: str | None = None
    on_event: str | None = None
    on_timeout: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _exit_shorthand(cls, data: Any) -> Any:
        # `exit: reason` and a bare `exit:` (only when no other step kind is given).
        if isinstance(data, dict) and "exit" in data:
            value = data["exit"]
            others = any(data.get(k) is not None for k in KINDS if k != "exit")
            if isinstance(value, str) or (value is None and not others):
                return {**data, "exit": {"reason": value or "completed"}}
        return data

    @model_validator(mode="after")
    def _shape(self) -> Step:
        kinds = [k for k in KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(
                f"a step has exactly one of {', '.join(KINDS)}; found {kinds or 'none'}"
            )
        kind = kinds[0]
        if kind == "wait_for":
            if not self.on_event or not self.on_timeout:
                raise ValueError("wait_for needs on_event and on_timeout")
        elif self.on_event or self.on_timeout:
            raise ValueError("on_event/on_timeout belong to wait_for steps")
        if kind in ("branch", "split", "approval", "exit", "wait_for") and self.next:
            raise ValueError(f"a {kind} step chooses its next step itself; remove `next`")
        if kind == "branch":
            cases = self.branch or []
            if not cases:
                raise ValueError("branch needs at least one case")
            defaults = [i for i, c in enumerate(cases) if c.otherwise]
            if defaults and defaults != [len(cases) - 1]:
                raise ValueError("`else` must be the last case of a branch, and only one")
        if kind == "split":
            variants = [v.variant for v in self.split or []]
            if len(variants) < 2:
                raise ValueError("split needs at least two variants")
            if len(set(variants)) != len(variants):
                raise ValueError(f"split variants must be distinct: {variants}")
        return self

    @property
    def kind(self) -> StepKind:
        return next(k for k in KINDS if getattr(self, k) is not None)

    def targets(self) -> list[tuple[str, str]]:
        """(field path, step id) for every step this one can lead to."""
        out: list[tuple[str, str]] = []
        for name in ("next", "on_event", "on_timeout"):
            value = getattr(self, name)
            if value:
                out.append((name, value))
        for i, case in enumerate(self.branch or []):
            out.append((f"branch.{i}.next", case.next))
        for i, variant in enumerate(self.split or []):
            out.append((f"split.{i}.next", variant.next))
        if self.approval is not None:
            for name in ("on_approved", "on_rejected", "on_timeout"):
                out.append((f"approval.{name}", getattr(self.approval, name)))
        return out


class Reentry(_Strict):
    mode: Literal["never", "after_completion", "after_days"] = "after_completion"
    days: int | None = Field(default=None, ge=1, le=3650)

    @model_validator(mode="before")
    @classmethod
    def _short(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"mode": data}
        if isinstance(data, dict) and "after_days" in data:
            return {"mode": "after_days", "days": data["after_days"]}
        return data

    @model_validator(mode="after")
    def _days(self) -> Reentry:
        if (self.mode == "after_days") != (self.days is not None):
            raise ValueError("after_days needs a number of days: {after_days: 30}")
        return self


class Entry(_Strict):
    events: list[str] = Field(default_factory=list)
    reentry: Reentry = Field(default_factory=Reentry)

    @field_validator("events")
    @classmethod
    def _events(cls, value: list[str]) -> list[str]:
        return [_event_name(v) for v in value]


class JourneyDefinition(_Strict):
    name: str
    description: str = ""
    entry: Entry = Field(default_factory=Entry)
    exit_on: list[str] = Field(default_factory=list)
    goal: str | None = None
    steps: dict[str, Step]

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_RE.match(value):
            raise ValueError(f"{value!r} is not a journey name (lower-case letters, digits, . _ -)")
        return value

    @field_validator("exit_on")
    @classmethod
    def _exits(cls, value: list[str]) -> list[str]:
        return [_event_name(v) for v in value]

    @field_validator("goal")
    @classmethod
    def _goal(cls, value: str | None) -> str | None:
        return None if value is None else _event_name(value)

    @field_validator("steps")
    @classmethod
    def _ids(cls, value: dict[str, Step]) -> dict[str, Step]:
        if not value:
            raise ValueError("a journey needs at least one step")
        for key in value:
            if not ID_RE.match(key):
                raise ValueError(f"{key!r} is not a step id (lower-case letters, digits, _ -)")
        return value

    @model_validator(mode="after")
    def _graph(self) -> JourneyDefinition:
        for problem in graph_problems(self.steps):
            raise ValueError(problem)
        return self

    @property
    def start(self) -> str:
        return next(iter(self.steps))

    def templates(self) -> set[str]:
        return {s.send.template for s in self.steps.values() if s.send is not None}

    def stored(self) -> dict[str, Any]:
        """The JSON form kept in the store."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def content_hash(self) -> str:
        # Key order counts: the first step is where the journey starts.
        data = json.dumps(self.stored(), separators=(",", ":"))
        return hashlib.sha256(data.encode()).hexdigest()


def graph_problems(steps: dict[str, Step]) -> Iterable[str]:
    """Unknown targets, unreachable steps, and cycles that never wait."""
    for sid, step in steps.items():
        for path, target in step.targets():
            if target not in steps:
                yield f"steps.{sid}.{path}: unknown step {target!r}"
    if not steps:
        return
    start = next(iter(steps))
    seen = {start}
    todo = [start]
    while todo:
        for _, target in steps[todo.pop()].targets():
            if target in steps and target not in seen:
                seen.add(target)
                todo.append(target)
    for sid in steps:
        if sid not in seen:
            yield f"steps.{sid}: unreachable from the first step {start!r}"
    # A cycle must pass through a step that waits, or the journey would spin forever.
    moving = {
        sid: [t for _, t in step.targets() if t in steps and steps[t].kind not in WAITING_KINDS]
        for sid, step in steps.items()
        if step.kind not in WAITING_KINDS
    }
    colour: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        colour[node] = 1
        for nxt in moving.get(node, []):
            if colour.get(nxt) == 1:
                return [*trail[trail.index(nxt) :], nxt] if nxt in trail else [node, nxt]
            if colour.get(nxt, 0) == 0:
                found = visit(nxt, [*trail, nxt])
                if found:
                    return found
        colour[node] = 2
        return None

    for sid in moving:
        if colour.get(sid, 0) == 0:
            cycle = visit(sid, [sid])
            if cycle:
                loop = " -> ".join(cycle)
                yield f"steps: the cycle {loop} never waits (add a wait, wait_for or approval)"
                return
