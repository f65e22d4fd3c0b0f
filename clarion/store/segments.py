"""Audience segments: the journey-condition grammar compiled to SQL over ``customers``.

A crisis broadcast selects its audience with the same safe expression language as journey
``branch`` conditions (:mod:`clarion.expressions`). :func:`compile_segment` turns a parsed
expression into one SQLAlchemy boolean over the ``customers`` table, so the audience is
resolved by the database and no customer is loaded into Python.

The SQL means exactly what :func:`clarion.expressions.evaluate` means over the environment a
journey condition sees (``activities.journeys.condition_env`` without an event):

* names: ``customer.id`` / ``customer.name`` / ``customer.locale`` / ``customer.timezone``
  are the columns (``id`` is ``external_id``); ``customer.<other>`` and ``attributes.<a>...``
  are paths into the ``attributes`` JSON; a bare ``x`` is the attribute ``x``, except the
  four field names, which are always the columns (fields win over attributes of the same
  name, as in the journey condition environment). ``event.*`` and other dotted roots are
  refused.
* a missing value is None; ``==`` is type-aware (bools only equal bools, numbers equal across
  int/float, never strings); ``< <= > >=`` hold only between two numbers or two strings
  (code-point order); ``in`` is membership in a literal list, in a JSON array, a substring
  of a string or a key of an object; a bare name is Python truthiness of its JSON value.

Every comparison is made two-valued (TRUE/FALSE, never NULL), so ``not`` and ``!=`` keep
Python's meaning under SQL's three-valued logic. JSON is inspected per dialect: SQLite
``json_type``/``json_extract``/``json_each``; PostgreSQL ``json_typeof``/``#>>``/
``json_array_elements``/``json_object_keys``, with numeric casts guarded by the type check.
JSON paths are built from identifier-only parts and always passed as bound parameters.
"""

from __future__ import annotations

import math
import operator
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import (
    Numeric,
    Text,
    and_,
    case,
    collate,
    false,
    func,
    literal,
    literal_column,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import TableValuedAlias

from clarion.expressions import (
    And,
    Compare,
    Expr,
    ExpressionError,
    Literal,
    LiteralValue,
    Name,
    Not,
    Or,
    Seq,
    evaluate,
    names,
    parse,
    to_source,
)
from clarion.store.tables import Customer

__all__ = ["DIALECTS", "SegmentError", "compile_segment"]

DIALECTS: frozenset[str] = frozenset({"sqlite", "postgresql"})

Cond = ColumnElement[bool]

# Normalised JSON kinds (a missing value is NULL).
NULL, BOOL, NUMBER, STRING, ARRAY, OBJECT = "null", "bool", "number", "string", "array", "object"
_ANY = frozenset({NULL, BOOL, NUMBER, STRING, ARRAY, OBJECT})
_TEXT_ONLY = frozenset({STRING})

# Customer fields a condition sees, by name; everything else is an attribute.
_FIELDS: dict[str, str] = {
    "id": "external_id",
    "name": "name",
    "locale": "locale",
    "timezone": "timezone",
}
_PART = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_ORDER: dict[str, Callable[[Any, Any], Any]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}
_SQLITE_INT_MIN, _SQLITE_INT_MAX = -(2**63), 2**63 - 1
_MAX_SHOWN = 200


class SegmentError(ValueError):
    """A segment expression that cannot select customers; names the expression and why."""

    def __init__(self, problem: str, expression: str) -> None:
        self.problem = problem
        self.expression = expression
        shown = expression if len(expression) <= _MAX_SHOWN else expression[:_MAX_SHOWN] + "..."
        super().__init__(f"{problem} in segment {shown!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.problem, self.expression))


def compile_segment(expr: Expr | str, dialect: str) -> ColumnElement[bool]:
    """``expr`` as a boolean over ``customers`` for ``dialect`` ("sqlite" or "postgresql").

    Use it in a query over :class:`~clarion.store.tables.Customer`, e.g.
    ``select(Customer.external_id).where(compile_segment("tier == 'gold'", "sqlite"))``.
    Raises :class:`SegmentError` for text that does not parse and for names a segment cannot
    resolve (``event.*``, unknown dotted roots).
    """
    if dialect not in DIALECTS:
        raise ValueError(f"unsupported dialect {dialect!r} (expected one of {sorted(DIALECTS)})")
    if isinstance(expr, str):
        source = expr
        try:
            tree = parse(expr)
        except ExpressionError as exc:
            where = f" (column {exc.position})" if exc.position is not None else ""
            raise SegmentError(f"{exc.problem}{where}", source) from exc
    else:
        tree = expr
        try:
            source = to_source(expr)
        except Exception:
            source = repr(expr)
    backend: _Backend[Any] = _SQLite() if dialect == "sqlite" else _Postgres()
    return _Compiler(backend, source).condition(tree)


# --------------------------------------------------------------------------------------
# Values: what a name denotes, per customer
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Ref:
    """A (JSON-like) value per customer row; ``kinds`` are the kinds it can have."""

    kinds: frozenset[str]


@dataclass(frozen=True, eq=False)
class _LiteRef(_Ref):
    type: ColumnElement[Any]  # json_type()-style name; NULL when missing
    atom: ColumnElement[Any]  # the SQL value of a primitive (text, integer, real, 1/0)
    each: tuple[ColumnElement[Any], ...]  # json_each() arguments, for an array/object
    json: ColumnElement[Any]  # JSON text rooted at '$', for an array/object


@dataclass(frozen=True, eq=False)
class _PgRef(_Ref):
    json: ColumnElement[Any] | None  # a json value (SQL NULL when missing) ...
    column: ColumnElement[Any] | None = None  # ... or a non-null text column


R = TypeVar("R", bound=_Ref)


def _definite(cond: Cond) -> Cond:
    """``cond`` as TRUE/FALSE, never NULL."""
    if _is_constant(cond):
        return cond
    return cast(Cond, case((cond, true()), else_=false()))


def _is_constant(cond: Cond) -> bool:
    return bool(cond.compare(true()) or cond.compare(false()))


def _is_false(cond: Cond) -> bool:
    return bool(cond.compare(false()))


def _any(terms: Iterable[Cond]) -> Cond:
    items = list(terms)
    return or_(*items) if items else false()


def _exists(source: TableValuedAlias, *where: Cond) -> Cond:
    return select(literal(1)).select_from(source).where(*where).exists()


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class _Backend(ABC, Generic[R]):
    """Dialect-specific building blocks; :class:`_Compiler` combines them."""

    @abstractmethod
    def attribute(self, path: tuple[str, ...]) -> R:
        """A path into ``attributes``; ``()`` is the whole attributes object."""

    @abstractmethod
    def column(self, column: ColumnElement[Any]) -> R:
        """A non-null text column."""

    @abstractmethod
    def is_kind(self, ref: R, kind: str) -> Cond:
        """Whether ``ref`` has this kind (missing counts as null); may be NULL."""

    @abstractmethod
    def is_bool(self, ref: R, value: bool) -> Cond: ...

    @abstractmethod
    def num(self, ref: R) -> ColumnElement[Any]:
        """The number (meaningful when the kind is number)."""

    @abstractmethod
    def num_literal(self, value: int | float) -> ColumnElement[Any]: ...

    @abstractmethod
    def text(self, ref: R) -> ColumnElement[Any]:
        """The string (meaningful when the kind is string)."""

    def ordered(self, text: ColumnElement[Any]) -> ColumnElement[Any]:
        """``text`` for ordering comparisons in code-point order."""
        return text

    @abstractmethod
    def contains_text(self, haystack: ColumnElement[Any], needle: Any) -> Cond: ...

    @abstractmethod
    def any_element(self, ref: R, predicate: Callable[[R], Cond]) -> Cond:
        """``ref`` is an array with an element satisfying ``predicate``."""

    @abstractmethod
    def has_key(self, ref: R, key: Any) -> Cond:
        """``ref`` is an object with the key ``key`` (a string)."""

    @abstractmethod
    def nonempty(self, ref: R) -> Cond:
        """``ref`` is a non-empty array or object."""

    @abstractmethod
    def eq_refs(self, a: R, b: R) -> Cond:
        """Type-aware deep equality (missing equals null)."""

    # ---- shared ----------------------------------------------------------------------

    def kind(self, ref: R, kind: str) -> Cond:
        if kind not in ref.kinds:
            return false()
        if ref.kinds == {kind}:
            return true()
        return self.is_kind(ref, kind)


# --------------------------------------------------------------------------------------
# SQLite (json1)
# --------------------------------------------------------------------------------------

_LITE_TYPES: dict[str, tuple[str, ...]] = {
    BOOL: ("true", "false"),
    NUMBER: ("integer", "real"),
    STRING: ("text",),
    ARRAY: ("array",),
    OBJECT: ("object",),
}


def _lite_path(parts: tuple[str, ...]) -> str:
    return "$" + "".join(f'."{part}"' for part in parts)


class _SQLite(_Backend[_LiteRef]):
    def __init__(self) -> None:
        self.doc: ColumnElement[Any] = Customer.__table__.c.attributes

    def attribute(self, path: tuple[str, ...]) -> _LiteRef:
        if not path:
            return _LiteRef(
                kinds=frozenset({OBJECT}),
                type=literal("object"),
                atom=self.doc,
                each=(self.doc,),
                json=self.doc,
            )
        p = literal(_lite_path(path))
        return _LiteRef(
            kinds=_ANY,
            type=func.json_type(self.doc, p),
            atom=func.json_extract(self.doc, p),
            each=(self.doc, p),
            json=func.json_extract(self.doc, p),
        )

    def column(self, column: ColumnElement[Any]) -> _LiteRef:
        return _LiteRef(kinds=_TEXT_ONLY, type=literal("text"), atom=column, each=(), json=column)

    def is_kind(self, ref: _LiteRef, kind: str) -> Cond:
        if kind == NULL:
            return func.coalesce(ref.type, "null") == "null"
        names = _LITE_TYPES[kind]
        return ref.type == names[0] if len(names) == 1 else ref.type.in_(names)

    def is_bool(self, ref: _LiteRef, value: bool) -> Cond:
        return ref.type == ("true" if value else "false")

    def num(self, ref: _LiteRef) -> ColumnElement[Any]:
        return ref.atom

    def num_literal(self, value: int | float) -> ColumnElement[Any]:
        if isinstance(value, int) and not _SQLITE_INT_MIN <= value <= _SQLITE_INT_MAX:
            try:
                value = float(value)
            except OverflowError:
                raise _Refused(f"the number {value} is out of range") from None
        return literal(value)

    def text(self, ref: _LiteRef) -> ColumnElement[Any]:
        return ref.atom

    def contains_text(self, haystack: ColumnElement[Any], needle: Any) -> Cond:
        return func.instr(haystack, needle) > 0

    def _each(self, ref: _LiteRef) -> TableValuedAlias:
        return func.json_each(*ref.each).table_valued("key", "value", "type", "atom")

    def _element(self, each: TableValuedAlias) -> _LiteRef:
        return _LiteRef(
            kinds=_ANY,
            type=each.c["type"],
            atom=each.c["atom"],
            each=(each.c["value"],),
            json=each.c["value"],
        )

    def any_element(self, ref: _LiteRef, predicate: Callable[[_LiteRef], Cond]) -> Cond:
        guard = self.kind(ref, ARRAY)
        if _is_false(guard):
            return false()
        each = self._each(ref)
        return and_(guard, _exists(each, predicate(self._element(each))))

    def has_key(self, ref: _LiteRef, key: Any) -> Cond:
        guard = self.kind(ref, OBJECT)
        if _is_false(guard):
            return false()
        each = self._each(ref)
        return and_(guard, _exists(each, each.c["key"] == key))

    def nonempty(self, ref: _LiteRef) -> Cond:
        guard = or_(self.kind(ref, ARRAY), self.kind(ref, OBJECT))
        if _is_false(guard):
            return false()
        each = self._each(ref)
        return and_(guard, _exists(each, each.c["key"].is_not(None)))

    def eq_refs(self, a: _LiteRef, b: _LiteRef) -> Cond:
        both = a.kinds & b.kinds
        terms: list[Cond] = []
        if NULL in both:
            terms.append(and_(self.kind(a, NULL), self.kind(b, NULL)))
        if BOOL in both:
            terms.append(and_(self.kind(a, BOOL), a.type == b.type))
        for kind in (NUMBER, STRING):
            if kind in both:
                terms.append(and_(self.kind(a, kind), self.kind(b, kind), a.atom == b.atom))
        if both & {ARRAY, OBJECT}:
            containers = or_(self.kind(a, ARRAY), self.kind(a, OBJECT))
            terms.append(and_(containers, a.type == b.type, self._same_tree(a, b)))
        return _any(terms)

    def _same_tree(self, a: _LiteRef, b: _LiteRef) -> Cond:
        """Two arrays/objects are equal when their json_tree()s have the same number of nodes
        and every node of one has a node of the other at the same path (``fullkey``) with an
        equal value (numbers across integer/real). Flat: SQLite's parser stack is shallow."""

        def tree(ref: _LiteRef) -> TableValuedAlias:
            return func.json_tree(ref.json).table_valued("fullkey", "type", "atom")

        count_a = select(func.count()).select_from(tree(a)).scalar_subquery()
        count_b = select(func.count()).select_from(tree(b)).scalar_subquery()
        x, y = tree(a), tree(b)
        xt, yt = x.c["type"], y.c["type"]
        same_node = or_(
            and_(xt.in_(("null", "true", "false", "array", "object")), xt == yt),
            and_(
                xt.in_(_LITE_TYPES[NUMBER]), yt.in_(_LITE_TYPES[NUMBER]), x.c["atom"] == y.c["atom"]
            ),
            and_(xt == "text", yt == "text", x.c["atom"] == y.c["atom"]),
        )
        match = _exists(y, y.c["fullkey"] == x.c["fullkey"], same_node)
        return and_(count_a == count_b, not_(_exists(x, not_(match))))


# --------------------------------------------------------------------------------------
# PostgreSQL (json, not jsonb)
# --------------------------------------------------------------------------------------

_PG_TYPES: dict[str, str] = {
    BOOL: "boolean",
    NUMBER: "number",
    STRING: "string",
    ARRAY: "array",
    OBJECT: "object",
}


def _pg_const(sql: str) -> ColumnElement[Any]:
    """A fixed SQL constant written here (never user text)."""
    return literal_column(sql)


class _Postgres(_Backend[_PgRef]):
    def __init__(self) -> None:
        self.doc: ColumnElement[Any] = Customer.__table__.c.attributes

    def attribute(self, path: tuple[str, ...]) -> _PgRef:
        if not path:
            return _PgRef(kinds=frozenset({OBJECT}), json=self.doc)
        return _PgRef(kinds=_ANY, json=func.json_extract_path(self.doc, *path))

    def column(self, column: ColumnElement[Any]) -> _PgRef:
        return _PgRef(kinds=_TEXT_ONLY, json=None, column=column)

    @staticmethod
    def _json(ref: _PgRef) -> ColumnElement[Any]:
        if ref.json is None:
            if ref.column is None:  # pragma: no cover - construction guarantees one
                raise AssertionError("a reference needs a json value or a column")
            return func.to_json(ref.column)
        return ref.json

    def _typeof(self, ref: _PgRef) -> ColumnElement[Any]:
        return func.json_typeof(self._json(ref))

    def is_kind(self, ref: _PgRef, kind: str) -> Cond:
        if kind == NULL:
            return func.coalesce(self._typeof(ref), "null") == "null"
        return self._typeof(ref) == _PG_TYPES[kind]

    def is_bool(self, ref: _PgRef, value: bool) -> Cond:
        return and_(self.kind(ref, BOOL), self.text(ref) == ("true" if value else "false"))

    def num(self, ref: _PgRef) -> ColumnElement[Any]:
        return case((self._typeof(ref) == "number", self.text(ref).cast(Numeric)))

    def num_literal(self, value: int | float) -> ColumnElement[Any]:
        return literal(repr(value) if isinstance(value, float) else str(value)).cast(Numeric)

    def text(self, ref: _PgRef) -> ColumnElement[Any]:
        if ref.json is None and ref.column is not None:
            return ref.column
        return self._json(ref).op("#>>", return_type=Text)(_pg_const("'{}'"))

    def ordered(self, text: ColumnElement[Any]) -> ColumnElement[Any]:
        return collate(text, "C")

    def contains_text(self, haystack: ColumnElement[Any], needle: Any) -> Cond:
        return func.strpos(haystack, needle) > 0

    def _guarded(self, ref: _PgRef, kind: str, empty: str) -> ColumnElement[Any]:
        """The json value when it has ``kind``, else an empty one (set-returning functions
        raise on the wrong kind, and only CASE guarantees the order of evaluation)."""
        return case((self._typeof(ref) == _PG_TYPES[kind], self._json(ref)), else_=_pg_const(empty))

    def any_element(self, ref: _PgRef, predicate: Callable[[_PgRef], Cond]) -> Cond:
        guard = self.kind(ref, ARRAY)
        if _is_false(guard):
            return false()
        elements = func.json_array_elements(self._guarded(ref, ARRAY, "'[]'::json")).table_valued(
            "value"
        )
        return and_(
            guard, _exists(elements, predicate(_PgRef(kinds=_ANY, json=elements.c["value"])))
        )

    def _keys(self, ref: _PgRef) -> TableValuedAlias:
        return (
            func.json_object_keys(self._guarded(ref, OBJECT, "'{}'::json"))
            .table_valued("key")
            .render_derived()
        )

    def has_key(self, ref: _PgRef, key: Any) -> Cond:
        guard = self.kind(ref, OBJECT)
        if _is_false(guard):
            return false()
        keys = self._keys(ref)
        return and_(guard, _exists(keys, keys.c["key"] == key))

    def nonempty(self, ref: _PgRef) -> Cond:
        terms: list[Cond] = []
        if ARRAY in ref.kinds:
            length = func.json_array_length(self._guarded(ref, ARRAY, "'[]'::json"))
            terms.append(and_(self.kind(ref, ARRAY), length > 0))
        if OBJECT in ref.kinds:
            terms.append(and_(self.kind(ref, OBJECT), _exists(self._keys(ref))))
        return _any(terms)

    def eq_refs(self, a: _PgRef, b: _PgRef) -> Cond:
        if not a.kinds & b.kinds:
            return false()
        if a.json is None and b.json is None:
            return self.text(a) == self.text(b)
        # jsonb equality is JSON's: type-aware, numeric across int/float, deep.
        null = _pg_const("'null'::jsonb")
        return func.coalesce(self._jsonb(a), null) == func.coalesce(self._jsonb(b), null)

    def _jsonb(self, ref: _PgRef) -> ColumnElement[Any]:
        if ref.json is None:
            return func.to_jsonb(ref.column)
        return ref.json.cast(JSONB)


# --------------------------------------------------------------------------------------
# The compiler
# --------------------------------------------------------------------------------------


class _Refused(Exception):
    """Raised inside the compiler; turned into a SegmentError naming the expression."""


# An operand: a resolved name or a literal value.
_Operand = _Ref | Literal


class _Compiler(Generic[R]):
    def __init__(self, backend: _Backend[R], source: str) -> None:
        self.b = backend
        self.source = source
        customers = Customer.__table__.c
        self.columns: dict[str, ColumnElement[Any]] = {
            name: customers[column] for name, column in _FIELDS.items()
        }

    def condition(self, node: Expr) -> ColumnElement[bool]:
        try:
            self._check(node)
            result = self.cond(node)
        except _Refused as exc:
            raise SegmentError(str(exc), self.source) from None
        return result

    # ---- validation --------------------------------------------------------------------

    def _check(self, node: Expr) -> None:
        if isinstance(node, Literal):
            value = node.value
            if value is not None and not isinstance(value, str | int | float | bool):
                raise _Refused(f"unsupported literal {value!r}")
            if isinstance(value, float) and not math.isfinite(value):
                raise _Refused("non-finite numbers are not allowed")
        elif isinstance(node, Name):
            self.resolve(node)
        elif isinstance(node, Seq):
            raise _Refused("a list/tuple is only allowed on the right of 'in' / 'not in'")
        elif isinstance(node, Compare):
            self._check_compare(node)
        elif isinstance(node, And | Or):
            for item in node.items:
                self._check(item)
        elif isinstance(node, Not):
            self._check(node.item)
        else:
            raise _Refused(f"not an expression node: {type(node).__name__}")

    def _check_compare(self, node: Compare) -> None:
        op, left, right = node.op, node.left, node.right
        if not isinstance(left, Name | Literal):
            raise _Refused(f"the left side of {op!r} must be a name or a literal")
        self._check(left)
        if op in ("in", "not in"):
            if isinstance(right, Seq):
                for item in right.items:
                    if not isinstance(item, Literal):
                        raise _Refused("list/tuple items must be literals")
                    self._check(item)
                return
            if not isinstance(right, Name):
                raise _Refused(
                    f"the right side of {op!r} must be a list/tuple of literals or a name"
                )
        elif op in ("is", "is not"):
            if not (isinstance(right, Literal) and right.value is None):
                raise _Refused(f"{op!r} can only be used with None")
        elif op not in _ORDER and op not in ("==", "!="):
            raise _Refused(f"unknown comparison operator {op!r}")
        elif not isinstance(right, Name | Literal):
            raise _Refused(f"the right side of {op!r} must be a name or a literal")
        self._check(right)

    # ---- names -----------------------------------------------------------------------

    def resolve(self, name: Name) -> R:
        path = name.path
        shown = ".".join(str(part) for part in path)
        if not path:
            raise _Refused("an empty name")
        for part in path:
            if not isinstance(part, str) or not _PART.fullmatch(part):
                raise _Refused(f"invalid name {shown!r}")
        root, rest = path[0], path[1:]
        if root == "event":
            raise _Refused(
                f"{shown!r}: segments select customers; event.* exists only in journey conditions"
            )
        if root == "attributes":
            return self.b.attribute(rest)
        if root == "customer":
            if not rest:
                raise _Refused(
                    "'customer' alone is not a value; use customer.<field> or customer.<attribute>"
                )
            head = rest[0]
            if head in _FIELDS:
                if len(rest) > 1:
                    raise _Refused(f"{shown!r}: customer.{head} is text and has no parts")
                return self.b.column(self.columns[head])
            if head == "attributes":
                return self.b.attribute(rest[1:])
            return self.b.attribute(rest)
        if rest:
            raise _Refused(
                f"unknown name {shown!r}: dotted names start with customer. or attributes."
            )
        if root in _FIELDS:
            return self.b.column(self.columns[root])  # fields win over attributes
        return self.b.attribute((root,))

    def operand(self, node: Expr) -> _Operand:
        if isinstance(node, Name):
            return self.resolve(node)
        if isinstance(node, Literal):
            return node
        raise _Refused(f"unexpected operand {type(node).__name__}")  # pragma: no cover

    # ---- conditions ------------------------------------------------------------------

    def cond(self, node: Expr) -> Cond:
        if not names(node):
            # No names: the same value for every customer.
            return true() if evaluate(node, {}) else false()
        if isinstance(node, And):
            return and_(*(self.cond(item) for item in node.items))
        if isinstance(node, Or):
            return or_(*(self.cond(item) for item in node.items))
        if isinstance(node, Not):
            return not_(self.cond(node.item))
        if isinstance(node, Name):
            return _definite(self.truthy(self.resolve(node)))
        if isinstance(node, Compare):
            return self.compare(node)
        raise _Refused(f"unexpected node {type(node).__name__}")  # pragma: no cover

    def compare(self, node: Compare) -> Cond:
        op = node.op
        if op in ("is", "is not"):
            result = _definite(self.is_none(self.operand(node.left)))
            return not_(result) if op == "is not" else result
        if op in ("==", "!="):
            result = _definite(self.eq(self.operand(node.left), self.operand(node.right)))
            return not_(result) if op == "!=" else result
        if op in _ORDER:
            return _definite(self.order(op, self.operand(node.left), self.operand(node.right)))
        # in / not in
        left = self.operand(node.left)
        if isinstance(node.right, Seq):
            result = _definite(self.in_literals(left, node.right.items))
        else:
            result = _definite(self.contains(self.operand(node.right), left))
        return not_(result) if op == "not in" else result

    # ---- the operations (possibly NULL; callers make them definite) ------------------

    def truthy(self, ref: R) -> Cond:
        b = self.b
        terms: list[Cond] = []
        if BOOL in ref.kinds:
            terms.append(b.is_bool(ref, True))
        if NUMBER in ref.kinds:
            terms.append(and_(b.kind(ref, NUMBER), b.num(ref) != b.num_literal(0)))
        if STRING in ref.kinds:
            terms.append(and_(b.kind(ref, STRING), b.text(ref) != ""))
        if ref.kinds & {ARRAY, OBJECT}:
            terms.append(b.nonempty(ref))
        return _any(terms)

    def is_none(self, operand: _Operand) -> Cond:
        if isinstance(operand, Literal):
            return true() if operand.value is None else false()
        return self.b.kind(cast(R, operand), NULL)

    def eq(self, left: _Operand, right: _Operand) -> Cond:
        if isinstance(left, Literal) and isinstance(right, Literal):
            return true() if evaluate(Compare("==", left, right), {}) else false()
        if isinstance(left, Literal):
            left, right = right, left
        if isinstance(right, Literal):
            return self.eq_literal(cast(R, left), right.value)
        return self.b.eq_refs(cast(R, left), cast(R, right))

    def eq_literal(self, ref: R, value: LiteralValue) -> Cond:
        b = self.b
        if value is None:
            return b.kind(ref, NULL)
        if isinstance(value, bool):
            return b.is_bool(ref, value) if BOOL in ref.kinds else false()
        if isinstance(value, int | float):  # not a bool: see above
            if NUMBER not in ref.kinds:
                return false()
            return and_(b.kind(ref, NUMBER), b.num(ref) == b.num_literal(value))
        if STRING not in ref.kinds:
            return false()
        return and_(b.kind(ref, STRING), b.text(ref) == value)

    def in_literals(self, left: _Operand, items: tuple[Literal, ...]) -> Cond:
        if isinstance(left, Literal):
            return true() if evaluate(Compare("in", left, Seq(items)), {}) else false()
        ref = cast(R, left)
        b = self.b
        values = [item.value for item in items]
        terms: list[Cond] = []
        if any(value is None for value in values):
            terms.append(b.kind(ref, NULL))
        for flag in (True, False):
            if any(value is flag for value in values):
                terms.append(self.eq_literal(ref, flag))
        numbers = [value for value in values if _is_number(value)]
        if numbers and NUMBER in ref.kinds:
            literals = [b.num_literal(cast(int | float, n)) for n in dict.fromkeys(numbers)]
            terms.append(and_(b.kind(ref, NUMBER), b.num(ref).in_(literals)))
        strings = [value for value in values if isinstance(value, str)]
        if strings and STRING in ref.kinds:
            terms.append(and_(b.kind(ref, STRING), b.text(ref).in_(list(dict.fromkeys(strings)))))
        return _any(terms)

    def contains(self, container: _Operand, item: _Operand) -> Cond:
        """``item in container``: array membership, substring or object key."""
        b = self.b
        if isinstance(container, Literal):  # pragma: no cover - refused by _check
            raise _Refused("the right side of 'in' must be a list/tuple of literals or a name")
        ref = cast(R, container)
        # A string item (for substring and key tests): the text and the condition it is one.
        needle: Any = None
        is_text: Cond = false()
        if isinstance(item, Literal):
            if isinstance(item.value, str):
                needle, is_text = item.value, true()
        elif STRING in item.kinds:
            needle, is_text = b.text(cast(R, item)), b.kind(cast(R, item), STRING)
        terms: list[Cond] = []
        if STRING in ref.kinds and needle is not None:
            terms.append(and_(b.kind(ref, STRING), is_text, b.contains_text(b.text(ref), needle)))
        if ARRAY in ref.kinds:
            terms.append(b.any_element(ref, lambda element: self.eq(element, item)))
        if OBJECT in ref.kinds and needle is not None:
            terms.append(and_(is_text, b.has_key(ref, needle)))
        return _any(terms)

    def order(self, op: str, left: _Operand, right: _Operand) -> Cond:
        if isinstance(left, Literal) and isinstance(right, Literal):
            return true() if evaluate(Compare(op, left, right), {}) else false()
        if isinstance(left, Literal):
            op, left, right = _FLIPPED[op], right, left
        b = self.b
        compare = _ORDER[op]
        ref = cast(R, left)
        if isinstance(right, Literal):
            value = right.value
            if _is_number(value):
                if NUMBER not in ref.kinds:
                    return false()
                number = cast(int | float, value)
                return and_(b.kind(ref, NUMBER), compare(b.num(ref), b.num_literal(number)))
            if isinstance(value, str):
                if STRING not in ref.kinds:
                    return false()
                return and_(b.kind(ref, STRING), compare(b.ordered(b.text(ref)), value))
            return false()
        other = cast(R, right)
        terms: list[Cond] = []
        if NUMBER in ref.kinds & other.kinds:
            terms.append(
                and_(b.kind(ref, NUMBER), b.kind(other, NUMBER), compare(b.num(ref), b.num(other)))
            )
        if STRING in ref.kinds & other.kinds:
            terms.append(
                and_(
                    b.kind(ref, STRING),
                    b.kind(other, STRING),
                    compare(b.ordered(b.text(ref)), b.ordered(b.text(other))),
                )
            )
        return _any(terms)


async def count_segment(session: AsyncSession, expr: Expr | str) -> int:
    """How many customers the segment selects (counted by the database)."""
    assert session.bind is not None, "the session must be bound to the store's engine"
    where = compile_segment(expr, session.bind.dialect.name)
    found = await session.execute(select(func.count()).select_from(Customer).where(where))
    return int(found.scalar_one())
