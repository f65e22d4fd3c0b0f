"""Segments compiled to SQL select exactly the customers the Python evaluator would.

Every check runs on SQLite and, when CLARION_TEST_POSTGRES_URL is set, on PostgreSQL. Each
test inserts its own customers under a unique id prefix and compares three things: the SQL
result, :func:`clarion.expressions.evaluate` over ``condition_env`` (what a journey condition
sees), and - for the hand-written cases - the expected ids.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

import pytest
from sqlalchemy import case, select

from activities.journeys import condition_env
from clarion.customers import CustomerRecord
from clarion.expressions import Compare, Literal, Name, Seq, evaluate, parse
from clarion.store import Store, repo
from clarion.store.segments import SegmentError, compile_segment
from clarion.store.tables import Customer


async def _insert(store: Store, customers: dict[str, dict[str, Any]]) -> str:
    """Insert ``{key: spec}`` (spec: attributes plus optional _name/_locale/_timezone) under a
    fresh prefix; returns the prefix."""
    prefix = f"seg-{uuid.uuid4().hex[:12]}-"
    async with store.transaction() as session:
        for key, spec in customers.items():
            attributes = {k: v for k, v in spec.items() if not k.startswith("_")}
            record = CustomerRecord(
                external_id=prefix + key,
                name=spec.get("_name", "Test Customer"),
                locale=spec.get("_locale", "en"),
                timezone=spec.get("_timezone", "UTC"),
                attributes=attributes,
            )
            await repo.upsert_customer(session, record=record)
    return prefix


async def _sql_keys(store: Store, prefix: str, expression: str) -> set[str]:
    condition = compile_segment(expression, store.engine.dialect.name)
    query = select(Customer.external_id).where(
        condition, Customer.external_id.startswith(prefix, autoescape=True)
    )
    async with store.session() as session:
        rows = (await session.execute(query)).scalars().all()
    return {row[len(prefix) :] for row in rows}


async def _load(store: Store, prefix: str) -> list[Customer]:
    query = select(Customer).where(Customer.external_id.startswith(prefix, autoescape=True))
    async with store.session() as session:
        return list((await session.execute(query)).scalars().all())


def _python_keys(customers: list[Customer], prefix: str, expression: str) -> set[str]:
    expr = parse(expression)
    return {
        c.external_id[len(prefix) :] for c in customers if evaluate(expr, condition_env(c, None))
    }


async def _check(store: Store, prefix: str, cases: dict[str, set[str]]) -> None:
    """Each expression selects the expected keys, in SQL and in Python."""
    customers = await _load(store, prefix)
    for expression, expected in cases.items():
        python = _python_keys(customers, prefix, expression)
        sql = await _sql_keys(store, prefix, expression)
        assert python == expected, f"python: {expression}"
        assert sql == expected, f"sql ({store.engine.dialect.name}): {expression}"


# ---- hand-written cases ---------------------------------------------------------------


async def test_the_issue_example(store: Store) -> None:
    prefix = await _insert(
        store,
        {
            "a": {"region": "eu-west", "tier": "gold"},
            "b": {"region": "eu-west", "tier": "platinum"},
            "c": {"region": "eu-west", "tier": "silver"},
            "d": {"region": "us-east", "tier": "gold"},
            "e": {"region": "eu-west"},
            "f": {"tier": "gold"},
            "g": {"region": "eu-west", "tier": ["gold"]},
        },
    )
    await _check(
        store,
        prefix,
        {
            "region == 'eu-west' and tier in ('gold', 'platinum')": {"a", "b"},
            "not (region == 'eu-west' and tier in ('gold', 'platinum'))": {"c", "d", "e", "f", "g"},
            "region != 'eu-west' or tier not in ['gold', 'platinum']": {"c", "d", "e", "f", "g"},
        },
    )


async def test_fields_and_attributes(store: Store) -> None:
    prefix = await _insert(
        store,
        {
            "fr": {"_name": "Ana", "_locale": "fr-FR", "_timezone": "Europe/Paris", "plan": "pro"},
            "en": {"_name": "Bob", "_locale": "en", "plan": "free"},
            # An attribute called "name": fields win, so only attributes.name reaches it.
            "shadow": {"_name": "Cy", "name": "Attribute Name", "locale": None},
            "blank": {"_name": ""},
        },
    )
    await _check(
        store,
        prefix,
        {
            "locale == 'fr-FR'": {"fr"},
            "customer.locale == 'fr-FR'": {"fr"},
            "customer.timezone == 'Europe/Paris'": {"fr"},
            "timezone == 'UTC'": {"en", "shadow", "blank"},
            "name == 'Bob'": {"en"},
            "customer.name == 'Cy'": {"shadow"},
            "name == 'Attribute Name'": set(),
            "name == 'Cy'": {"shadow"},
            "attributes.name == 'Attribute Name'": {"shadow"},
            "customer.name == 'Attribute Name'": set(),
            "locale is None": set(),
            "attributes.locale is None": {"shadow", "fr", "en", "blank"},
            "customer.locale is None": set(),
            "customer.name": {"fr", "en", "shadow"},
            "name": {"fr", "en", "shadow"},
            "not customer.name": {"blank"},
            "customer.plan == 'pro'": {"fr"},
            "attributes.plan == 'pro'": {"fr"},
            "customer.attributes.plan == 'free'": {"en"},
            "plan in ('pro', 'free')": {"fr", "en"},
            "'o' in customer.name": {"en"},
            "customer.locale < 'en-US'": {"en", "blank", "shadow"},
            "'plan' in attributes": {"fr", "en"},
            "'plan' not in customer.attributes": {"shadow", "blank"},
            "attributes": {"fr", "en", "shadow"},
        },
    )
    # id: the external id (and the customer's own id attribute would shadow it, bare).
    customers = await _load(store, prefix)
    for expression in (f"id == '{prefix}fr'", f"customer.id == '{prefix}en'", "id > 'seg-'"):
        assert await _sql_keys(store, prefix, expression) == _python_keys(
            customers, prefix, expression
        )
    assert await _sql_keys(store, prefix, f"id == '{prefix}fr'") == {"fr"}


async def test_numbers_bools_and_ordering(store: Store) -> None:
    prefix = await _insert(
        store,
        {
            "int1": {"n": 1},
            "float1": {"n": 1.0},
            "half": {"n": 0.5},
            "big": {"n": 150},
            "neg": {"n": -3},
            "zero": {"n": 0},
            "true": {"n": True},
            "false": {"n": False},
            "str1": {"n": "1"},
            "strb": {"n": "b"},
            "none": {"n": None},
            "missing": {},
        },
    )
    await _check(
        store,
        prefix,
        {
            "n == 1": {"int1", "float1"},
            "n == 1.0": {"int1", "float1"},
            "n != 1": {
                "half",
                "big",
                "neg",
                "zero",
                "true",
                "false",
                "str1",
                "strb",
                "none",
                "missing",
            },
            "n == True": {"true"},
            "n == true": {"true"},
            "n == False": {"false"},
            "n == 0": {"zero"},
            "n == '1'": {"str1"},
            "n > 0.75": {"int1", "float1", "big"},
            "n >= 1": {"int1", "float1", "big"},
            "n < 0": {"neg"},
            "0 < n <= 1": {"int1", "float1", "half"},
            "-3 == n": {"neg"},
            "1 <= n": {"int1", "float1", "big"},
            "n > 'a'": {"strb"},
            "n >= '1'": {"str1", "strb"},
            "not (n > 0)": {"neg", "zero", "true", "false", "str1", "strb", "none", "missing"},
            "n in (1, 'b')": {"int1", "float1", "strb"},
            "n in (True,)": {"true"},
            "n in (0, None)": {"zero", "none", "missing"},
            "n not in (1, True)": {
                "half",
                "big",
                "neg",
                "zero",
                "false",
                "str1",
                "strb",
                "none",
                "missing",
            },
            "n": {"int1", "float1", "half", "big", "neg", "true", "str1", "strb"},
            "not n": {"zero", "false", "none", "missing"},
        },
    )


async def test_missing_values_in_every_operator(store: Store) -> None:
    prefix = await _insert(
        store, {"has": {"v": 5, "s": "abc", "tags": ["x"]}, "none": {"v": None}, "bare": {}}
    )
    await _check(
        store,
        prefix,
        {
            "v == 5": {"has"},
            "v != 5": {"none", "bare"},
            "v == None": {"none", "bare"},
            "v != None": {"has"},
            "v > 1": {"has"},
            "not (v > 1)": {"none", "bare"},
            "v < 1": set(),
            "not v < 1": {"has", "none", "bare"},
            "v <= 'z'": set(),
            "v in (5, 6)": {"has"},
            "v not in (5, 6)": {"none", "bare"},
            "v in (None,)": {"none", "bare"},
            "v in ()": set(),
            "v not in []": {"has", "none", "bare"},
            "'a' in s": {"has"},
            "'a' not in s": {"none", "bare"},
            "'x' in tags": {"has"},
            "'x' not in tags": {"none", "bare"},
            "None in tags": set(),
            "v in tags": set(),
            "v not in tags": {"has", "none", "bare"},
            "v is None": {"none", "bare"},
            "v is not None": {"has"},
            "v": {"has"},
            "not v": {"none", "bare"},
            "missing == missing": {"has", "none", "bare"},
            "missing != v": {"has"},
            "missing < missing": set(),
            "missing in missing": set(),
            "missing not in missing": {"has", "none", "bare"},
            "attributes.a.b.c is None": {"has", "none", "bare"},
            "attributes.s.x is None": {"has", "none", "bare"},
        },
    )


async def test_containment(store: Store) -> None:
    prefix = await _insert(
        store,
        {
            "list": {"tags": ["vip", "beta"], "who": "vip"},
            "mixed": {"tags": [1, True, None, "VIP", [1, 2], {"a": 1}], "who": 1},
            "str": {"tags": "a vip customer", "who": "vip"},
            "obj": {"tags": {"vip": None, "beta": 1}, "who": "beta"},
            "empty": {"tags": [], "who": ""},
            "num": {"tags": 7, "who": 7},
            "none": {"tags": None},
            "missing": {},
        },
    )
    await _check(
        store,
        prefix,
        {
            "'vip' in tags": {"list", "str", "obj"},
            "'vip' not in tags": {"mixed", "empty", "num", "none", "missing"},
            "'VIP' in tags": {"mixed"},
            "1 in tags": {"mixed"},
            "1.0 in tags": {"mixed"},
            "True in tags": {"mixed"},
            "None in tags": {"mixed"},
            "7 in tags": set(),
            "'' in tags": {"str"},
            "who in tags": {"list", "mixed", "str", "obj"},
            "who not in tags": {"empty", "num", "none", "missing"},
            "'beta' in attributes.tags": {"list", "obj"},
            "'who' in attributes": {"list", "mixed", "str", "obj", "empty", "num"},
            "tags": {"list", "mixed", "str", "obj", "num"},
            "not tags": {"empty", "none", "missing"},
            "who in ('vip', 1)": {"list", "mixed", "str"},
        },
    )


async def test_nested_attributes_and_structural_equality(store: Store) -> None:
    prefix = await _insert(
        store,
        {
            "paris": {
                "address": {"city": "Paris", "zip": 75001},
                "home": {"zip": 75001.0, "city": "Paris"},
            },
            "lyon": {"address": {"city": "Lyon", "geo": {"lat": 45.7}}, "home": {"city": "Lyon"}},
            "flat": {"address": "Paris", "home": {}},
            "null": {"address": {"city": None}, "home": None},
            "lists": {"address": [1, 2.0, [3]], "home": [1.0, 2, [3.0]]},
            "missing": {},
        },
    )
    await _check(
        store,
        prefix,
        {
            "attributes.address.city == 'Paris'": {"paris"},
            "customer.address.city == 'Paris'": {"paris"},
            "attributes.address.city != 'Paris'": {"lyon", "flat", "null", "lists", "missing"},
            "attributes.address.city is None": {"flat", "null", "lists", "missing"},
            "attributes.address.geo.lat > 45": {"lyon"},
            "attributes.address.zip >= 75000": {"paris"},
            "'city' in address": {"paris", "lyon", "null"},
            "address": {"paris", "lyon", "flat", "null", "lists"},
            "attributes.home": {"paris", "lyon", "lists"},
            "address == home": {"paris", "lists", "missing"},
            "attributes.address.city == attributes.home.city": {
                "paris",
                "lyon",
                "flat",
                "null",
                "lists",
                "missing",
            },
        },
    )


async def test_deep_nesting_compiles_within_sqlite_parser_limits(store: Store) -> None:
    prefix = await _insert(
        store,
        {
            "eq": {"x": [1, {"a": [2]}], "y": [1.0, {"a": [2.0]}]},
            "ne": {"x": [1, {"a": [2]}], "y": [1, {"a": [2], "b": 3}]},
        },
    )
    # As deep as parse() allows (an even number of nots, around structural equality).
    deep = "not (" * 30 + "x == y" + ")" * 30
    mixed = "'a' in x"
    for i in range(11):
        mixed = f"(not (a == 1 or ({mixed}) and b))" if i % 2 else f"(c and ({mixed}) or x == y)"
    await _check(
        store,
        prefix,
        {deep: {"eq"}, mixed: {"eq"}, f"x == y and {mixed}": {"eq"}, "x != y": {"ne"}},
    )


async def test_segment_in_a_select_list_case(store: Store) -> None:
    """As the broadcast snapshot uses it: tiers as CASE WHEN <segment> THEN i (correlated
    subqueries must bind to the outer customers row there too)."""
    prefix = await _insert(
        store,
        {
            "vip": {"tags": ["vip"], "address": {"city": "Paris"}},
            "paris": {"tags": ["x"], "address": {"city": "Paris"}},
            "other": {"tags": {"vip": 1}},
        },
    )
    dialect = store.engine.dialect.name
    tier = case(
        (compile_segment("'vip' in tags and 'x' not in tags", dialect), 0),
        (compile_segment("attributes.address.city == 'Paris'", dialect), 1),
        else_=-1,
    )
    query = select(Customer.external_id, tier).where(
        Customer.external_id.startswith(prefix, autoescape=True)
    )
    async with store.session() as session:
        rows = (await session.execute(query)).all()
    assert {ext[len(prefix) :]: t for ext, t in rows} == {"vip": 0, "paris": 1, "other": 0}


# ---- refusals -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("event.amount > 100", "event.* exists only in journey conditions"),
        ("plan == 'pro' and event.name == 'x'", "event.* exists only in journey conditions"),
        ("foo.bar == 1", "unknown name 'foo.bar'"),
        ("address.city == 'Paris'", "unknown name 'address.city'"),
        ("customer.name.first == 'A'", "has no parts"),
        ("customer", "'customer' alone"),
        ("plan ==", "syntax error"),
        ("len(tags) > 1", "function calls are not allowed"),
    ],
)
def test_refusals(expression: str, problem: str) -> None:
    for dialect in ("sqlite", "postgresql"):
        with pytest.raises(SegmentError) as caught:
            compile_segment(expression, dialect)
        assert problem in str(caught.value)
        assert repr(expression) in str(caught.value)
        assert caught.value.expression == expression


def test_refuses_unknown_dialects_and_malformed_trees() -> None:
    with pytest.raises(ValueError, match="unsupported dialect"):
        compile_segment("plan == 'pro'", "mysql")
    with pytest.raises(SegmentError, match="must be a name or a literal"):
        compile_segment(Compare("==", Name(("plan",)), Seq((Literal(1),))), "sqlite")
    with pytest.raises(SegmentError, match="unknown comparison operator"):
        compile_segment(Compare("~=", Name(("plan",)), Literal(1)), "sqlite")
    with pytest.raises(SegmentError, match="invalid name"):
        compile_segment(Name(("plan", "no-dash")), "postgresql")


# ---- differential: random customers x random expressions ------------------------------

_POOL: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -3,
    18,
    150,
    0.0,
    1.0,
    4.5,
    -0.25,
    "",
    "pro",
    "gold",
    "vip",
    "Paris",
    "eu-west",
    ["vip", "beta"],
    ["gold"],
    [],
    [1, True, None],
    [1.0, [2], {"a": 1}],
    [1, [2.0], {"a": 1.0}],
    {"city": "Paris", "zip": 75001},
    {"zip": 75001.0, "city": "Paris"},
    {"city": None},
    {},
    {"pro": 1, "vip": None},
]
_ATTRIBUTES = ["plan", "age", "tags", "tier", "flag", "x", "address", "name", "id"]
_NAMES = [
    "plan",
    "age",
    "tags",
    "tier",
    "flag",
    "x",
    "address",
    "missing",
    "name",
    "locale",
    "customer.plan",
    "customer.name",
    "customer.locale",
    "customer.timezone",
    "timezone",
    "id",
    "customer.id",
    "customer.attributes",
    "attributes.tags",
    "attributes.address.city",
    "attributes.address.zip",
    "customer.address.city",
    "attributes",
]
_SCALARS = [
    "'pro'",
    "'gold'",
    "'vip'",
    "''",
    "'Paris'",
    "'fr'",
    "'en'",
    "'t'",
    "0",
    "1",
    "-3",
    "18",
    "150",
    "4.5",
    "1.0",
    "-0.25",
    "75001",
    "1e3",
    "True",
    "False",
    "None",
    "true",
    "null",
]
_ORDER_OPS = ["==", "!=", "<", "<=", ">", ">="]


def _random_customer(rng: random.Random) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "_name": rng.choice(["Ann", "", "Bob", "vip Zoe"]),
        "_locale": rng.choice(["en", "fr-FR", "de"]),
        "_timezone": rng.choice(["UTC", "Europe/Paris"]),
    }
    for attribute in _ATTRIBUTES:
        # "name"/"id" shadow the field for the bare name only; keep them rare.
        if rng.random() < (0.15 if attribute in ("name", "id") else 0.8):
            spec[attribute] = rng.choice(_POOL)
    return spec


def _operand(rng: random.Random, names: float = 0.5) -> str:
    return rng.choice(_NAMES) if rng.random() < names else rng.choice(_SCALARS)


def _comparison(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.45:
        parts = [_operand(rng, 0.9)]
        for _ in range(rng.choice([1, 1, 1, 2])):
            parts += [rng.choice(_ORDER_OPS), _operand(rng)]
        return " ".join(parts)
    if kind < 0.75:
        if rng.random() < 0.5:
            items = [rng.choice(_SCALARS) for _ in range(rng.randint(0, 3))]
            right = "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
            return f"{_operand(rng, 0.9)} {rng.choice(['in', 'not in'])} {right}"
        return f"{_operand(rng)} {rng.choice(['in', 'not in'])} {rng.choice(_NAMES)}"
    if kind < 0.85:
        return f"{_operand(rng, 0.9)} {rng.choice(['is', 'is not'])} None"
    return _operand(rng, 0.9)


def _expression(rng: random.Random, depth: int = 0) -> str:
    roll = rng.random()
    if depth > 2 or roll < 0.5:
        return _comparison(rng)
    if roll < 0.65:
        return f"not ({_expression(rng, depth + 1)})"
    word = rng.choice(["and", "or"])
    return f" {word} ".join(f"({_expression(rng, depth + 1)})" for _ in range(rng.randint(2, 3)))


@pytest.mark.parametrize("seed", [11, 22, 33])
async def test_random_segments_match_the_evaluator(store: Store, seed: int) -> None:
    rng = random.Random(seed)
    prefix = await _insert(store, {f"c{i:02d}": _random_customer(rng) for i in range(40)})
    customers = await _load(store, prefix)
    assert len(customers) == 40
    mismatches: list[str] = []
    selected = 0
    for _ in range(50):
        expression = _expression(rng)
        python = _python_keys(customers, prefix, expression)
        sql = await _sql_keys(store, prefix, expression)
        selected += bool(python) and len(python) < len(customers)
        if sql != python:
            mismatches.append(
                f"{expression}: sql-only {sorted(sql - python)}, python-only {sorted(python - sql)}"
            )
    assert not mismatches, "\n".join(mismatches)
    # The generator is not degenerate: most expressions split the customers.
    assert selected >= 5
