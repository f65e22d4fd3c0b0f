"""A small, safe, Python-like boolean expression language.

Used for journey ``branch`` conditions (evaluated over a customer and an event) and, later,
for audience segments compiled to SQL. Nothing here calls ``eval``/``exec``/``compile`` on
user text: :func:`parse` runs ``ast.parse(text, mode="eval")`` only to get a syntax tree, then
converts it through a strict whitelist into the handful of node types below.

Grammar (a subset of Python expression syntax)::

    expr     := expr 'or' expr | expr 'and' expr | 'not' expr | '(' expr ')'
              | operand (cmp_op operand)+          # chains: 1 < x < 3 -> 1 < x and x < 3
              | operand
    operand  := name | literal
    name     := ident ('.' ident)*                 # event.amount; no part may start with '_'
    literal  := 'str' | int | float | True | False | None | true | false | null | none
    cmp_op   := == != < <= > >= | in | not in      # right of in: (lit, ...) / [lit, ...] / name
              | is None | is not None

Semantics (:func:`evaluate`) never raise: a missing name is None, an ordering comparison
between anything but two numbers or two strings is False, bools only equal bools, numbers
never equal strings.

The module is pure (no I/O, clock or randomness) and imports only ``ast``, ``dataclasses``,
``re`` and ``typing``, so it is safe inside the Temporal workflow sandbox.
"""

from __future__ import annotations

import ast
import re
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "COMPARE_OPS",
    "And",
    "Compare",
    "Expr",
    "ExpressionError",
    "Literal",
    "LiteralValue",
    "Name",
    "Not",
    "Or",
    "Seq",
    "evaluate",
    "names",
    "parse",
    "to_source",
]

LiteralValue: TypeAlias = str | int | float | bool | None

COMPARE_OPS: frozenset[str] = frozenset(
    {"==", "!=", "<", "<=", ">", ">=", "in", "not in", "is", "is not"}
)

# Lowercase spellings accepted as literals (JSON / SQL habits).
_LOWER_LITERALS: dict[str, LiteralValue] = {
    "true": True,
    "false": False,
    "null": None,
    "none": None,
}

# Python keywords cannot be name parts (``event.class`` is a syntax error), so to_source
# refuses them to keep the round trip exact.
_KEYWORDS = frozenset(
    {
        "False",
        "None",
        "True",
        "and",
        "as",
        "assert",
        "async",
        "await",
        "break",
        "class",
        "continue",
        "def",
        "del",
        "elif",
        "else",
        "except",
        "finally",
        "for",
        "from",
        "global",
        "if",
        "import",
        "in",
        "is",
        "lambda",
        "nonlocal",
        "not",
        "or",
        "pass",
        "raise",
        "return",
        "try",
        "while",
        "with",
        "yield",
    }
)

_NAME_PART = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_MAX_SHOWN = 200


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


class ExpressionError(ValueError):
    """An expression that cannot be parsed (or rendered).

    ``problem`` is the bare message, ``expression`` the full text, ``position`` the 0-based
    character offset into ``expression`` (the column, for single-line expressions) when known.
    """

    def __init__(self, problem: str, expression: str, position: int | None = None) -> None:
        self.problem = problem
        self.expression = expression
        self.position = position
        shown = expression if len(expression) <= _MAX_SHOWN else expression[:_MAX_SHOWN] + "..."
        where = f" (column {position})" if position is not None else ""
        super().__init__(f"{problem}{where} in expression {shown!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.problem, self.expression, self.position))


# --------------------------------------------------------------------------------------
# AST
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class Literal:
    """A constant: str, int, float, bool or None.

    Equality is type-aware, so ``Literal(True) != Literal(1)`` (plain dataclass equality
    would follow Python's ``True == 1``).
    """

    value: LiteralValue

    def _key(self) -> tuple[type, LiteralValue]:
        return (type(self.value), self.value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Literal):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


@dataclass(frozen=True, slots=True)
class Name:
    """A dotted lookup into the environment: ``event.amount`` is ``("event", "amount")``."""

    path: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Seq:
    """A tuple/list literal of literals; only valid as the right side of ``in``/``not in``."""

    items: tuple[Literal, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class Compare:
    """One binary comparison; ``op`` is one of :data:`COMPARE_OPS`."""

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Not:
    item: Expr


Expr: TypeAlias = Literal | Name | Seq | Compare | And | Or | Not


# --------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------

_AST_OPS: dict[type[ast.cmpop], str] = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.In: "in",
    ast.NotIn: "not in",
    ast.Is: "is",
    ast.IsNot: "is not",
}

_ARITH_SYMBOLS: dict[type[ast.AST], str] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.MatMult: "@",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.Pow: "**",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.BitAnd: "&",
    ast.Invert: "~",
    ast.USub: "-",
    ast.UAdd: "+",
}

_CONSTRUCTS: dict[type[ast.AST], str] = {
    ast.Call: "function calls",
    ast.Subscript: "subscripts (indexing)",
    ast.Slice: "slices",
    ast.Lambda: "lambda expressions",
    ast.ListComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.GeneratorExp: "generator expressions",
    ast.JoinedStr: "f-strings",
    ast.FormattedValue: "f-strings",
    ast.NamedExpr: "assignment expressions (:=)",
    ast.IfExp: "conditional expressions (x if c else y)",
    ast.Dict: "dict literals",
    ast.Set: "set literals",
    ast.Starred: "starred expressions",
    ast.Await: "await expressions",
    ast.Yield: "yield expressions",
    ast.YieldFrom: "yield expressions",
}


def _describe(node: ast.AST) -> str:
    """A short human name for a Python syntax node, for error messages."""
    if isinstance(node, ast.BinOp | ast.UnaryOp) and type(node.op) in _ARITH_SYMBOLS:
        return f"arithmetic ({_ARITH_SYMBOLS[type(node.op)]!r})"
    return _CONSTRUCTS.get(type(node), f"{type(node).__name__} expressions")


_ONE: dict[type[ast.AST], str] = {
    ast.Call: "a function call",
    ast.Subscript: "a subscript",
    ast.Constant: "a literal",
    ast.Tuple: "a tuple",
    ast.List: "a list",
}


def _forbidden(node: ast.AST) -> str:
    """The error message for a construct outside the whitelist."""
    what = _describe(node)
    verb = "is" if what.startswith("arithmetic") else "are"
    return f"{what} {verb} not allowed"


def _describe_one(node: ast.AST) -> str:
    """Like :func:`_describe`, but for a single node (``attribute access on <this>``)."""
    return _ONE.get(type(node), _describe(node))


class _Converter:
    def __init__(self, text: str, offset: int, max_depth: int) -> None:
        self.text = text  # the full original text, for errors
        self.offset = offset  # characters stripped from the front before ast.parse
        self.max_depth = max_depth
        self.parsed = text[offset:]
        self.line_starts = [0] + [m.end() for m in _LINE_BREAK.finditer(self.parsed)]

    # ---- positions -------------------------------------------------------------------

    def position(self, node: ast.AST) -> int | None:
        lineno = getattr(node, "lineno", None)
        col = getattr(node, "col_offset", None)
        if not isinstance(lineno, int) or not isinstance(col, int):
            return None
        if not 1 <= lineno <= len(self.line_starts):
            return None
        start = self.line_starts[lineno - 1]
        # ast columns are UTF-8 byte offsets; convert to characters.
        line = self.parsed[start:]
        chars = len(line.encode("utf-8")[:col].decode("utf-8", errors="ignore"))
        return self.offset + start + chars

    def syntax_position(self, err: SyntaxError) -> int | None:
        if err.lineno is None or err.offset is None:
            return None
        if not 1 <= err.lineno <= len(self.line_starts):
            return None
        # SyntaxError.offset is a 1-based character offset within the line.
        return self.offset + self.line_starts[err.lineno - 1] + max(err.offset - 1, 0)

    def fail(self, problem: str, node: ast.AST | None = None) -> ExpressionError:
        return ExpressionError(
            problem, self.text, self.position(node) if node is not None else None
        )

    # ---- conversion ------------------------------------------------------------------

    def top(self, node: ast.expr) -> Expr:
        return self.expr(node, 1)

    def expr(self, node: ast.expr, depth: int) -> Expr:
        if depth > self.max_depth:
            raise self.fail(f"expression is nested too deeply (max depth {self.max_depth})", node)
        if isinstance(node, ast.BoolOp):
            items = tuple(self.expr(v, depth + 1) for v in node.values)
            return And(items) if isinstance(node.op, ast.And) else Or(items)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return Not(self.expr(node.operand, depth + 1))
        if isinstance(node, ast.Compare):
            return self.compare(node, depth)
        if isinstance(node, ast.Tuple | ast.List):
            raise self.fail("a list/tuple is only allowed on the right of 'in' / 'not in'", node)
        return self.operand(node)

    def compare(self, node: ast.Compare, depth: int) -> Expr:
        operands = [node.left, *node.comparators]
        pairs: list[Expr] = []
        converted: list[Expr] = [self.operand(node.left, depth + 1)]
        for i, ast_op in enumerate(node.ops):
            op = _AST_OPS[type(ast_op)]
            right_node = operands[i + 1]
            if op in ("in", "not in"):
                right = self.in_right(op, right_node, depth + 1)
            elif op in ("is", "is not"):
                right = self.operand(right_node, depth + 1)
                if right != Literal(None):
                    raise self.fail(
                        f"{op!r} can only be used with None (use == / != to compare values)",
                        right_node,
                    )
            else:
                right = self.operand(right_node, depth + 1)
            left = converted[-1]
            if isinstance(left, Seq):
                raise self.fail(
                    "a list/tuple is only allowed on the right of 'in' / 'not in'", operands[i]
                )
            converted.append(right)
            pairs.append(Compare(op, left, right))
        if len(pairs) == 1:
            return pairs[0]
        return And(tuple(pairs))

    def in_right(self, op: str, node: ast.expr, depth: int) -> Expr:
        if isinstance(node, ast.Tuple | ast.List):
            if depth > self.max_depth:
                raise self.fail(
                    f"expression is nested too deeply (max depth {self.max_depth})", node
                )
            items: list[Literal] = []
            for elt in node.elts:
                lit = self.operand(elt, depth + 1)
                if not isinstance(lit, Literal):
                    raise self.fail(
                        f"list/tuple items must be literals, not {self.what(lit, elt)}", elt
                    )
                items.append(lit)
            return Seq(tuple(items))
        right = self.operand(node, depth)
        if not isinstance(right, Name):
            raise self.fail(
                f"the right side of {op!r} must be a list/tuple of literals or a name, "
                f"not {self.what(right, node)}",
                node,
            )
        return right

    @staticmethod
    def what(value: Expr, node: ast.AST) -> str:
        if isinstance(value, Literal):
            return f"the literal {value.value!r}"
        if isinstance(value, Name):
            return f"the name {'.'.join(value.path)!r}"
        return type(node).__name__

    def operand(self, node: ast.expr, depth: int = 0) -> Expr:
        """A Name or Literal (the only things allowed on either side of a comparison)."""
        if depth > self.max_depth:
            raise self.fail(f"expression is nested too deeply (max depth {self.max_depth})", node)
        if isinstance(node, ast.Constant):
            return self.constant(node.value, node)
        if isinstance(node, ast.Name):
            if node.id in _LOWER_LITERALS:
                return Literal(_LOWER_LITERALS[node.id])
            return Name((self.name_part(node.id, node),))
        if isinstance(node, ast.Attribute):
            return self.attribute(node)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            inner = node.operand
            if (
                isinstance(inner, ast.Constant)
                and isinstance(inner.value, int | float)
                and not isinstance(inner.value, bool)
            ):
                value = inner.value
                return self.constant(-value if isinstance(node.op, ast.USub) else value, node)
            raise self.fail(
                f"{_describe(node)} is not allowed (a sign may only prefix a number)", node
            )
        if isinstance(node, ast.BoolOp | ast.Compare) or (
            isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not)
        ):
            raise self.fail(
                "comparison operands must be names or literals "
                "(combine comparisons with and / or / not instead)",
                node,
            )
        if isinstance(node, ast.Tuple | ast.List):
            raise self.fail("a list/tuple is only allowed on the right of 'in' / 'not in'", node)
        raise self.fail(_forbidden(node), node)

    def constant(self, value: object, node: ast.AST) -> Literal:
        if value is None or isinstance(value, bool | str):
            return Literal(value)
        if isinstance(value, int):
            return Literal(value)
        if isinstance(value, float):
            if value != value or value in (float("inf"), float("-inf")):
                raise self.fail("non-finite numbers are not allowed", node)
            return Literal(value)
        if isinstance(value, bytes):
            raise self.fail("bytes literals are not allowed", node)
        if isinstance(value, complex):
            raise self.fail("complex numbers are not allowed", node)
        if value is Ellipsis:
            raise self.fail("'...' (Ellipsis) is not allowed", node)
        raise self.fail(f"constants of type {type(value).__name__} are not allowed", node)

    def attribute(self, node: ast.Attribute) -> Name:
        parts: list[tuple[str, ast.AST]] = []
        cur: ast.expr = node
        while isinstance(cur, ast.Attribute):
            parts.append((cur.attr, cur))
            cur = cur.value
        if not isinstance(cur, ast.Name):
            raise self.fail(
                f"attribute access on {_describe_one(cur)} is not allowed "
                "(only on names, like event.amount)",
                cur,
            )
        if cur.id in _LOWER_LITERALS:
            raise self.fail(f"attribute access on the literal {cur.id!r} is not allowed", cur)
        path = [self.name_part(cur.id, cur)]
        for attr, attr_node in reversed(parts):
            # The attribute's own column is its base's; point at the attribute name instead.
            path.append(self.name_part(attr, attr_node, after=True))
        return Name(tuple(path))

    def name_part(self, part: str, node: ast.AST, *, after: bool = False) -> str:
        if part.startswith("_"):
            kind = "dunder" if part.startswith("__") and part.endswith("__") else "private"
            raise ExpressionError(
                f"{kind} name {part!r} is not allowed (names may not start with '_')",
                self.text,
                self.part_position(part, node, after=after),
            )
        if not _NAME_PART.fullmatch(part):
            raise ExpressionError(
                f"name {part!r} is not allowed (use ASCII letters, digits and '_')",
                self.text,
                self.part_position(part, node, after=after),
            )
        return part

    def part_position(self, part: str, node: ast.AST, *, after: bool) -> int | None:
        pos = self.position(node)
        if pos is None or not after:
            return pos
        end_pos = self.end_position(node)
        if end_pos is not None and end_pos >= len(part):
            return end_pos - len(part)
        return pos

    def end_position(self, node: ast.AST) -> int | None:
        lineno = getattr(node, "end_lineno", None)
        col = getattr(node, "end_col_offset", None)
        if not isinstance(lineno, int) or not isinstance(col, int):
            return None
        if not 1 <= lineno <= len(self.line_starts):
            return None
        start = self.line_starts[lineno - 1]
        line = self.parsed[start:]
        chars = len(line.encode("utf-8")[:col].decode("utf-8", errors="ignore"))
        return self.offset + start + chars


def parse(text: str, *, max_length: int = 1000, max_depth: int = 32) -> Expr:
    """Parse ``text`` into an :data:`Expr`, or raise :class:`ExpressionError`."""
    if not isinstance(text, str):
        raise ExpressionError(
            f"expression must be a string, not {type(text).__name__}", repr(text)[:_MAX_SHOWN]
        )
    if len(text) > max_length:
        raise ExpressionError(
            f"expression is too long ({len(text)} characters, max {max_length})", text
        )
    body = text.lstrip()
    if not body.strip():
        raise ExpressionError("expression is empty", text)
    conv = _Converter(text, len(text) - len(body), max_depth)
    try:
        tree = ast.parse(body, mode="eval")
    except SyntaxError as err:
        hint = ""
        if _LINE_BREAK.search(body.rstrip()):
            hint = " (wrap a multi-line expression in parentheses)"
        raise ExpressionError(
            f"syntax error: {err.msg}{hint}", text, conv.syntax_position(err)
        ) from None
    except ValueError as err:  # e.g. null bytes on some Python versions
        raise ExpressionError(f"syntax error: {err}", text) from None
    except (RecursionError, MemoryError):
        raise ExpressionError("expression is nested too deeply", text) from None
    try:
        return conv.top(tree.body)
    except RecursionError:
        raise ExpressionError("expression is nested too deeply", text) from None


# --------------------------------------------------------------------------------------
# Introspection and rendering
# --------------------------------------------------------------------------------------


def names(expr: Expr) -> set[tuple[str, ...]]:
    """Every Name path used in ``expr``."""
    found: set[tuple[str, ...]] = set()
    stack: list[Expr] = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, Name):
            found.add(node.path)
        elif isinstance(node, Compare):
            stack.extend((node.left, node.right))
        elif isinstance(node, And | Or):
            stack.extend(node.items)
        elif isinstance(node, Not):
            stack.append(node.item)
    return found


def to_source(expr: Expr) -> str:
    """A canonical rendering; ``parse(to_source(e)) == e`` for every parsed ``e``."""
    return _render(expr)


def _render_literal(value: object) -> str:
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        return repr(int(value))
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ExpressionError("non-finite numbers cannot be rendered", repr(value))
        return repr(float(value))
    if isinstance(value, str):
        return repr(str(value))
    raise ExpressionError(f"unsupported literal type {type(value).__name__}", repr(value))


def _render_name(path: tuple[str, ...]) -> str:
    shown = ".".join(str(p) for p in path)
    if not path:
        raise ExpressionError("a name needs at least one part", shown)
    for part in path:
        if not isinstance(part, str) or not _NAME_PART.fullmatch(part) or part in _KEYWORDS:
            raise ExpressionError(f"invalid name part {part!r}", shown)
    if path[0] in _LOWER_LITERALS:
        raise ExpressionError(f"a name cannot start with the literal {path[0]!r}", shown)
    return shown


def _render(node: Expr) -> str:
    if isinstance(node, Literal):
        return _render_literal(node.value)
    if isinstance(node, Name):
        return _render_name(node.path)
    if isinstance(node, Seq):
        inner = [_render_literal(item.value) for item in node.items]
        if len(inner) == 1:
            return f"({inner[0]},)"
        return "(" + ", ".join(inner) + ")"
    if isinstance(node, Compare):
        if node.op not in COMPARE_OPS:
            raise ExpressionError(f"unknown comparison operator {node.op!r}", repr(node))
        return f"{_render_operand(node.left)} {node.op} {_render_operand(node.right)}"
    if isinstance(node, And | Or):
        word = "and" if isinstance(node, And) else "or"
        if len(node.items) < 2:
            raise ExpressionError(f"'{word}' needs at least two items", repr(node))
        wrap: tuple[type, ...] = (And, Or) if isinstance(node, And) else (Or,)
        return f" {word} ".join(
            f"({_render(item)})" if isinstance(item, wrap) else _render(item) for item in node.items
        )
    if isinstance(node, Not):
        inner_src = _render(node.item)
        if isinstance(node.item, And | Or):
            inner_src = f"({inner_src})"
        return f"not {inner_src}"
    raise ExpressionError(f"not an expression node: {type(node).__name__}", repr(node))


def _render_operand(node: Expr) -> str:
    if isinstance(node, Literal | Name | Seq):
        return _render(node)
    return f"({_render(node)})"


# --------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------

_MISSING = object()


def evaluate(expr: Expr, env: Mapping[str, Any]) -> bool:
    """Evaluate ``expr`` over ``env``. Never raises: anything that goes wrong is False."""
    try:
        return _truthy(_value(expr, env))
    except Exception:
        return False


def _resolve(path: tuple[str, ...], env: Mapping[str, Any]) -> Any:
    cur: Any = env
    for part in path:
        if not isinstance(cur, typing.Mapping):
            return None
        try:
            cur = cur.get(part, None)
        except Exception:
            return None
    return cur


def _truthy(value: Any) -> bool:
    try:
        return bool(value)
    except Exception:
        return False


def _value(node: Expr, env: Mapping[str, Any]) -> Any:
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Name):
        return _resolve(node.path, env)
    if isinstance(node, Seq):
        return tuple(item.value for item in node.items)
    if isinstance(node, Compare):
        return _compare(node, env)
    if isinstance(node, And):
        return all(_truthy(_value(item, env)) for item in node.items)
    if isinstance(node, Or):
        return any(_truthy(_value(item, env)) for item in node.items)
    if isinstance(node, Not):
        return not _truthy(_value(node.item, env))
    raise TypeError(f"not an expression node: {type(node).__name__}")


def _compare(node: Compare, env: Mapping[str, Any]) -> bool:
    try:
        left = _value(node.left, env)
        right = _value(node.right, env)
        op = node.op
        if op == "==":
            return _eq(left, right)
        if op == "!=":
            return not _eq(left, right)
        if op in ("<", "<=", ">", ">="):
            return _order(op, left, right)
        if op == "in":
            return _contains(right, left)
        if op == "not in":
            return not _contains(right, left)
        if op == "is":
            return left is None and right is None
        if op == "is not":
            return not (left is None and right is None)
    except Exception:
        return False
    return False


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _eq(a: Any, b: Any) -> bool:
    """Type-aware equality: bools only equal bools, numbers only numbers, str only str."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    if _is_number(a) or _is_number(b):
        return _is_number(a) and _is_number(b) and bool(a == b)
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and str.__eq__(a, b) is True
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_eq(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, typing.Mapping) and isinstance(b, typing.Mapping):
        if len(a) != len(b):
            return False
        for key, value in a.items():
            other = b.get(key, _MISSING)
            if other is _MISSING or not _eq(value, other):
                return False
        return True
    return type(a) is type(b) and bool(a == b)


def _order(op: str, a: Any, b: Any) -> bool:
    if not ((_is_number(a) and _is_number(b)) or (isinstance(a, str) and isinstance(b, str))):
        return False
    if op == "<":
        return bool(a < b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    return bool(a >= b)


def _contains(container: Any, item: Any) -> bool:
    if isinstance(container, str):
        return isinstance(item, str) and str.__contains__(container, item)
    if isinstance(container, (list, tuple, set, frozenset, typing.Mapping)):
        # Iterating a mapping yields its keys: key containment.
        return any(_eq(item, element) for element in container)
    return False
