"""Engine, sessions and migrations for Clarion's store (SQLite or PostgreSQL)."""

from __future__ import annotations

import asyncio
import math
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session

from clarion.store import audit

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    try:  # the delivery reports' histograms need ln() and floor()
        cursor.execute("SELECT ln(2.0), floor(2.5)")
    except Exception:  # SQLite built without its math functions
        dbapi_connection.create_function("ln", 1, _ln, deterministic=True)
        dbapi_connection.create_function("floor", 1, _floor, deterministic=True)
    cursor.close()


def _ln(x: float | None) -> float | None:
    return None if x is None or x <= 0 else math.log(x)


def _floor(x: float | None) -> int | None:
    return None if x is None else math.floor(x)


def create_engine(url: str) -> AsyncEngine:
    """An async engine; SQLite files get their folder, WAL and foreign keys."""
    parsed = make_url(url)
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs["pool_pre_ping"] = True
    engine = create_async_engine(url, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _upgrade(connection: Connection, revision: str) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)


_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


async def migrate(engine: AsyncEngine, revision: str = "head") -> None:
    """Apply Alembic migrations up to ``revision`` on ``engine``'s database.

    Alembic keeps its context in module globals, so migrations in one process run one
    at a time."""
    lock = _locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())
    async with lock, engine.begin() as conn:
        await conn.run_sync(_upgrade, revision)


class StoreSession(Session):
    """The store's sessions: a transaction that appended audit events seals them just
    before it commits (clarion/store/audit.py)."""


event.listen(StoreSession, "before_commit", audit.seal_on_commit)
event.listen(StoreSession, "after_transaction_end", audit.forget_on_end)


class Store:
    """The engine and a session factory; repositories take sessions from it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_engine(url)
        self.sessions = async_sessionmaker(
            self.engine, expire_on_commit=False, sync_session_class=StoreSession
        )

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session:
            yield session

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session, session.begin():
            yield session

    async def migrate(self) -> None:
        await migrate(self.engine)

    async def close(self) -> None:
        await self.engine.dispose()
