"""Many-row INSERTs for the bulk writers (a broadcast chunk's delivery rows and audit
events): the statement SQLAlchemy compiles, run through the driver's executemany with
the parameters converted here.

SQLAlchemy's own executemany path builds a dictionary of every row's parameters, runs the
type processors over it and turns it into the driver's positional form again: about
10 us of CPU per row of a delivery on the machine Clarion is benchmarked on, against
2.5 us here. What reaches the driver is the same: the statement is SQLAlchemy's,
compiled once per table, columns and dialect; each value goes through the processor of
its column's type (remembered by identity within one call: a chunk's rows share their
timestamp and their audit detail); a column a row leaves out takes its scalar default.

When that cannot be done the same way (a positional paramstyle other than ``?`` or
``$n``, a bind that is not a column, a column left out whose default is not a plain
value), the rows go through SQLAlchemy's executemany as before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, insert
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

PARAMSTYLES = ("qmark", "numeric_dollar")  # SQLite's and asyncpg's: no escaping of %


@dataclass(frozen=True, slots=True)
class _Prepared:
    sql: str
    binds: tuple[tuple[str, Callable[[Any], Any] | None], ...]  # in the statement's order
    defaults: dict[str, Any]  # columns the rows leave out: their scalar defaults


_NOT_FAST = _Prepared("", (), {})
_PREPARED: dict[tuple[Dialect, str, tuple[str, ...], str | None], _Prepared] = {}
_MISSING = object()


def _statement(dialect: Dialect, table: Table, skip_existing: str | None) -> Any:
    if skip_existing is None:
        return insert(table)
    build = postgresql_insert if dialect.name == "postgresql" else sqlite_insert
    return build(table).on_conflict_do_nothing(index_elements=[skip_existing])


def _prepare(
    dialect: Dialect, table: Table, keys: tuple[str, ...], skip_existing: str | None
) -> _Prepared:
    cache_key = (dialect, table.name, keys, skip_existing)
    prepared = _PREPARED.get(cache_key)
    if prepared is not None:
        return prepared
    prepared = _NOT_FAST
    if dialect.paramstyle in PARAMSTYLES:
        compiled = _statement(dialect, table, skip_existing).compile(
            dialect=dialect, column_keys=list(keys)
        )
        order = compiled.positiontup or []
        processors = compiled._bind_processors
        defaults: dict[str, Any] = {}
        fast = True
        for name in order:
            if name in keys:
                continue
            column = table.c.get(name)
            default = None if column is None else column.default
            if default is None or not default.is_scalar:
                fast = False
                break
            defaults[name] = default.arg  # type: ignore[attr-defined]
        if fast:
            prepared = _Prepared(
                sql=compiled.string,
                binds=tuple((name, processors.get(name)) for name in order),
                defaults=defaults,
            )
    _PREPARED[cache_key] = prepared
    return prepared


def _parameters(prepared: _Prepared, rows: Sequence[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Each row as the driver takes it: a tuple of processed values, in bind order."""
    width = len(prepared.binds)
    seen: list[Any] = [_MISSING] * width  # per bind: the last value given ...
    made: list[Any] = [None] * width  # ... and what its processor made of it
    defaults = prepared.defaults
    out: list[tuple[Any, ...]] = []
    for row in rows:
        values: list[Any] = []
        for i, (name, process) in enumerate(prepared.binds):
            value = row.get(name, _MISSING)
            if value is _MISSING:
                if name not in defaults:
                    raise KeyError(f"a row has no value for column {name!r}")
                value = defaults[name]
            if process is not None:
                if value is seen[i]:
                    value = made[i]
                else:
                    seen[i] = value
                    value = made[i] = process(value)
            values.append(value)
        out.append(tuple(values))
    return out


def insert_rows_sync(
    connection: Connection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    *,
    skip_existing: str | None = None,
) -> None:
    """INSERT ``rows`` (dictionaries with the same keys) into ``table``; with
    ``skip_existing``, rows whose value of that unique column is there already are left
    out (ON CONFLICT DO NOTHING). On a synchronous connection (inside ``run_sync``)."""
    if not rows:
        return
    dialect = connection.dialect
    prepared = _prepare(dialect, table, tuple(rows[0]), skip_existing)
    if prepared is _NOT_FAST:
        connection.execute(_statement(dialect, table, skip_existing), list(rows))
    else:
        connection.exec_driver_sql(prepared.sql, _parameters(prepared, rows))


async def insert_rows(
    connection: AsyncConnection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    *,
    skip_existing: str | None = None,
) -> None:
    """:func:`insert_rows_sync` on an async connection."""
    if rows:
        await connection.run_sync(insert_rows_sync, table, rows, skip_existing=skip_existing)
