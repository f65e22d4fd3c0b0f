"""Clarion's store: SQLAlchemy 2 async over SQLite or PostgreSQL, Alembic migrations."""

from clarion.store.db import Store, create_engine, migrate

__all__ = ["Store", "create_engine", "migrate"]
