"""Journey definitions: the example and test journeys, the JSON schema, validation errors
(with the path of the bad field), shorthands, stored form and hash, deterministic splits."""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from clarion.journeys import (
    JourneyDefinition,
    JourneyError,
    json_schema,
    load_journey_dir,
    load_journey_file,
)
from clarion.journeys.definition import KINDS, SplitVariant
from clarion.journeys.loader import parse_journey
from clarion.journeys.split import assign_variant, split_point
from clarion.templates import load_template_dir, render

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_JOURNEYS = ROOT / "examples" / "journeys"
EXAMPLE_TEMPLATES = ROOT / "examples" / "templates"
TEST_JOURNEYS = ROOT / "tests" / "data" / "journeys"

SEND: dict[str, Any] = {"send": {"template": "t"}}
EXIT: dict[str, Any] = {"exit": None}


def journey(steps: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"name": "j", **top, "steps": steps}


def accepted(raw: dict[str, Any]) -> JourneyDefinition:
    return parse_journey(raw, where="j.yaml")


def refused(raw: dict[str, Any]) -> str:
    with pytest.raises(JourneyError) as info:
        parse_journey(raw, where="j.yaml")
    message = str(info.value)
    assert message.startswith("j.yaml: ")
    return message


def branch(condition: str) -> dict[str, Any]:
    return journey(
        {"check": {"branch": [{"if": condition, "next": "end"}, {"else": "end"}]}, "end": EXIT}
    )


def wait(**fields: Any) -> dict[str, Any]:
    return journey({"pause": {"wait": fields}})


def split(*variants: tuple[str, float]) -> dict[str, Any]:
    return journey(
        {
            "ab": {"split": [{"variant": v, "weight": w, "next": "end"} for v, w in variants]},
            "end": EXIT,
        }
    )


def examples() -> dict[str, JourneyDefinition]:
    return {d.name: d for d in load_journey_dir(EXAMPLE_JOURNEYS)}


def all_definitions() -> list[JourneyDefinition]:
    return [*load_journey_dir(EXAMPLE_JOURNEYS), *load_journey_dir(TEST_JOURNEYS)]


# -- the example journeys and the test journeys


def test_example_journeys_load() -> None:
    found = examples()
    assert sorted(found) == ["onboarding", "renewal", "service-recovery"]

    onboarding = found["onboarding"]
    assert onboarding.entry.events == ["signed_up"]
    assert onboarding.entry.reentry.mode == "never"
    assert onboarding.exit_on == ["unsubscribed"]
    assert onboarding.goal == "activated"
    assert onboarding.start == "welcome"
    nudge_wait = next(s.wait for s in onboarding.steps.values() if s.wait is not None)
    assert nudge_wait.until == "10:00"
    channels = [s.send.channels for s in onboarding.steps.values() if s.send is not None]
    assert [c.value for c in channels[-1]] == ["sms", "email"]

    renewal = found["renewal"]
    assert renewal.entry.events == ["renewal_due"]
    assert (renewal.entry.reentry.mode, renewal.entry.reentry.days) == ("after_days", 300)
    assert renewal.exit_on == ["renewed", "cancelled"]
    assert renewal.goal == "renewed"
    assert [s.kind for s in renewal.steps.values()].count("approval") == 1

    recovery = found["service-recovery"]
    assert recovery.entry.events == ["incident_affected"]
    assert recovery.entry.reentry.mode == "after_completion"
    assert recovery.exit_on == ["unsubscribed"]
    assert {s.kind for s in recovery.steps.values()} >= {"send", "wait", "wait_for", "branch"}


def test_example_journeys_send_only_example_templates() -> None:
    templates = {t.name for t in load_template_dir(EXAMPLE_TEMPLATES)}
    for definition in examples().values():
        missing = definition.templates() - templates
        assert not missing, f"{definition.name} sends unknown templates {sorted(missing)}"


def test_example_journey_templates_render_with_only_the_customer() -> None:
    templates = {t.name: t for t in load_template_dir(EXAMPLE_TEMPLATES)}
    minimal: dict[str, Any] = {
        "customer": {"first_name": "Ada", "name": "Ada L", "attributes": {}},
        "event": {},
        "journey": "x",
        "message_id": "m",
    }
    without_event = {k: v for k, v in minimal.items() if k != "event"}
    for definition in examples().values():
        for name in sorted(definition.templates()):
            template = templates[name]
            assert "en" in template.locales, name
            for locale, variants in template.locales.items():
                assert variants.email is not None and variants.sms is not None, (name, locale)
                for variant in (variants.email, variants.sms):
                    where = f"{name}.{locale}"
                    assert render(variant, minimal, where=where) == render(
                        variant, without_event, where=where
                    )


@pytest.mark.parametrize("path", sorted(TEST_JOURNEYS.glob("*.yaml")), ids=lambda p: p.stem)
def test_test_journeys_load(path: Path) -> None:
    definition = load_journey_file(path)
    assert definition.name == path.stem


def test_load_journey_dir_refuses_an_empty_folder_and_a_name_used_twice(tmp_path: Path) -> None:
    with pytest.raises(JourneyError, match="no journey files"):
        load_journey_dir(tmp_path)
    body = "name: same\nsteps:\n  end:\n    exit:\n"
    (tmp_path / "a.yaml").write_text(body)
    (tmp_path / "b.yaml").write_text(body)
    with pytest.raises(JourneyError, match="journey name 'same' is also used by"):
        load_journey_dir(tmp_path)


# -- JSON schema


def test_json_schema_is_json_with_every_step_kind() -> None:
    text = json_schema()
    schema = json.loads(text)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert schema["title"] == "Clarion journey"
    assert "steps" in schema["properties"]
    for kind in KINDS:
        assert f'"{kind}"' in text, kind
    for field in ("on_event", "on_timeout", "on_approved", "on_rejected", "until", "if", "else"):
        assert f'"{field}"' in text, field


# -- graph: targets, reachability, cycles


@pytest.mark.parametrize(
    ("steps", "path"),
    [
        ({"a": {**SEND, "next": "nowhere"}}, "steps.a.next"),
        (
            {
                "a": {
                    "wait_for": {"event": "e", "timeout": "1d"},
                    "on_event": "nowhere",
                    "on_timeout": "b",
                },
                "b": EXIT,
            },
            "steps.a.on_event",
        ),
        (
            {
                "a": {
                    "wait_for": {"event": "e", "timeout": "1d"},
                    "on_event": "b",
                    "on_timeout": "nowhere",
                },
                "b": EXIT,
            },
            "steps.a.on_timeout",
        ),
        (
            {"a": {"branch": [{"if": "x == 1", "next": "b"}, {"else": "nowhere"}]}, "b": EXIT},
            "steps.a.branch.1.next",
        ),
        (
            {
                "a": {
                    "split": [
                        {"variant": "A", "weight": 1, "next": "nowhere"},
                        {"variant": "B", "weight": 1, "next": "b"},
                    ]
                },
                "b": EXIT,
            },
            "steps.a.split.0.next",
        ),
        (
            {
                "a": {
                    "approval": {
                        "timeout": "1d",
                        "on_approved": "b",
                        "on_rejected": "nowhere",
                        "on_timeout": "b",
                    }
                },
                "b": EXIT,
            },
            "steps.a.approval.on_rejected",
        ),
    ],
)
def test_unknown_step_targets_are_refused(steps: dict[str, Any], path: str) -> None:
    message = refused(journey(steps))
    assert f"{path}: unknown step 'nowhere'" in message


def test_unreachable_step_is_refused() -> None:
    message = refused(journey({"a": {**SEND, "next": "b"}, "b": EXIT, "orphan": SEND}))
    assert "steps.orphan: unreachable from the first step 'a'" in message


def test_cycle_without_a_wait_is_refused() -> None:
    message = refused(journey({"a": {**SEND, "next": "b"}, "b": {**SEND, "next": "a"}}))
    assert "steps: the cycle a -> b -> a never waits" in message
    self_loop = refused(
        journey(
            {
                "a": {"branch": [{"if": "x == 1", "next": "a"}, {"else": "b"}]},
                "b": EXIT,
            }
        )
    )
    assert "the cycle a -> a never waits" in self_loop


def test_cycle_through_a_wait_is_accepted() -> None:
    definition = accepted(
        journey(
            {
                "a": {**SEND, "next": "listen"},
                "listen": {
                    "wait_for": {"event": "ping", "timeout": "1d"},
                    "on_event": "a",
                    "on_timeout": "end",
                },
                "end": EXIT,
            }
        )
    )
    assert definition.start == "a"
    accepted(
        journey({"a": {**SEND, "next": "nap"}, "nap": {"wait": {"duration": "1d"}, "next": "a"}})
    )


# -- durations and times of day


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("3 fortnights", "unknown unit 'fortnights'"),
        ("0s", "a duration must be positive"),
        (-5, "negative"),
        ("1 month", "unknown unit"),
        ("P1M", "months and years"),
    ],
)
def test_bad_durations_are_refused(value: str | int, problem: str) -> None:
    assert "steps.pause.wait.duration: invalid duration" in refused(wait(duration=value))
    assert problem in refused(wait(duration=value))
    timeout = refused(
        journey(
            {
                "w": {
                    "wait_for": {"event": "e", "timeout": value},
                    "on_event": "end",
                    "on_timeout": "end",
                },
                "end": EXIT,
            }
        )
    )
    assert "steps.w.wait_for.timeout: invalid duration" in timeout
    approval = refused(
        journey(
            {
                "ask": {
                    "approval": {
                        "timeout": value,
                        "on_approved": "end",
                        "on_rejected": "end",
                        "on_timeout": "end",
                    }
                },
                "end": EXIT,
            }
        )
    )
    assert "steps.ask.approval.timeout: invalid duration" in approval


@pytest.mark.parametrize("value", ["30s", "3d", "1d12h", "1h 30m", "P3D", "PT2H30M", 45, "45"])
def test_good_durations_are_accepted(value: str | int) -> None:
    step = accepted(wait(duration=value)).steps["pause"]
    assert step.wait is not None and step.wait.delta is not None


def test_until_time_of_day() -> None:
    assert "steps.pause.wait.until: invalid time of day '25:00'" in refused(wait(until="25:00"))
    assert "steps.pause.wait.until" in refused(wait(until="9am"))
    assert "steps.pause.wait: a wait needs a duration" in refused(wait())
    both = accepted(wait(duration="2d", until="10:00")).steps["pause"].wait
    assert both is not None and both.until == "10:00" and both.duration == "2d"
    only_until = accepted(wait(until="9:00")).steps["pause"].wait
    assert only_until is not None and only_until.delta is None


# -- step shapes


def test_a_step_needs_exactly_one_kind() -> None:
    two = refused(journey({"a": {**SEND, "wait": {"duration": "1d"}}}))
    assert "steps.a: a step has exactly one of send, wait" in two
    assert "found ['send', 'wait']" in two
    none = refused(journey({"a": {"next": "a"}}))
    assert "steps.a: a step has exactly one of" in none and "found none" in none


def test_unknown_step_fields_are_refused() -> None:
    assert "steps.a.sned" in refused(journey({"a": {"sned": {"template": "t"}}}))
    assert "steps.a.send.channel" in refused(
        journey({"a": {"send": {"template": "t", "channel": "sms"}}})
    )
    assert "steps.a.send.channels.0" in refused(
        journey({"a": {"send": {"template": "t", "channels": ["fax"]}}})
    )


def test_wait_for_needs_both_outcomes_and_nothing_else_has_them() -> None:
    missing = refused(
        journey({"a": {"wait_for": {"event": "e", "timeout": "1d"}, "on_event": "a"}})
    )
    assert "steps.a: wait_for needs on_event and on_timeout" in missing
    stray = refused(journey({"a": {**SEND, "on_timeout": "b"}, "b": EXIT}))
    assert "steps.a: on_event/on_timeout belong to wait_for steps" in stray


def test_next_on_a_step_that_chooses_is_refused() -> None:
    message = refused(journey({"a": {"branch": [{"else": "b"}], "next": "b"}, "b": EXIT}))
    assert "steps.a: a branch step chooses its next step itself; remove `next`" in message
    exit_with_next = refused(journey({"a": {"exit": "x", "next": "a"}}))
    assert "steps.a:" in exit_with_next and "chooses its next step itself" in exit_with_next


def test_branch_cases() -> None:
    not_last = refused(
        journey({"a": {"branch": [{"else": "b"}, {"if": "x == 1", "next": "b"}]}, "b": EXIT})
    )
    assert "steps.a: `else` must be the last case of a branch" in not_last
    assert "steps.a: branch needs at least one case" in refused(journey({"a": {"branch": []}}))
    neither = refused(journey({"a": {"branch": [{"next": "b"}]}, "b": EXIT}))
    assert "steps.a.branch.0" in neither and "either `if: <condition>` or `else: <step>`" in neither
    definition = accepted(
        journey({"a": {"branch": [{"if": "x == 1", "next": "b"}, {"else": "b"}]}, "b": EXIT})
    )
    cases = definition.steps["a"].branch
    assert cases is not None
    assert (cases[0].condition, cases[0].otherwise) == ("x == 1", False)
    assert (cases[1].condition, cases[1].otherwise, cases[1].next) == (None, True, "b")


def test_branch_condition_with_a_forbidden_construct_is_refused() -> None:
    message = refused(branch("__import__('os')"))
    assert "steps.check.branch.0.if: function calls are not allowed" in message
    assert "steps.check.branch.0.if" in refused(branch("event.__class__ == 1"))
    assert "steps.check.branch.0.if: syntax error" in refused(branch("plan =="))
    assert "steps.check.branch.0.if" in refused(branch("amount + 1 > 2"))


def test_branch_condition_roots() -> None:
    message = refused(branch("foo.bar == 1"))
    assert "steps.check.branch.0.if: 'foo.bar': conditions name attributes" in message
    for condition in (
        "plan == 'pro'",
        "event.amount > 1",
        "customer.locale == 'fr'",
        "attributes.plan in ['pro', 'enterprise']",
        "event.score <= 2 and not vip",
        "referrer is None",
    ):
        accepted(branch(condition))


def test_split_variants() -> None:
    assert "steps.ab: split needs at least two variants" in refused(split(("A", 1)))
    duplicate = refused(split(("A", 1), ("A", 1)))
    assert "steps.ab: split variants must be distinct: ['A', 'A']" in duplicate
    assert "steps.ab.split.0.weight" in refused(split(("A", 0), ("B", 1)))
    assert "steps.ab.split.1.weight" in refused(split(("A", 1), ("B", -1)))
    assert "steps.ab.split.0.variant" in refused(split(("not ok", 1), ("B", 1)))
    accepted(split(("A", 70), ("B", 30)))


# -- entry, exit_on, goal


def test_reentry_forms() -> None:
    def reentry(value: Any) -> dict[str, Any]:
        return journey({"end": EXIT}, entry={"events": ["e"], "reentry": value})

    never = accepted(reentry("never")).entry.reentry
    assert (never.mode, never.days) == ("never", None)
    after = accepted(reentry("after_completion")).entry.reentry
    assert (after.mode, after.days) == ("after_completion", None)
    days = accepted(reentry({"after_days": 30})).entry.reentry
    assert (days.mode, days.days) == ("after_days", 30)
    default = accepted(journey({"end": EXIT})).entry.reentry
    assert default.mode == "after_completion"
    assert "entry.reentry.days" in refused(reentry({"after_days": 0}))
    assert "entry.reentry.mode" in refused(reentry("sometimes"))
    assert "entry.reentry" in refused(reentry("after_days"))


@pytest.mark.parametrize("name", ["has space", "", "-leading-dash", "slash/in/it", "x" * 101])
def test_bad_event_names_are_refused(name: str) -> None:
    assert "entry.events" in refused(journey({"end": EXIT}, entry={"events": [name]}))
    assert "exit_on" in refused(journey({"end": EXIT}, exit_on=[name]))
    assert "goal" in refused(journey({"end": EXIT}, goal=name))
    wait_for = refused(
        journey(
            {
                "w": {
                    "wait_for": {"event": name, "timeout": "1d"},
                    "on_event": "end",
                    "on_timeout": "end",
                },
                "end": EXIT,
            }
        )
    )
    assert "steps.w.wait_for.event" in wait_for


def test_good_event_names_are_accepted() -> None:
    definition = accepted(
        journey(
            {"end": EXIT},
            entry={"events": ["signed_up", "order.paid", "billing:v2", "Renewal-Due"]},
            exit_on=["unsubscribed"],
            goal="activated",
        )
    )
    assert definition.entry.events[1] == "order.paid"


def test_bad_journey_names_and_step_ids_are_refused() -> None:
    assert "name: 'Not OK' is not a journey name" in refused(
        {"name": "Not OK", "steps": {"a": EXIT}}
    )
    assert "steps: 'Bad Id' is not a step id" in refused(journey({"Bad Id": EXIT}))
    assert "steps: a journey needs at least one step" in refused(journey({}))
    with pytest.raises(JourneyError, match="expected a mapping at the top level"):
        parse_journey(["not", "a", "mapping"], where="j.yaml")


# -- files: duplicate keys, shorthands, the file name as the default name


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_duplicate_yaml_keys_are_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "dup.yaml",
        """\
        steps:
          hello:
            send: {template: welcome}
            next: bye
          bye:
            exit: done
          hello:
            exit: again
        """,
    )
    with pytest.raises(JourneyError) as info:
        load_journey_file(path)
    message = str(info.value)
    assert str(path) in message and "duplicate key 'hello'" in message


def test_exit_shorthands_and_default_name(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "shorthands.yaml",
        """\
        steps:
          ask:
            approval: {timeout: 1d, on_approved: ok, on_rejected: nope, on_timeout: bare}
          ok:
            exit: approved
          nope:
            exit: {reason: rejected by a human}
          bare:
            exit:
        """,
    )
    definition = load_journey_file(path)
    assert definition.name == "shorthands"
    reasons = {sid: s.exit.reason for sid, s in definition.steps.items() if s.exit is not None}
    assert reasons == {"ok": "approved", "nope": "rejected by a human", "bare": "completed"}


def test_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.yaml", "steps: [unclosed\n")
    with pytest.raises(JourneyError, match="not valid YAML"):
        load_journey_file(path)


# -- stored form and content hash


def test_content_hash_is_stable_and_follows_the_content() -> None:
    first = examples()["renewal"]
    again = examples()["renewal"]
    assert first.content_hash() == again.content_hash()
    assert first.stored() == again.stored()
    assert len(first.content_hash()) == 64

    raw = first.stored()
    raw["steps"]["wait-second"]["wait"]["duration"] = "22d"
    changed = JourneyDefinition.model_validate(raw)
    assert changed.content_hash() != first.content_hash()
    described = JourneyDefinition.model_validate({**first.stored(), "description": "other"})
    assert described.content_hash() != first.content_hash()


@pytest.mark.parametrize("definition", all_definitions(), ids=lambda d: d.name)
def test_stored_form_round_trips(definition: JourneyDefinition) -> None:
    stored = definition.stored()
    assert json.loads(json.dumps(stored)) == stored
    again = JourneyDefinition.model_validate(stored)
    assert again == definition
    assert again.content_hash() == definition.content_hash()
    assert list(again.steps) == list(definition.steps)  # the first step stays the start


# -- splits


def test_split_assignment_is_deterministic() -> None:
    variants = [
        SplitVariant(variant="A", weight=50, next="a"),
        SplitVariant(variant="B", weight=50, next="b"),
    ]
    for i in range(200):
        customer = f"cust-{i}"
        first = assign_variant(variants, journey="j", step="ab", customer_id=customer)
        second = assign_variant(variants, journey="j", step="ab", customer_id=customer)
        assert first == second
        assert 0.0 <= split_point("j", "ab", customer) < 1.0
    other_step = [
        assign_variant(variants, journey="j", step="cd", customer_id=f"cust-{i}").variant
        for i in range(200)
    ]
    same_step = [
        assign_variant(variants, journey="j", step="ab", customer_id=f"cust-{i}").variant
        for i in range(200)
    ]
    assert other_step != same_step  # each split draws independently


@pytest.mark.parametrize(
    "weights",
    [{"A": 70, "B": 30}, {"A": 1, "B": 1}, {"A": 50, "B": 30, "C": 20}, {"A": 0.9, "B": 0.1}],
)
def test_split_assignment_follows_the_weights(weights: dict[str, float]) -> None:
    variants = [SplitVariant(variant=v, weight=w, next=v.lower()) for v, w in weights.items()]
    n = 4000
    counts = Counter(
        assign_variant(
            variants, journey="onboarding", step="ab", customer_id=f"cust-{i:05d}"
        ).variant
        for i in range(n)
    )
    total = sum(weights.values())
    for name, weight in weights.items():
        share = counts[name] / n
        assert abs(share - weight / total) <= 0.03, (name, share, counts)
