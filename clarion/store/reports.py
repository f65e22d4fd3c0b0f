"""Delivery analytics: a daily rollup of the deliveries table, plus raw SQL for the rest.

The report groups delivery attempts started in a time range by any of template,
version, channel, purpose, journey, segment and day (UTC) and gives for each group:
attempted, sent, delivered, failed, suppressed, deferred, in flight, fell back,
acknowledged and opted out after; failed and suppressed by reason; median and 95th
percentile seconds from the start of an attempt to the provider's acceptance (time to
send) and to the provider's delivery receipt (time to deliver); and the cost from a
price per channel, per message sent and per outcome.

Reading a million rows for each report is too slow, so complete UTC days are rolled up
into ``delivery_rollup``: one row per day and (template, version, channel, purpose,
journey, segment, status, reason) with its counts and sparse histograms of the
seconds, in logarithmic buckets 2% wide. :func:`refresh_rollup` recomputes every day
with a delivery row changed since the last refresh (its ``updated_at``) and every day
completed since; a report refreshes first, then reads the rolled-up days from the
rollup and the partial days at the edges of its range (and today) from the
deliveries themselves, aggregated the same way. Counts are exact; percentiles are the
middle of the bucket holding the nearest-rank value, within 1% of it.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Float,
    Table,
    and_,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.errors import ValidationFailed
from clarion.logging import get_logger
from clarion.store.tables import Delivery, DeliveryRollup, DeliveryRollupState

log = get_logger(__name__)

DIMENSIONS = ("template", "version", "channel", "purpose", "journey", "segment", "day")
STATUSES = ("sent", "failed", "suppressed", "deferred", "sending")
# The rollup's key: a row per day and each of these.
KEY = ("template", "template_version", "channel", "purpose", "journey", "segment", "status")
# Histogram buckets: bucket b holds seconds in [RATIO**b, RATIO**(b+1)); ZERO holds less
# than a millisecond (and clock skew below zero).
RATIO = 1.02
LN_RATIO = math.log(RATIO)
MIN_SECONDS = 0.001
ZERO = -100_000
# Rows committed a little after the refresh's clock read are still found.
LOOKBACK = timedelta(minutes=10)
STATE_ID = 1
# Core inserts: many times faster than the ORM's bulk insert for thousands of rows.
ROLLUP = typing.cast(Table, DeliveryRollup.__table__)
# Where each dimension is in a rollup row's key.
RAW_INDEX = {"template": 0, "version": 1, "channel": 2, "purpose": 3, "journey": 4, "segment": 5}


# ------------------------------------------------------------------ histograms


def bucket_of(seconds: float) -> int:
    if seconds < MIN_SECONDS:
        return ZERO
    return math.floor(math.log(seconds) / LN_RATIO)


def bucket_value(bucket: int) -> float:
    """The middle (geometric) of a bucket: within 1% of anything in it."""
    if bucket == ZERO:
        return 0.0
    return float(RATIO ** (bucket + 0.5))


def merge_hist(into: dict[str, int], hist: Mapping[str, int]) -> None:
    """Add ``hist`` to ``into``. Buckets stay text, as the rollup stores them (JSON keys):
    the report merges a lot of them and converts only the totals."""
    get = into.get
    for bucket, count in hist.items():
        into[bucket] = get(bucket, 0) + count


def percentile(hist: Mapping[str, int], q: float) -> float | None:
    """Nearest rank: the value of the bucket holding the ceil(q * n)-th smallest value."""
    n = sum(hist.values())
    if n == 0:
        return None
    rank = max(1, math.ceil(q * n - 1e-9))
    seen = 0
    for bucket, count in sorted((int(b), c) for b, c in hist.items()):
        seen += count
        if seen >= rank:
            return bucket_value(bucket)
    raise AssertionError("unreachable")


# ------------------------------------------------------------------ raw aggregation


@dataclass
class Cell:
    """One rollup row: a day and key, its counts and histograms."""

    day: str
    key: tuple[Any, ...]  # KEY values
    reason: str
    attempted: int = 0
    delivered: int = 0
    fell_back: int = 0
    acknowledged: int = 0
    opted_out: int = 0
    send_hist: dict[str, int] = field(default_factory=dict)  # {bucket: count}
    deliver_hist: dict[str, int] = field(default_factory=dict)


def _dialect(session: AsyncSession) -> str:
    assert session.bind is not None, "the session must be bound to the store's engine"
    return session.bind.dialect.name


def _day_expr(dialect: str) -> Any:
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", Delivery.created_at), "YYYY-MM-DD")
    return func.substr(Delivery.created_at, 1, 10)


def _seconds(dialect: str, end: Any) -> Any:
    if dialect == "postgresql":
        return cast(func.extract("epoch", end - Delivery.created_at), Float)
    return (func.julianday(end) - func.julianday(Delivery.created_at)) * 86400.0


def _bucket_expr(seconds: Any) -> Any:
    return case(
        (seconds < MIN_SECONDS, literal(ZERO)),
        else_=func.floor(func.ln(case((seconds < MIN_SECONDS, 1.0), else_=seconds)) / LN_RATIO),
    )


def _reason_expr() -> Any:
    """The reason kept: the error of failed and suppressed attempts, nothing else."""
    return case((Delivery.status.in_(["failed", "suppressed"]), Delivery.error), else_="")


def _key_columns(dialect: str) -> list[Any]:
    return [
        _day_expr(dialect).label("day"),
        Delivery.template,
        Delivery.template_version,
        Delivery.channel,
        Delivery.purpose,
        Delivery.journey,
        Delivery.segment,
        Delivery.status,
        _reason_expr().label("reason"),
    ]


async def aggregate(
    session: AsyncSession, ranges: Sequence[tuple[datetime, datetime]]
) -> list[Cell]:
    """Rollup rows computed from the deliveries started in any of ``ranges``."""
    if not ranges:
        return []
    dialect = _dialect(session)
    where = or_(*(and_(Delivery.created_at >= a, Delivery.created_at < b) for a, b in ranges))
    keys = _key_columns(dialect)
    cells: dict[tuple[Any, ...], Cell] = {}

    def cell(row: Any) -> Cell:
        k = tuple(row[: len(keys)])
        found = cells.get(k)
        if found is None:
            found = cells[k] = Cell(day=str(k[0]), key=tuple(k[1:-1]), reason=k[-1] or "")
        return found

    # One pass: groups of the key and the two buckets (NULL: not sent, not delivered).
    sent = and_(Delivery.status == "sent", Delivery.sent_at.is_not(None))
    send_bucket = case((sent, _bucket_expr(_seconds(dialect, Delivery.sent_at)))).label("sb")
    deliver_bucket = case(
        (
            Delivery.delivered_at.is_not(None),
            _bucket_expr(_seconds(dialect, Delivery.delivered_at)),
        )
    ).label("db")
    rows = await session.execute(
        select(
            *keys,
            send_bucket,
            deliver_bucket,
            func.count(),
            func.sum(case((Delivery.fell_back, 1), else_=0)),
            func.count(Delivery.acked_at),
            func.count(Delivery.opted_out_at),
        )
        .where(where)
        .group_by(*keys, send_bucket, deliver_bucket)
    )
    n = len(keys)
    for row in rows:
        c = cell(row)
        count = int(row[n + 2])
        c.attempted += count
        c.fell_back += int(row[n + 3] or 0)
        c.acknowledged += int(row[n + 4])
        c.opted_out += int(row[n + 5])
        if row[n] is not None:
            b = str(int(row[n]))
            c.send_hist[b] = c.send_hist.get(b, 0) + count
        if row[n + 1] is not None:
            c.delivered += count
            b = str(int(row[n + 1]))
            c.deliver_hist[b] = c.deliver_hist.get(b, 0) + count
    return list(cells.values())


# ------------------------------------------------------------------ the rollup


def _day(value: date | datetime | str) -> str:
    if isinstance(value, str):
        return value
    return value.isoformat()[:10]


def _start_of(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(tzinfo=UTC)


def _ranges(days: Iterable[str]) -> list[tuple[datetime, datetime]]:
    """Consecutive days as few [start, end) ranges."""
    out: list[tuple[datetime, datetime]] = []
    for day in sorted(set(days)):
        start = _start_of(day)
        if out and out[-1][1] == start:
            out[-1] = (out[-1][0], start + timedelta(days=1))
        else:
            out.append((start, start + timedelta(days=1)))
    return out


@dataclass(frozen=True)
class RefreshResult:
    days: list[str]  # the days recomputed
    rows: int  # rollup rows written
    rolled_until: str  # the rollup holds every day before this one


async def refresh_rollup(session: AsyncSession, now: datetime | None = None) -> RefreshResult:
    """Bring the rollup up to date: recompute each complete UTC day (before ``now``'s)
    with a delivery changed since the last refresh, and each day completed since.

    Runs in the session's transaction (the caller commits). The first statement updates
    the state row, so refreshes running at once wait for each other."""
    now = now or datetime.now(UTC)
    dialect = _dialect(session)
    today = _day(now.astimezone(UTC))
    await session.execute(
        update(DeliveryRollupState)
        .where(DeliveryRollupState.id == STATE_ID)
        .values(rolled_until=DeliveryRollupState.rolled_until)
    )
    state = (
        await session.execute(
            select(DeliveryRollupState.watermark, DeliveryRollupState.rolled_until).where(
                DeliveryRollupState.id == STATE_ID
            )
        )
    ).one_or_none()
    if state is None:
        await session.execute(
            insert(DeliveryRollupState).values(id=STATE_ID, watermark=None, rolled_until="")
        )
        watermark, rolled_until = None, ""
    else:
        watermark, rolled_until = state
    day = _day_expr(dialect)
    dirty: set[str] = set()
    if watermark is None or not rolled_until:
        first = (await session.execute(select(func.min(Delivery.created_at)))).scalar()
        if first is not None:
            d = first.astimezone(UTC).date()
            while d.isoformat() < today:
                dirty.add(d.isoformat())
                d += timedelta(days=1)
    else:
        # Only updated_at in the WHERE clause, so its index is the one used.
        changed = await session.execute(
            select(day).where(Delivery.updated_at > watermark - LOOKBACK).distinct()
        )
        dirty.update(str(d) for (d,) in changed)
        d = date.fromisoformat(rolled_until)
        while d.isoformat() < today:
            dirty.add(d.isoformat())
            d += timedelta(days=1)
    dirty = {d for d in dirty if d < today}
    written = 0
    if dirty:
        days = sorted(dirty)
        for i in range(0, len(days), 500):
            await session.execute(
                delete(DeliveryRollup).where(DeliveryRollup.day.in_(days[i : i + 500]))
            )
        cells = await aggregate(session, _ranges(days))
        rows = [
            {
                "day": c.day,
                **dict(zip(KEY, c.key, strict=True)),
                "reason": c.reason,
                "attempted": c.attempted,
                "delivered": c.delivered,
                "fell_back": c.fell_back,
                "acknowledged": c.acknowledged,
                "opted_out": c.opted_out,
                "send_hist": c.send_hist,
                "deliver_hist": c.deliver_hist,
            }
            for c in cells
        ]
        for i in range(0, len(rows), 5_000):
            await session.execute(insert(ROLLUP), rows[i : i + 5_000])
        written = len(rows)
    new_until = max(rolled_until, today) if rolled_until else today
    await session.execute(
        update(DeliveryRollupState)
        .where(DeliveryRollupState.id == STATE_ID)
        .values(watermark=now, rolled_until=new_until)
    )
    if dirty:
        log.info("delivery rollup refreshed", days=len(dirty), rows=written)
    return RefreshResult(days=sorted(dirty), rows=written, rolled_until=new_until)


async def _rolled_cells(
    session: AsyncSession, first: str, last: str, names: Sequence[str]
) -> list[Cell]:
    """Rollup rows of the days in [first, last), reduced in SQL to the dimensions asked
    for (plus channel, status and reason, which the measures need)."""
    column = {
        "template": DeliveryRollup.template,
        "version": DeliveryRollup.template_version,
        "channel": DeliveryRollup.channel,
        "purpose": DeliveryRollup.purpose,
        "journey": DeliveryRollup.journey,
        "segment": DeliveryRollup.segment,
        "day": DeliveryRollup.day,
    }
    where = (DeliveryRollup.day >= first, DeliveryRollup.day < last)
    dims = [column[n] for n in names]
    group = [*dims, DeliveryRollup.channel, DeliveryRollup.status, DeliveryRollup.reason]
    cells: dict[tuple[Any, ...], Cell] = {}
    counts = await session.execute(
        select(
            *group,
            func.sum(DeliveryRollup.attempted),
            func.sum(DeliveryRollup.delivered),
            func.sum(DeliveryRollup.fell_back),
            func.sum(DeliveryRollup.acknowledged),
            func.sum(DeliveryRollup.opted_out),
        )
        .where(*where)
        .group_by(*group)
    )
    n = len(group)
    row: Any
    for row in counts:
        k = tuple(row[:n])
        cells[k] = Cell(
            day="",
            key=k,
            reason=k[-1] or "",
            attempted=int(row[n]),
            delivered=int(row[n + 1]),
            fell_back=int(row[n + 2]),
            acknowledged=int(row[n + 3]),
            opted_out=int(row[n + 4]),
        )
    hists = await session.execute(
        select(*group, DeliveryRollup.send_hist, DeliveryRollup.deliver_hist).where(
            *where, or_(DeliveryRollup.status == "sent", DeliveryRollup.delivered > 0)
        )
    )
    for row in hists:
        c = cells[tuple(row[:n])]
        merge_hist(c.send_hist, row[n])
        merge_hist(c.deliver_hist, row[n + 1])
    return list(cells.values())


# ------------------------------------------------------------------ the report


def resolve_time(value: datetime | str, field: str, now: datetime) -> datetime:
    """A datetime (naive is UTC), or text: ``7d`` / ``24h`` (that long before ``now``) or
    an ISO-8601 time. ValidationFailed naming ``field`` otherwise."""
    from clarion.policy.timing import DurationError, parse_duration

    if isinstance(value, str):
        try:
            return now - parse_duration(value)
        except DurationError:
            pass
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValidationFailed(
                field, value, "use a duration such as 7d or 24h, or an ISO-8601 time"
            ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _group(names: Sequence[str], key: tuple[Any, ...]) -> dict[str, Any]:
    return {
        **dict(zip(names, key, strict=True)),
        "attempted": 0,
        **{s: 0 for s in STATUSES},
        "delivered": 0,
        "fell_back": 0,
        "acknowledged": 0,
        "opted_out_after": 0,
        "failed_by_reason": {},
        "suppressed_by_reason": {},
    }


async def delivery_report(
    session: AsyncSession,
    *,
    since: datetime,
    until: datetime,
    by: Sequence[str] = ("template", "channel"),
    prices: Mapping[str, float] | None = None,
    refresh: bool = True,
    rollup: bool = True,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """The report's groups, sorted by their dimensions.

    ``refresh``: bring the rollup up to date first (committed when the session was not
    in a transaction yet). ``rollup=False`` computes everything from the deliveries
    (slow on big stores; the tests compare both)."""
    if since >= until:
        raise ValidationFailed(
            "since", since.isoformat(), f"must be before until ({until.isoformat()})"
        )
    names = list(dict.fromkeys(by))
    for name in names:
        if name not in DIMENSIONS:
            raise ValidationFailed("by", name, f"use any of {', '.join(DIMENSIONS)}")
    since, until = since.astimezone(UTC), until.astimezone(UTC)
    rolled_until = ""
    if rollup:
        if refresh:
            owns = not session.in_transaction()
            await refresh_rollup(session, now)
            if owns:
                await session.commit()
        rolled_until = (
            await session.execute(
                select(DeliveryRollupState.rolled_until).where(DeliveryRollupState.id == STATE_ID)
            )
        ).scalar() or ""
    # Whole days inside [since, until) that the rollup holds; the rest from raw rows.
    first = since.date() if since == _start_of(_day(since)) else since.date() + timedelta(days=1)
    last = until.date()
    if rolled_until:
        last = min(last, date.fromisoformat(rolled_until))
    raw: list[tuple[datetime, datetime]]
    if rollup and rolled_until and first < last:
        a, b = _start_of(first.isoformat()), _start_of(last.isoformat())
        raw = [(s, e) for s, e in ((since, a), (b, until)) if s < e]
        rolled = await _rolled_cells(session, first.isoformat(), last.isoformat(), names)
    else:
        raw, rolled = [(since, until)], []
    report: dict[tuple[Any, ...], dict[str, Any]] = {}
    sends: dict[tuple[Any, ...], dict[str, int]] = {}
    delivers: dict[tuple[Any, ...], dict[str, int]] = {}
    sent_by_channel: dict[tuple[Any, ...], dict[str, int]] = {}

    def add(key: tuple[Any, ...], channel: str, status: str, c: Cell) -> None:
        group = report.get(key)
        if group is None:
            group = report[key] = _group(names, key)
        group["attempted"] += c.attempted
        if status in STATUSES:
            group[status] += c.attempted
        group["delivered"] += c.delivered
        group["fell_back"] += c.fell_back
        group["acknowledged"] += c.acknowledged
        group["opted_out_after"] += c.opted_out
        if status in ("failed", "suppressed"):
            reasons = group[f"{status}_by_reason"]
            reason = c.reason or "(none)"
            reasons[reason] = reasons.get(reason, 0) + c.attempted
        if status == "sent":
            per = sent_by_channel.setdefault(key, {})
            per[channel] = per.get(channel, 0) + c.attempted
        if c.send_hist:
            merge_hist(sends.setdefault(key, {}), c.send_hist)
        if c.deliver_hist:
            merge_hist(delivers.setdefault(key, {}), c.deliver_hist)

    width = len(names)
    for c in rolled:  # key: the dimensions asked for, channel, status, reason
        add(tuple(c.key[:width]), c.key[width], c.key[width + 1], c)
    for c in await aggregate(session, raw):  # key: KEY
        values = tuple(c.day if d == "day" else c.key[RAW_INDEX[d]] for d in names)
        add(values, c.key[2], c.key[6], c)
    prices = prices or {}
    out = []
    for key in sorted(report, key=lambda k: tuple(str(v) for v in k)):
        group = report[key]
        cost = sum(prices.get(ch, 0.0) * k for ch, k in sent_by_channel.get(key, {}).items())
        send, deliver = sends.get(key, {}), delivers.get(key, {})
        group["median_time_to_send_s"] = _round(percentile(send, 0.5))
        group["p95_time_to_send_s"] = _round(percentile(send, 0.95))
        group["median_time_to_deliver_s"] = _round(percentile(deliver, 0.5))
        group["p95_time_to_deliver_s"] = _round(percentile(deliver, 0.95))
        group["cost"] = round(cost, 6)
        group["cost_per_sent"] = _per(cost, group["sent"])
        group["cost_per_delivered"] = _per(cost, group["delivered"])
        group["cost_per_acknowledged"] = _per(cost, group["acknowledged"])
        out.append(group)
    return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _per(cost: float, count: int) -> float | None:
    return round(cost / count, 6) if count else None
