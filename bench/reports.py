"""Benchmark: delivery reports over a million delivery rows.

    .venv/bin/python bench/reports.py [--rows 1000000] [--url URL] [--rounds 3]

Seeds --rows deliveries (20 templates, 3 channels, 3 purposes, 30 days, statuses mostly
sent with some failed, suppressed and deferred) into a fresh SQLite file, or into the
PostgreSQL store at --url (its deliveries table is emptied first: never point it at a
store you need), then runs each report --rounds times and prints the median time of each.
Target: under 2 s each.
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

from sqlalchemy import delete, insert  # noqa: E402

from clarion.store import Store  # noqa: E402
from clarion.store.reports import delivery_report  # noqa: E402
from clarion.store.tables import Delivery  # noqa: E402

REPORTS = [
    ["template", "channel"],
    ["channel"],
    ["purpose", "day"],
    ["template", "version", "channel", "purpose"],
]
START = datetime(2026, 1, 1, tzinfo=UTC)


def rows(n: int, offset: int, rng: random.Random) -> list[dict[str, object]]:
    out = []
    for i in range(offset, offset + n):
        created = START + timedelta(seconds=rng.randrange(30 * 86_400))
        status = rng.choices(["sent", "failed", "suppressed", "deferred"], [90, 4, 5, 1])[0]
        channel = rng.choice(["email", "email", "sms", "voice"])
        out.append(
            {
                "attempt_id": f"m{i}:{channel}",
                "message_id": f"m{i}",
                "workflow_id": f"message:m{i}",
                "customer_external_id": f"c{i % 50_000}",
                "channel": channel,
                "template": f"template-{i % 20}",
                "template_version": 1 + i % 3,
                "purpose": ("service", "transactional", "marketing")[i % 3],
                "status": status,
                "provider": "bench",
                "provider_message_id": "",
                "error": {"failed": "550 bounce", "suppressed": "opted_out"}.get(status, ""),
                "tries": 1,
                "created_at": created,
                "updated_at": created,
                "sent_at": created + timedelta(seconds=rng.random() * 3)
                if status == "sent"
                else None,
            }
        )
    return out


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
    if not reuse:
        async with store.transaction() as session:
            await session.execute(delete(Delivery))
    chunk = 20_000
    for offset in range(0, 0 if reuse else args.rows, chunk):
        async with store.transaction() as session:
            await session.execute(
                insert(Delivery), rows(min(chunk, args.rows - offset), offset, rng)
            )
    print(
        f"seeded {args.rows} deliveries in {time.perf_counter() - began:.1f} s ({store.url.split(':')[0]})"
    )
    since, until = START, START + timedelta(days=31)
    for by in REPORTS:
        times = []
        groups = 0
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            async with store.session() as session:
                result = await delivery_report(
                    session, since=since, until=until, by=by, prices={"sms": 0.05}
                )
            times.append(time.perf_counter() - t0)
            groups = len(result)
        print(
            f"report --by {','.join(by):<32} {statistics.median(times):6.2f} s median "
            f"({', '.join(f'{t:.2f}' for t in times)}), {groups} groups"
        )
    await store.close()
    tmp.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
