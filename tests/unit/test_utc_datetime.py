"""UTCDateTime's bind processor: the base class's results, remembered for a repeated value."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.types import TypeDecorator

from clarion.store.tables import UTCDateTime


@pytest.mark.parametrize("dialect", [sqlite.dialect(), postgresql.dialect()], ids=str)
def test_the_bind_processor_gives_what_the_base_class_gives(dialect: object) -> None:
    column = UTCDateTime()
    base = TypeDecorator.bind_processor(column.dialect_impl(dialect), dialect)  # type: ignore[arg-type]
    mine = column.dialect_impl(dialect).bind_processor(dialect)  # type: ignore[arg-type]
    assert base is not None and mine is not None
    paris = timezone(timedelta(hours=1))
    now = datetime(2026, 11, 24, 20, 0, 0, 123456, tzinfo=UTC)
    values = [
        now,
        now,  # the same object again: remembered
        datetime(2026, 11, 24, 21, 0, 0, 123456, tzinfo=paris),  # equal instant, another zone
        now + timedelta(microseconds=1),
        None,
        now,
    ]
    assert [mine(v) for v in values] == [base(v) for v in values]
    naive = datetime(2026, 11, 24, 20, 0)
    for _ in range(2):  # refused every time, never remembered
        with pytest.raises(ValueError, match="naive"):
            mine(naive)
