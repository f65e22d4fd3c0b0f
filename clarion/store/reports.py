"""Delivery analytics: SQL aggregates over the deliveries table.

One row per group (any of template, version, channel, purpose, day) over a time range of
the attempts' creation: attempted, sent, failed, suppressed, deferred, in flight;
suppressed and failed by reason; median and 95th percentile seconds from the start of
the attempt to the provider's acceptance; cost from a price per channel. Percentiles are
computed in the database (nearest rank: percentile_disc on PostgreSQL, window functions
on SQLite), so a report reads one row per group, not one per delivery.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import Float, case, cast, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.errors import ValidationFailed
from clarion.store.tables import Delivery

DIMENSIONS = ("template", "version", "channel", "purpose", "day")
STATUSES = ("sent", "failed", "suppressed", "deferred", "sending")


def _dimension(name: str, dialect: str) -> Any:
    if name == "template":
        return Delivery.template
    if name == "version":
        return Delivery.template_version
    if name == "channel":
        return Delivery.channel
    if name == "purpose":
        return Delivery.purpose
    if name == "day":
        if dialect == "postgresql":
            return func.to_char(Delivery.created_at, "YYYY-MM-DD")
        return func.substr(Delivery.created_at, 1, 10)
    raise ValidationFailed("by", name, f"use any of {', '.join(DIMENSIONS)}")


def _seconds(dialect: str) -> Any:
    if dialect == "postgresql":
        return func.extract("epoch", Delivery.sent_at - Delivery.created_at)
    return (func.julianday(Delivery.sent_at) - func.julianday(Delivery.created_at)) * 86400.0


def _key(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date | datetime) else value


async def delivery_report(
    session: AsyncSession,
    *,
    since: datetime,
    until: datetime,
    by: Sequence[str] = ("template", "channel"),
    prices: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    if since >= until:
        raise ValidationFailed("since", since.isoformat(), "must be before until")
    assert session.bind is not None, "the session must be bound to the store's engine"
    dialect = session.bind.dialect.name
    names = list(dict.fromkeys(by))
    dims = [_dimension(n, dialect).label(n) for n in names]
    window = (Delivery.created_at >= since, Delivery.created_at < until)
    counts = [
        func.count().label("attempted"),
        *[func.sum(case((Delivery.status == s, 1), else_=0)).label(s) for s in STATUSES],
    ]
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    sent_by_channel: dict[tuple[Any, ...], dict[str, int]] = {}
    # Counts, and sends per channel for the cost.
    channel_dim = Delivery.channel.label("_channel")
    rows = await session.execute(
        select(*dims, channel_dim, *counts).where(*window).group_by(*dims, channel_dim)
    )
    for row in rows:
        key = tuple(_key(row._mapping[n]) for n in names)
        group = groups.setdefault(
            key,
            {
                **dict(zip(names, key, strict=True)),
                "attempted": 0,
                **{s: 0 for s in STATUSES},
            },
        )
        group["attempted"] += int(row.attempted)
        for s in STATUSES:
            group[s] += int(row._mapping[s] or 0)
        per_channel = sent_by_channel.setdefault(key, {})
        per_channel[row._channel] = per_channel.get(row._channel, 0) + int(row.sent or 0)
    # Suppressed and failed, by reason.
    reasons = await session.execute(
        select(*dims, Delivery.status, Delivery.error, func.count())
        .where(*window, Delivery.status.in_(["suppressed", "failed"]))
        .group_by(*dims, Delivery.status, Delivery.error)
    )
    for row in reasons:
        key = tuple(_key(row._mapping[n]) for n in names)
        status, reason, count = row[-3], row[-2], row[-1]
        bucket = groups[key].setdefault(f"{status}_by_reason", {})
        bucket[reason or "(none)"] = bucket.get(reason or "(none)", 0) + int(count)
    # Time from the start of the attempt to the provider's acceptance.
    seconds = _seconds(dialect)
    sent = (*window, Delivery.status == "sent", Delivery.sent_at.is_not(None))
    if dialect == "postgresql":
        quantiles = (
            select(
                *dims,
                func.percentile_disc(0.5).within_group(seconds).label("p50"),
                func.percentile_disc(0.95).within_group(seconds).label("p95"),
            )
            .where(*sent)
            .group_by(*dims)
        )
    else:
        part = [_dimension(n, dialect) for n in names] or [literal_column("1")]
        ranked = (
            select(
                *dims,
                cast(seconds, Float).label("s"),
                func.row_number().over(partition_by=part, order_by=seconds).label("rn"),
                func.count().over(partition_by=part).label("n"),
            )
            .where(*sent)
            .subquery()
        )
        cols = [ranked.c[n] for n in names]
        quantiles = select(
            *cols,
            func.min(case((ranked.c.rn >= ranked.c.n * 0.5, ranked.c.s))).label("p50"),
            func.min(case((ranked.c.rn >= ranked.c.n * 0.95, ranked.c.s))).label("p95"),
        ).group_by(*cols)
    for row in await session.execute(quantiles):
        key = tuple(_key(row._mapping[n]) for n in names)
        if key in groups:
            groups[key]["median_time_to_send_s"] = round(float(row.p50), 3)
            groups[key]["p95_time_to_send_s"] = round(float(row.p95), 3)
    prices = prices or {}
    report = []
    for key in sorted(groups, key=lambda k: tuple(str(v) for v in k)):
        group = groups[key]
        cost = sum(prices.get(ch, 0.0) * n for ch, n in sent_by_channel.get(key, {}).items())
        group["cost"] = round(cost, 6)
        group["cost_per_sent"] = round(cost / group["sent"], 6) if group["sent"] else None
        group.setdefault("median_time_to_send_s", None)
        group.setdefault("p95_time_to_send_s", None)
        group.setdefault("suppressed_by_reason", {})
        group.setdefault("failed_by_reason", {})
        report.append(group)
    return report
