"""The safe boolean expression language: parsing, refusals, evaluation, rendering."""

from __future__ import annotations

import math
import pickle
import random
from typing import Any

import pytest

from clarion.expressions import (
    And,
    Compare,
    Expr,
    ExpressionError,
    Literal,
    Name,
    Not,
    Or,
    Seq,
    evaluate,
    names,
    parse,
    to_source,
)

ENV: dict[str, Any] = {
    "plan": "pro",
    "event": {"amount": 150, "data": {"score": 4.7}},
    "tier": "gold",
    "region": "eu-west",
    "tags": ["vip"],
    "customer": {"locale": "fr-FR"},
    "country": "DE",
    "age": 30,
    "attributes": {"plan": "pro"},
    "x": None,
}

# (expression, result over ENV)
EXAMPLES: list[tuple[str, bool]] = [
    ("plan == 'pro' and event.amount > 100", True),
    ("region == 'eu-west' and tier in ('gold', 'platinum')", True),
    ("not (country == 'FR') or customer.locale == 'fr-FR'", True),
    ("event.data.score >= 4.5", True),
    ("'vip' in tags", True),
    ("'gold' in tags", False),
    ("attributes.plan != None", True),
    ("age >= 18 and age < 65", True),
    ("plan not in ['free']", True),
    ("true", True),
    ("False", False),
    ("x is None", True),
    ("x is not None", False),
    ("plan", True),
    ("missing", False),
    ("null", False),
    ("18 <= age < 65", True),
    ("event.amount > -1.5", True),
]


# ---- parsing ---------------------------------------------------------------------------


def test_parse_builds_the_expected_tree() -> None:
    assert parse("plan == 'pro' and event.amount > 100") == And(
        (
            Compare("==", Name(("plan",)), Literal("pro")),
            Compare(">", Name(("event", "amount")), Literal(100)),
        )
    )
    assert parse("tier in ('gold', 'platinum')") == Compare(
        "in", Name(("tier",)), Seq((Literal("gold"), Literal("platinum")))
    )
    assert parse("plan not in ['free']") == Compare(
        "not in", Name(("plan",)), Seq((Literal("free"),))
    )
    assert parse("not (country == 'FR') or b") == Or(
        (Not(Compare("==", Name(("country",)), Literal("FR"))), Name(("b",)))
    )
    assert parse("x is not None") == Compare("is not", Name(("x",)), Literal(None))
    assert parse("x is none") == Compare("is", Name(("x",)), Literal(None))
    assert parse("'vip' in tags") == Compare("in", Literal("vip"), Name(("tags",)))


def test_lowercase_and_python_literals() -> None:
    assert parse("true") == Literal(True)
    assert parse("True") == Literal(True)
    assert parse("false") == Literal(False)
    assert parse("False") == Literal(False)
    assert parse("null") == Literal(None)
    assert parse("none") == Literal(None)
    assert parse("None") == Literal(None)
    assert parse("-3") == Literal(-3)
    assert parse("+2.5") == Literal(2.5)


def test_literal_equality_is_type_aware() -> None:
    assert Literal(True) != Literal(1)
    assert Literal(1) != Literal(1.0)
    assert Literal("a") == Literal("a")
    assert parse("x == 1") != parse("x == True")
    assert len({Literal(True), Literal(1)}) == 2


def test_chained_comparisons_become_and() -> None:
    assert parse("1 < x < 3") == And(
        (Compare("<", Literal(1), Name(("x",))), Compare("<", Name(("x",)), Literal(3)))
    )
    assert parse("a == b != c <= 4") == And(
        (
            Compare("==", Name(("a",)), Name(("b",))),
            Compare("!=", Name(("b",)), Name(("c",))),
            Compare("<=", Name(("c",)), Literal(4)),
        )
    )
    assert evaluate(parse("1 < x < 3"), {"x": 2})
    assert not evaluate(parse("1 < x < 3"), {"x": 3})
    assert not evaluate(parse("1 < x < 3"), {"x": "2"})
    assert not evaluate(parse("1 < x < 3"), {})


def test_parenthesised_groups_are_kept() -> None:
    a, b, c = Name(("a",)), Name(("b",)), Name(("c",))
    assert parse("a and b and c") == And((a, b, c))
    assert parse("(a and b) and c") == And((And((a, b)), c))
    assert parse("a or b and c") == Or((a, And((b, c))))
    assert parse("(a or\n  b)") == Or((a, b))
    assert parse("  a  ") == a


@pytest.mark.parametrize(("text", "expected"), EXAMPLES)
def test_examples_evaluate(text: str, expected: bool) -> None:
    assert evaluate(parse(text), ENV) is expected


# ---- refusals --------------------------------------------------------------------------

REFUSED: list[tuple[str, str, int | None]] = [
    ("__import__('os')", "function calls are not allowed", 0),
    ("open('x')", "function calls are not allowed", 0),
    ("x.y()", "function calls are not allowed", 0),
    ("a == len(b)", "function calls are not allowed", 5),
    ("a[0]", "subscripts (indexing) are not allowed", 0),
    ("a + 1", "arithmetic ('+') is not allowed", 0),
    ("age * 2 > 10", "arithmetic ('*') is not allowed", 0),
    ("-x", "arithmetic ('-') is not allowed", 0),
    ("~x", "arithmetic ('~') is not allowed", 0),
    ("open('x').read", "attribute access on a function call is not allowed", 0),
    ("'abc'.upper", "attribute access on a literal is not allowed", 0),
    ("x.__class__", "dunder name '__class__' is not allowed", 2),
    ("a.b.__dict__ == 1", "dunder name '__dict__' is not allowed", 4),
    ("_x", "private name '_x' is not allowed", 0),
    ("a and _secret.y", "private name '_secret' is not allowed", 6),
    ("lambda: 1", "lambda expressions are not allowed", 0),
    ("[x for x in y]", "comprehensions are not allowed", 0),
    ("x in (y for y in z)", "generator expressions are not allowed", 5),
    ("f'{x}' == 'a'", "f-strings are not allowed", 0),
    ("(y := 1)", "assignment expressions (:=) are not allowed", 1),
    ("x is 1", "'is' can only be used with None", 5),
    ("x is not 'a'", "'is not' can only be used with None", 9),
    ("x is y", "'is' can only be used with None", 5),
    ("x in 3", "the right side of 'in' must be a list/tuple of literals or a name", 5),
    ("x not in 'abc'", "the right side of 'not in' must be", 9),
    ("x in (a, 1)", "list/tuple items must be literals", 6),
    ("x in {1, 2}", "set literals are not allowed", 5),
    ("{'a': 1}", "dict literals are not allowed", 0),
    ("1 if x else 2", "conditional expressions", 0),
    ("x == (1, 2)", "a list/tuple is only allowed on the right of 'in'", 5),
    ("(1, 2)", "a list/tuple is only allowed on the right of 'in'", 0),
    ("(a == b) == c", "comparison operands must be names or literals", 1),
    ("x == b'a'", "bytes literals are not allowed", 5),
    ("x == 1j", "complex numbers are not allowed", 5),
    ("x == 1e999", "non-finite numbers are not allowed", 5),
    ("é == 1", "name 'é' is not allowed", 0),
    ("(yield)", "yield expressions are not allowed", 1),
    ("true.x", "attribute access on the literal 'true'", 0),
    ("  f(x)", "function calls are not allowed", 2),
    ("'é' == f(x)", "function calls are not allowed", 7),
    ("(a or\n  f(b))", "function calls are not allowed", 8),
]


@pytest.mark.parametrize(("text", "message", "position"), REFUSED)
def test_forbidden_constructs_are_refused(text: str, message: str, position: int | None) -> None:
    with pytest.raises(ExpressionError) as info:
        parse(text)
    err = info.value
    assert message in err.problem
    assert message in str(err)
    assert repr(text) in str(err)
    assert err.expression == text
    assert err.position == position


@pytest.mark.parametrize(
    "text", ["", "   ", "\n", "a ==", "and", "x = 1", "import os", "a b", "plan\n== 'pro'"]
)
def test_empty_and_syntax_errors(text: str) -> None:
    with pytest.raises(ExpressionError) as info:
        parse(text)
    assert isinstance(info.value, ValueError)
    assert info.value.expression == text


def test_syntax_error_position_and_multiline_hint() -> None:
    with pytest.raises(ExpressionError, match="syntax error") as info:
        parse("a == == b")
    assert info.value.position == 5
    with pytest.raises(ExpressionError, match="parentheses"):
        parse("plan == 'pro'\n and x")


def test_length_limit() -> None:
    text = "x" * 1001
    with pytest.raises(ExpressionError, match="too long"):
        parse(text)
    assert parse("x" * 1000) == Name(("x" * 1000,))
    with pytest.raises(ExpressionError, match="too long"):
        parse("a and b", max_length=5)


def test_depth_limit() -> None:
    assert parse("not " * 31 + "x") is not None
    with pytest.raises(ExpressionError, match="nested too deeply"):
        parse("not " * 32 + "x")
    nested = "(" * 40 + "a and b" + ")" * 40
    assert parse(nested) == And((Name(("a",)), Name(("b",))))  # parentheses alone are free
    deep = "a"
    for i in range(40):
        deep = f"(b{i} or {deep})"
    with pytest.raises(ExpressionError, match="nested too deeply"):
        parse(deep)
    assert parse(deep, max_depth=100) is not None
    with pytest.raises(ExpressionError, match="nested too deeply"):
        parse("a == 1", max_depth=1)


def test_pathological_inputs_are_refused_cleanly() -> None:
    for text in ["(" * 300 + "x" + ")" * 300, "not " * 240 + "x", "x\0"]:
        with pytest.raises(ExpressionError):
            parse(text)
    with pytest.raises(ExpressionError, match="must be a string"):
        parse(123)  # type: ignore[arg-type]


def test_expression_error_pickles() -> None:
    err = ExpressionError("bad thing", "a + 1", 2)
    again = pickle.loads(pickle.dumps(err))
    assert isinstance(again, ExpressionError)
    assert (again.problem, again.expression, again.position) == ("bad thing", "a + 1", 2)
    assert str(again) == str(err)


# ---- evaluation ------------------------------------------------------------------------


def test_missing_names_are_none_and_never_raise() -> None:
    env: dict[str, Any] = {"event": {"amount": 5}, "plan": "pro", "s": "text"}
    for text in [
        "nope",
        "nope.deeper.still",
        "event.missing",
        "event.amount.more",
        "plan.sub",
        "s.upper",
        "nope > 3",
        "nope == 'x'",
        "'a' in nope",
    ]:
        assert evaluate(parse(text), env) is False, text
    assert evaluate(parse("nope is None"), env) is True
    assert evaluate(parse("event.missing is None"), env) is True
    assert evaluate(parse("'a' not in nope"), env) is True
    assert evaluate(parse("nope != 'x'"), env) is True
    assert evaluate(parse("not nope"), env) is True
    assert evaluate(parse("nope == None"), env) is True


def test_ordering_type_mismatch_is_false() -> None:
    env: dict[str, Any] = {"n": 5, "s": "5", "b": True, "none": None, "f": 2.5, "l": [1]}
    for text in ["n > s", "n < s", "s >= n", "b > 0", "b >= True", "f < none", "l > 0", "n > x"]:
        assert evaluate(parse(text), env) is False, text
        # The negation is the plain opposite: the comparison itself is False.
        assert evaluate(parse(f"not ({text})"), env) is True, text
    assert evaluate(parse("n > f"), env) is True
    assert evaluate(parse("'apple' < 'banana'"), env) is True
    assert evaluate(parse("n >= 5 and n <= 5.0"), env) is True


def test_equality_is_type_aware() -> None:
    env: dict[str, Any] = {"t": True, "one": 1, "zero": 0, "s": "1", "f": 1.0, "n": None}
    assert evaluate(parse("t == 1"), env) is False
    assert evaluate(parse("one == True"), env) is False
    assert evaluate(parse("zero == false"), env) is False
    assert evaluate(parse("t == true"), env) is True
    assert evaluate(parse("t != 1"), env) is True
    assert evaluate(parse("one == s"), env) is False
    assert evaluate(parse("one == f"), env) is True
    assert evaluate(parse("n == 0"), env) is False
    assert evaluate(parse("n == ''"), env) is False
    assert evaluate(parse("1 in (True, 2)"), env) is False
    assert evaluate(parse("t in (1, 2)"), env) is False
    assert evaluate(parse("t in (true,)"), env) is True
    assert evaluate(parse("a == b"), {"a": [1, "x"], "b": (1, "x")}) is True
    assert evaluate(parse("a == b"), {"a": [1], "b": [True]}) is False
    assert evaluate(parse("a == b"), {"a": {"k": 1}, "b": {"k": 1}}) is True
    assert evaluate(parse("a == b"), {"a": {"k": 1}, "b": {"k": True}}) is False


def test_membership() -> None:
    env: dict[str, Any] = {
        "tags": ["vip", "beta"],
        "tset": {"a", "b"},
        "ttuple": ("x",),
        "name": "Alexandra",
        "prefs": {"email": True},
        "num": 7,
        "nums": [1, 2.5],
    }
    assert evaluate(parse("'vip' in tags"), env)
    assert evaluate(parse("'a' in tset"), env)
    assert evaluate(parse("'x' in ttuple"), env)
    assert evaluate(parse("'xand' in name"), env)
    assert evaluate(parse("'email' in prefs"), env)
    assert not evaluate(parse("True in prefs"), env)
    assert evaluate(parse("2.5 in nums and 1.0 in nums"), env)
    assert not evaluate(parse("'1' in nums"), env)
    assert not evaluate(parse("1 in name"), env)  # non-str in str: False, no TypeError
    assert evaluate(parse("1 not in name"), env)
    assert not evaluate(parse("'a' in num"), env)  # not a container
    assert evaluate(parse("'a' not in num"), env)
    assert not evaluate(parse("x in ()"), env)
    assert evaluate(parse("x not in []"), env)
    assert evaluate(parse("num in (1, 7)"), env)
    assert not evaluate(parse("missing in (1, 7)"), env)
    assert evaluate(parse("missing in (1, None)"), env)


class _Hostile:
    """An env value that fails at everything."""

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("eq")

    def __hash__(self) -> int:
        raise RuntimeError("hash")

    def __bool__(self) -> bool:
        raise RuntimeError("bool")

    def __lt__(self, other: object) -> bool:
        raise RuntimeError("lt")

    def __iter__(self) -> Any:
        raise RuntimeError("iter")

    def __contains__(self, item: object) -> bool:
        raise RuntimeError("contains")


class _HostileMapping(dict[str, Any]):
    def get(self, key: str, default: Any = None) -> Any:
        raise RuntimeError("get")


class _HostileStr(str):
    def __lt__(self, other: object) -> bool:
        raise RuntimeError("lt")


def _weird_envs() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    deep: Any = "bottom"
    for _ in range(5000):
        deep = [deep]
    return [
        ENV,
        {},
        {"plan": _Hostile(), "event": _Hostile(), "tags": _Hostile(), "age": _Hostile()},
        {"event": _HostileMapping(amount=1), "plan": _HostileStr("pro")},
        _HostileMapping(plan="pro"),
        {"plan": None, "event": None, "tags": None, "age": None},
        {"plan": loop, "tags": loop, "age": deep, "event": {"amount": math.nan}},
        {"plan": b"pro", "tags": {1, 2}, "age": 1 + 2j, "event": {"amount": math.inf}},
        {"plan": {"pro": 1}, "tags": "vip", "age": True, "event": {"amount": "150"}},
        {"plan": object(), "tags": range(3), "age": -0.0, "event": [1, 2]},
        None,
        "not a mapping",
        [("plan", "pro")],
    ]


def test_evaluate_never_raises_on_hostile_envs() -> None:
    exprs = [parse(text) for text, _ in EXAMPLES] + [
        parse("plan == age"),
        parse("tags == plan"),
        parse("plan in tags and tags not in plan"),
        parse("age < plan or age >= plan"),
        parse("not plan and not tags or event"),
    ]
    for env in _weird_envs():
        for expr in exprs:
            assert isinstance(evaluate(expr, env), bool)


def test_evaluate_over_hand_built_trees() -> None:
    # Not reachable through parse, but a SQL compiler or a caller may build these.
    assert evaluate(Seq((Literal(1),)), {}) is True
    assert evaluate(Seq(()), {}) is False
    assert evaluate(Compare("<", And((Literal(True), Literal(True))), Literal(2)), {}) is False
    assert evaluate(Compare("is", Name(("x",)), Literal(True)), {"x": True}) is False
    assert evaluate(Compare("??", Literal(1), Literal(1)), {}) is False
    assert evaluate("not an expression", {}) is False  # type: ignore[arg-type]
    tower: Expr = Literal(True)
    for _ in range(5000):
        tower = Not(tower)
    assert evaluate(tower, {}) is False  # RecursionError swallowed


def test_names() -> None:
    expr = parse(
        "plan == 'pro' and (event.amount > 100 or not customer.locale in tags) and x is None"
    )
    assert names(expr) == {
        ("plan",),
        ("event", "amount"),
        ("customer", "locale"),
        ("tags",),
        ("x",),
    }
    assert names(parse("true and 1 < 2")) == set()
    assert names(parse("a < b < c")) == {("a",), ("b",), ("c",)}


# ---- rendering -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [text for text, _ in EXAMPLES]
    + [
        "1 < x < 3",
        "(a and b) and c or not (d or e)",
        "not not a",
        "x in [] or y not in (1, 2.5, 'z', None, True)",
        "a.b.c == 'é\\n'",
    ],
)
def test_to_source_round_trips(text: str) -> None:
    expr = parse(text)
    src = to_source(expr)
    assert parse(src) == expr
    assert to_source(parse(src)) == src


def test_to_source_is_canonical() -> None:
    assert to_source(parse("plan not in ['free']")) == "plan not in ('free',)"
    assert to_source(parse("x in []")) == "x in ()"
    assert to_source(parse("not (country == 'FR')")) == "not country == 'FR'"
    assert to_source(parse("not (a or b)")) == "not (a or b)"
    assert to_source(parse("(a and b) and (c or d) or e")) == "(a and b) and (c or d) or e"
    assert to_source(parse("(a or b) or c")) == "(a or b) or c"
    assert to_source(parse("1 < x < 3")) == "1 < x and x < 3"
    assert to_source(parse("x == true and y is null")) == "x == True and y is None"
    assert to_source(parse('s == "it\'s"')) == 's == "it\'s"'
    assert to_source(parse("n > -2.5e-10")) == "n > -2.5e-10"


def test_to_source_refuses_unrenderable_trees() -> None:
    bad: list[Expr] = [
        Name(("true",)),
        Name(("a", "class")),
        Name(("_x",)),
        Name(()),
        Literal(math.nan),
        Literal(b"x"),  # type: ignore[arg-type]
        And((Name(("a",)),)),
        Or(()),
        Compare("===", Name(("a",)), Literal(1)),
    ]
    for expr in bad:
        with pytest.raises(ExpressionError):
            to_source(expr)


# ---- property-style: random expressions -----------------------------------------------

_NAMES = [
    "plan",
    "age",
    "tags",
    "tier",
    "x",
    "event.amount",
    "event.data.score",
    "customer.locale",
    "missing.deep.path",
]
_SCALARS = [
    "'pro'",
    "'gold'",
    "'vip'",
    "''",
    "'it\\'s'",
    "0",
    "1",
    "-3",
    "18",
    "150",
    "4.5",
    "-0.25",
    "1e3",
    "True",
    "False",
    "None",
    "true",
    "false",
    "null",
]
_ORDER_OPS = ["==", "!=", "<", "<=", ">", ">="]


def _operand(rng: random.Random) -> str:
    return rng.choice(_NAMES) if rng.random() < 0.6 else rng.choice(_SCALARS)


def _seq(rng: random.Random) -> str:
    items = [rng.choice(_SCALARS) for _ in range(rng.randint(0, 4))]
    if rng.random() < 0.5:
        return "[" + ", ".join(items) + "]"
    if len(items) == 1:
        return f"({items[0]},)"
    return "(" + ", ".join(items) + ")"


def _comparison(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.45:
        parts = [_operand(rng)]
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            parts += [rng.choice(_ORDER_OPS), _operand(rng)]
        return " ".join(parts)
    if kind < 0.75:
        right = _seq(rng) if rng.random() < 0.6 else rng.choice(_NAMES)
        return f"{_operand(rng)} {rng.choice(['in', 'not in'])} {right}"
    if kind < 0.9:
        return f"{_operand(rng)} {rng.choice(['is', 'is not'])} {rng.choice(['None', 'null'])}"
    return _operand(rng)


def _expression(rng: random.Random, depth: int = 0) -> str:
    roll = rng.random()
    if depth > 4 or roll < 0.35:
        return _comparison(rng)
    if roll < 0.5:
        inner = _expression(rng, depth + 1)
        return f"not {inner}" if rng.random() < 0.5 else f"not ({inner})"
    word = rng.choice(["and", "or"])
    items = [_expression(rng, depth + 1) for _ in range(rng.randint(2, 3))]
    items = [f"({item})" if rng.random() < 0.5 else item for item in items]
    return f" {word} ".join(items)


def _random_env(rng: random.Random) -> dict[str, Any]:
    values: list[Any] = [
        None,
        True,
        False,
        0,
        1,
        -3,
        18,
        150,
        4.5,
        math.nan,
        "",
        "pro",
        "gold",
        "vip",
        ["vip", "beta"],
        ("gold",),
        {"vip"},
        {"pro": 1},
        [1, True, None],
        _Hostile(),
    ]
    env: dict[str, Any] = {}
    for name in ["plan", "age", "tags", "tier", "x"]:
        if rng.random() < 0.85:
            env[name] = rng.choice(values)
    if rng.random() < 0.8:
        env["event"] = {"amount": rng.choice(values), "data": {"score": rng.choice(values)}}
    elif rng.random() < 0.5:
        env["event"] = rng.choice(values)
    if rng.random() < 0.7:
        env["customer"] = {"locale": rng.choice(["fr-FR", "en-GB", None, 3])}
    return env


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_random_expressions_round_trip_and_never_raise(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(120):
        text = _expression(rng)
        expr = parse(text, max_length=10_000, max_depth=64)
        src = to_source(expr)
        assert parse(src, max_length=10_000, max_depth=64) == expr, (text, src)
        assert to_source(parse(src, max_length=10_000, max_depth=64)) == src
        assert all(isinstance(path, tuple) and path for path in names(expr))
        for _ in range(4):
            env = _random_env(rng)
            result = evaluate(expr, env)
            assert isinstance(result, bool)
            # Rendering does not change meaning.
            assert evaluate(parse(src, max_length=10_000, max_depth=64), env) is result


@pytest.mark.parametrize("seed", [10, 11, 12])
def test_random_garbage_is_refused_or_parsed_never_crashes(seed: int) -> None:
    rng = random.Random(seed)
    alphabet = [
        *"abx_.()[]{}'\"0123456789 +-*/<>=!,:;@~^%&|\\\n",
        " and ",
        " or ",
        " not ",
        " in ",
        " is ",
        " lambda ",
        "__class__",
        "None",
        "true",
    ]
    parsed = 0
    for _ in range(400):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        try:
            expr = parse(text)
        except ExpressionError as err:
            assert err.expression == text
            assert err.position is None or 0 <= err.position <= len(text)
            continue
        parsed += 1
        assert parse(to_source(expr)) == expr
        assert isinstance(evaluate(expr, ENV), bool)
    assert parsed > 0
