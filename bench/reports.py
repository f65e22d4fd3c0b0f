"""Benchmark: delivery reports over a million delivery rows.

    .venv/bin/python bench/reports.py [--rows 1000000] [--url URL] [--rounds 3]

Seeds --rows deliveries (20 templates, 3 channels, 3 purposes, 30 days of January 2026;
statuses mostly sent with some failed, suppressed and deferred; 4 journeys over 12 of
the templates, 4 customer segments; SMS and voice mostly delivered, some acknowledged,
failures falling back, a few opt-outs) into a fresh SQLite file, or into the PostgreSQL
store at --url (its deliveries and rollup are emptied first: never point it at a store
you need). Then it times the first rollup refresh (it reads every row once), each
report over the whole 30 days --rounds times, and --rounds times a report after 10,000
fresh changes: 5,000 new attempts today and a delivery receipt arriving late for 5,000
attempts of the window's last day (the report's refresh recomputes that day). Prints
the median time of each. Target: under 2 s each.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import delete, insert, select, update  # noqa: E402

from clarion.store import Store  # noqa: E402
from clarion.store.reports import delivery_report, refresh_rollup  # noqa: E402
from clarion.store.tables import (  # noqa: E402
    Delivery,
    DeliveryRollup,
    DeliveryRollupState,
)

REPORTS = [
    ["template", "channel"],
    ["channel"],
    ["purpose", "day"],
    ["template", "version", "channel", "purpose"],
    ["journey"],
    ["segment"],
    ["journey", "segment", "channel"],
]
START = datetime(2026, 1, 1, tzinfo=UTC)
DAYS = 30
JOURNEYS = ["onboarding", "renewal", "winback", "payment-reminders"]
SEGMENTS = ["gold", "silver", "bronze", ""]
PRICES = {"email": 0.0004, "sms": 0.05, "voice": 0.12}


def delivery(i: int, created: datetime, rng: random.Random, prefix: str = "m") -> dict[str, object]:
    status = rng.choices(["sent", "failed", "suppressed", "deferred"], [90, 4, 5, 1])[0]
    channel = rng.choice(["email", "email", "sms", "voice"])
    template = i % 20
    sent_at = created + timedelta(seconds=rng.lognormvariate(0, 0.6)) if status == "sent" else None
    delivered_at = (
        sent_at + timedelta(seconds=rng.lognormvariate(1.5, 0.8))
        if sent_at is not None and channel != "email" and rng.random() < 0.85
        else None
    )
    reached = delivered_at or (sent_at if channel == "email" else None)
    acked_at = (
        reached + timedelta(minutes=rng.random() * 60) if reached and rng.random() < 0.1 else None
    )
    opted = sent_at + timedelta(hours=1) if sent_at is not None and rng.random() < 0.005 else None
    return {
        "attempt_id": f"{prefix}{i}:{channel}",
        "message_id": f"{prefix}{i}",
        "workflow_id": f"message:{prefix}{i}",
        "customer_external_id": f"c{i % 50_000}",
        "channel": channel,
        "template": f"template-{template}",
        "template_version": 1 + i % 3,
        "purpose": ("service", "transactional", "marketing")[i % 3],
        "status": status,
        "provider": "bench",
        "provider_message_id": "",
        "error": {"failed": "550 bounce", "suppressed": "opted_out"}.get(status, ""),
        "tries": 1,
        "created_at": created,
        "updated_at": created,
        "sent_at": sent_at,
        "journey": JOURNEYS[template % 4] if template < 12 else "",
        "segment": SEGMENTS[(i % 50_000) % 4],
        "delivered_at": delivered_at,
        "acked_at": acked_at,
        "fell_back": status == "failed" and rng.random() < 0.8,
        "opted_out_at": opted,
    }


def rows(n: int, offset: int, rng: random.Random) -> list[dict[str, object]]:
    return [
        delivery(i, START + timedelta(seconds=rng.randrange(DAYS * 86_400)), rng)
        for i in range(offset, offset + n)
    ]


async def timed_report(
    store: Store, since: datetime, until: datetime, by: list[str]
) -> tuple[float, int]:
    t0 = time.perf_counter()
    async with store.session() as session:
        result = await delivery_report(session, since=since, until=until, by=by, prices=PRICES)
    return time.perf_counter() - t0, len(result)


def line(label: str, times: list[float], extra: str = "") -> None:
    print(
        f"{label:<48} {statistics.median(times):6.2f} s median "
        f"({', '.join(f'{t:.2f}' for t in times)}){extra}"
    )


async def fresh_changes(store: Store, rng: random.Random, round_: int, base: int) -> None:
    """5,000 new attempts today and 5,000 late delivery receipts on the window's last day."""
    now = datetime.now(UTC)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    new = [
        delivery(base + i, today + (now - today) * rng.random(), rng, prefix=f"fresh{round_}-")
        for i in range(5_000)
    ]
    for row in new:
        row["updated_at"] = now
    last_day = START + timedelta(days=DAYS - 1)
    async with store.transaction() as session:
        await session.execute(insert(Delivery.__table__), new)
        ids = (
            (
                await session.execute(
                    select(Delivery.attempt_id)
                    .where(
                        Delivery.created_at >= last_day,
                        Delivery.created_at < last_day + timedelta(days=1),
                        Delivery.status == "sent",
                        Delivery.delivered_at.is_(None),
                    )
                    .limit(5_000)
                )
            )
            .scalars()
            .all()
        )
        for start in range(0, len(ids), 500):
            await session.execute(
                update(Delivery)
                .where(Delivery.attempt_id.in_(ids[start : start + 500]))
                .values(delivered_at=last_day + timedelta(hours=23), updated_at=datetime.now(UTC))
            )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--url", default="")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", default="", help="SQLite file to seed once and reuse")
    args = parser.parse_args()
    tmp = tempfile.TemporaryDirectory()
    path = Path(args.keep) if args.keep else Path(tmp.name) / "reports.db"
    url = args.url or f"sqlite+aiosqlite:///{path}"
    reuse = bool(args.keep) and path.exists()
    store = Store(url)
    await store.migrate()
    rng = random.Random(42)
    began = time.perf_counter()
    async with store.transaction() as session:
        if not reuse:
            await session.execute(delete(Delivery))
        else:
            await session.execute(delete(Delivery).where(Delivery.attempt_id.like("fresh%")))
        await session.execute(delete(DeliveryRollup))
        await session.execute(update(DeliveryRollupState).values(watermark=None, rolled_until=""))
    chunk = 20_000
    for offset in range(0, 0 if reuse else args.rows, chunk):
        async with store.transaction() as session:
            await session.execute(
                insert(Delivery.__table__), rows(min(chunk, args.rows - offset), offset, rng)
            )
    backend = store.url.split(":")[0]
    print(f"seeded {args.rows} deliveries in {time.perf_counter() - began:.1f} s ({backend})")
    t0 = time.perf_counter()
    async with store.transaction() as session:
        first = await refresh_rollup(session)
    print(
        f"{'first rollup refresh (every row once)':<48} {time.perf_counter() - t0:6.2f} s "
        f"({len(first.days)} days, {first.rows} rollup rows)"
    )
    since, until = START, START + timedelta(days=DAYS)
    for by in REPORTS:
        times, groups = [], 0
        for _ in range(args.rounds):
            elapsed, groups = await timed_report(store, since, until, by)
            times.append(elapsed)
        line(f"report --by {','.join(by)}", times, f", {groups} groups")
    times = []
    for round_ in range(args.rounds):
        await fresh_changes(store, rng, round_, args.rows + round_ * 5_000)
        elapsed, groups = await timed_report(
            store, since, datetime.now(UTC) + timedelta(hours=1), ["template", "channel"]
        )
        times.append(elapsed)
    line("report after 10,000 fresh changes (refresh incl.)", times, f", {groups} groups")
    await store.close()
    tmp.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
