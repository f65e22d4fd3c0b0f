"""UTCDateTime's bind processor: the instant in UTC on every backend, naive values refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.dialects import postgresql, sqlite

from clarion.store.tables import UTCDateTime


@pytest.mark.parametrize("dialect", [sqlite.dialect(), postgresql.dialect()], ids=str)
def test_the_bind_processor_stores_the_instant_in_utc(dialect: object) -> None:
    process = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)  # type: ignore[arg-type]
    assert process is not None
    paris = timezone(timedelta(hours=1))
    now = datetime(2026, 11, 24, 20, 0, 0, 123456, tzinfo=UTC)
    same_instant = datetime(2026, 11, 24, 21, 0, 0, 123456, tzinfo=paris)
    assert process(same_instant) == process(now)
    assert process(now + timedelta(microseconds=1)) != process(now)
    if dialect.name == "sqlite":  # type: ignore[attr-defined]
        assert process(same_instant) == "2026-11-24 20:00:00.123456"
    else:
        assert process(same_instant).utcoffset() == timedelta(0)
    assert process(None) is None
    naive = datetime(2026, 11, 24, 20, 0)
    for _ in range(2):  # refused every time
        with pytest.raises(ValueError, match="naive"):
            process(naive)
