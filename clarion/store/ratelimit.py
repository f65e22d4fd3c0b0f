"""A token bucket per channel kept in the store, so that every worker shares one limit."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import select, update

from clarion.models import Channel
from clarion.store.db import Store
from clarion.store.tables import RateBucket


class RateLimiter:
    """``acquire(channel, n)`` waits until ``n`` messages may go out on ``channel``.

    The bucket holds at most one second of tokens (the burst) and refills at ``rate``
    per second. Updates are optimistic (compare-and-set on ``updated_at``), which works
    the same on SQLite and PostgreSQL.
    """

    def __init__(self, store: Store, rates: dict[Channel, float]) -> None:
        self.store = store
        self.rates = {c: r for c, r in rates.items() if r > 0}

    async def acquire(
        self, channel: Channel, n: int = 1, *, on_wait: Callable[[], object] | None = None
    ) -> float:
        """Returns the seconds spent waiting; ``on_wait`` is called before each wait
        (an activity passes its heartbeat)."""
        rate = self.rates.get(channel)
        if rate is None or n <= 0:
            return 0.0
        waited = 0.0
        while n > 0:
            take = min(n, max(1, int(rate)))
            delay = await self._try(channel, take, rate)
            if delay == 0:
                n -= take
            else:
                if on_wait is not None:
                    on_wait()
                waited += delay
                await asyncio.sleep(delay)
        return waited

    async def _try(self, channel: Channel, n: int, rate: float) -> float:
        """0 when ``n`` tokens were taken, else how long to wait before trying again."""
        burst = max(1.0, rate)
        now = datetime.now(UTC)
        async with self.store.transaction() as session:
            row = (
                await session.execute(select(RateBucket).where(RateBucket.channel == channel.value))
            ).scalar_one_or_none()
            if row is None:
                session.add(RateBucket(channel=channel.value, tokens=burst - n, updated_at=now))
                try:
                    await session.flush()
                except Exception:
                    return 0.01  # another worker created it first
                return 0.0
            elapsed = max(0.0, (now - row.updated_at).total_seconds())
            tokens = min(burst, row.tokens + elapsed * rate)
            if tokens < n:
                return max(0.005, (n - tokens) / rate)
            result = await session.execute(
                update(RateBucket)
                .where(RateBucket.channel == channel.value, RateBucket.updated_at == row.updated_at)
                .values(tokens=tokens - n, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            return 0.0 if result.rowcount == 1 else 0.005  # type: ignore[attr-defined]
