"""clarion.store.bulk: many-row INSERTs through the driver store what SQLAlchemy's own
executemany stores, on every backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast

from sqlalchemy import Table, insert, select

from clarion.store import Store
from clarion.store.bulk import _NOT_FAST, _prepare, insert_rows, insert_rows_sync
from clarion.store.tables import AuditEvent, Delivery
from tests.conftest import uid

DELIVERIES = cast(Table, Delivery.__table__)
EVENTS = cast(Table, AuditEvent.__table__)


def _delivery(key: str, i: int, at: datetime, **more: Any) -> dict[str, Any]:
    """A delivery row as a broadcast chunk writes it (provider_status, journey and
    fell_back left to their defaults)."""
    return {
        "attempt_id": f"{key}-{i}:email",
        "message_id": f"{key}-{i}",
        "workflow_id": f"wf-{key}",
        "customer_external_id": f"cust-{i}",
        "channel": "email",
        "template": "crisis-outage",
        "template_version": 3,
        "purpose": "service",
        "status": "sent",
        "provider": "smtp",
        "provider_message_id": f"<{key}-{i}@example.com>",
        "error": "" if i % 2 else "first: 450 try later",
        "tries": 1 + i % 2,
        "created_at": at,
        "updated_at": at,
        "sent_at": at if i % 3 else None,
        "segment": "gold" if i % 2 else "",
    } | more


def _rows(key: str) -> list[dict[str, Any]]:
    now = datetime(2026, 11, 24, 21, 30, 5, 123456, tzinfo=UTC)
    paris = timezone(timedelta(hours=1))
    later = datetime(2026, 11, 24, 23, 0, 0, 1, tzinfo=paris)  # not UTC: converted
    rows = [_delivery(key, i, now) for i in range(5)]  # one timestamp object, shared
    rows += [_delivery(key, i, later) for i in range(5, 8)]
    rows += [_delivery(key, 8, now + timedelta(microseconds=1))]
    return rows


async def _read(
    store: Store, table: Table, key_column: str, keys: list[Any]
) -> list[dict[str, Any]]:
    async with store.session() as session:
        result = await session.execute(
            select(table).where(table.c[key_column].in_(keys)).order_by(table.c[key_column])
        )
        return [dict(row._mapping) for row in result]


async def test_delivery_rows_are_stored_as_sqlalchemy_stores_them(store: Store) -> None:
    ours, theirs = uid("bulk"), uid("core")
    async with store.transaction() as session:
        connection = await session.connection()
        await insert_rows(connection, DELIVERIES, _rows(ours), skip_existing="attempt_id")
        await connection.execute(insert(DELIVERIES), _rows(theirs))
    mine = await _read(store, DELIVERIES, "attempt_id", [r["attempt_id"] for r in _rows(ours)])
    core = await _read(store, DELIVERIES, "attempt_id", [r["attempt_id"] for r in _rows(theirs)])
    assert len(mine) == len(core) == 9
    for a, b in zip(mine, core, strict=True):
        for name in ("attempt_id", "message_id", "workflow_id", "provider_message_id"):
            assert a.pop(name).replace(ours, theirs) == b.pop(name)
        assert a == b
    assert mine[0]["created_at"] == datetime(2026, 11, 24, 21, 30, 5, 123456, tzinfo=UTC)
    assert mine[5]["sent_at"] == datetime(2026, 11, 24, 22, 0, 0, 1, tzinfo=UTC)
    assert mine[0]["fell_back"] is False and mine[0]["journey"] == ""
    assert mine[0]["sent_at"] is None and mine[1]["tries"] == 2


async def test_rows_there_already_are_left_out(store: Store) -> None:
    key = uid("again")
    first = _rows(key)[:4]
    retried = [r | {"status": "failed", "error": "retried"} for r in _rows(key)]
    async with store.transaction() as session:
        await insert_rows(await session.connection(), DELIVERIES, first, skip_existing="attempt_id")
    async with store.transaction() as session:
        await insert_rows(
            await session.connection(), DELIVERIES, retried, skip_existing="attempt_id"
        )
    stored = await _read(store, DELIVERIES, "attempt_id", [r["attempt_id"] for r in retried])
    assert [r["status"] for r in stored] == ["sent"] * 4 + ["failed"] * 5


async def test_audit_events_with_shared_and_own_details(store: Store) -> None:
    """The JSON detail goes through its processor, remembered only for the same object."""
    shared = {"broadcast": "b-1", "gen": 2, "tier": 0, "note": "café ✓"}
    at = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)

    def events(key: str) -> list[dict[str, Any]]:
        return [
            {
                "at": at,
                "kind": "sent",
                "customer_external_id": f"c-{i}",
                "message_id": f"{key}-{i}",
                "workflow_id": "wf",
                "channel": "email" if i % 2 else None,
                "actor": "system",
                "reason": "",
                "detail": shared if i < 3 else {"own": i, "list": [i, None]},
                "dedupe_key": f"{key}-{i}:sent",
            }
            for i in range(6)
        ]

    ours, theirs = uid("ev"), uid("evcore")
    async with store.transaction() as session:
        await session.run_sync(lambda s: insert_rows_sync(s.connection(), EVENTS, events(ours)))
        await (await session.connection()).execute(insert(EVENTS), events(theirs))
    mine = await _read(store, EVENTS, "dedupe_key", [e["dedupe_key"] for e in events(ours)])
    core = await _read(store, EVENTS, "dedupe_key", [e["dedupe_key"] for e in events(theirs)])
    assert len(mine) == len(core) == 6
    for a, b in zip(mine, core, strict=True):
        for name in ("id", "message_id", "dedupe_key"):
            a.pop(name), b.pop(name)
        assert a == b
    assert [e["detail"] for e in mine] == [shared] * 3 + [
        {"own": i, "list": [i, None]} for i in range(3, 6)
    ]


async def test_the_broadcast_rows_take_the_drivers_path(store: Store) -> None:
    """The rows a broadcast chunk writes are not sent back to SQLAlchemy's executemany (a
    new column with a default made per row, say, would do that silently)."""
    dialect = store.engine.dialect
    delivery = tuple(_delivery("k", 1, datetime.now(UTC)))
    assert _prepare(dialect, DELIVERIES, delivery, "attempt_id") is not _NOT_FAST
    sealed = (
        "customer_external_id", "message_id", "workflow_id", "at", "actor", "detail", "kind",
        "channel", "reason", "dedupe_key", "seq", "prev_hash", "hash",
    )  # fmt: skip
    assert _prepare(dialect, EVENTS, sealed, None) is not _NOT_FAST


async def test_a_default_made_per_row_goes_through_sqlalchemy(store: Store) -> None:
    """A column left out whose default is made per row (``updated_at``: utcnow) is filled
    by SQLAlchemy, as without this module."""
    key = uid("dflt")
    rows = [
        {k: v for k, v in _delivery(key, i, datetime.now(UTC)).items() if k != "updated_at"}
        for i in range(3)
    ]
    assert _prepare(store.engine.dialect, DELIVERIES, tuple(rows[0]), None) is _NOT_FAST
    before = datetime.now(UTC)
    async with store.transaction() as session:
        await insert_rows(await session.connection(), DELIVERIES, rows)
    stored = await _read(store, DELIVERIES, "attempt_id", [r["attempt_id"] for r in rows])
    assert len(stored) == 3 and all(r["updated_at"] >= before for r in stored)
