"""Benchmark: what the audit chain costs a broadcast's writes, and how fast it verifies.

    .venv/bin/python bench/audit_chain.py [--chunks 200] [--chunk 100] [--writers 4]
                                          [--events 100000] [--url URL]

Store only, no Temporal: each "chunk" is one transaction that bulk-inserts --chunk audit
events the way a broadcast batch records its outcomes (INSERT ... ON CONFLICT DO
NOTHING), --writers of them at a time. Measured with the chain (the transactions seal
their events) and without it (the events are left unsealed and sealed afterwards, which
is not timed), alternating for three rounds; printed: events per second of each round and
their medians. Then the chain is grown to --events events and verified and exported;
printed: events per second of each and the largest resident memory of the process.
Without --url, a fresh SQLite file; a PostgreSQL URL is used as it is (its audit tables
are emptied first: never point it at a store you need).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import delete, update  # noqa: E402
from sqlalchemy.dialects.postgresql import insert as postgresql_insert  # noqa: E402
from sqlalchemy.dialects.sqlite import insert as sqlite_insert  # noqa: E402

from clarion.audit import GENESIS  # noqa: E402
from clarion.store import Store  # noqa: E402
from clarion.store import audit as chain  # noqa: E402

_keys = iter(range(10**12))


async def chunk(store: Store, size: int, *, sealed: bool) -> None:
    build = postgresql_insert if store.engine.dialect.name == "postgresql" else sqlite_insert
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    for _ in range(size):
        n = next(_keys)
        rows.append(
            {
                "at": now,
                "kind": "sent",
                "actor": "system",
                "customer_external_id": f"cust-{n}",
                "message_id": f"crisis-bench-g1-cust-{n}",
                "workflow_id": "broadcast-bench",
                "channel": "email",
                "reason": "",
                "detail": {"broadcast": "bench", "gen": 1, "tier": 0},
                "dedupe_key": f"crisis-bench-g1-cust-{n}:sent",
            }
        )
    async with store.transaction() as session:
        statement = build(chain.events).on_conflict_do_nothing(index_elements=["dedupe_key"])
        await session.execute(statement, rows)
        if sealed:
            chain.mark_pending(session)


async def writes(store: Store, chunks: int, size: int, writers: int, *, sealed: bool) -> float:
    queue = list(range(chunks))

    async def writer() -> None:
        while queue:
            queue.pop()
            await chunk(store, size, sealed=sealed)

    started = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(writers)))
    rate = chunks * size / (time.perf_counter() - started)
    if not sealed:
        await chain.seal_all(store)
    return rate


async def main(args: argparse.Namespace) -> None:
    url = args.url or f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/bench.db"
    store = Store(url)
    await store.migrate()
    async with store.transaction() as session:
        await session.execute(delete(chain.events))
        await session.execute(update(chain.chain).values(seq=0, hash=GENESIS))
    print(f"store: {store.engine.dialect.name}; {args.chunks} chunks of {args.chunk} events, "
          f"{args.writers} writers")  # fmt: skip
    rates: dict[bool, list[float]] = {True: [], False: []}
    for round_ in range(3):
        for sealed in (False, True):
            rate = await writes(store, args.chunks, args.chunk, args.writers, sealed=sealed)
            rates[sealed].append(rate)
            label = "with chain   " if sealed else "without chain"
            print(f"round {round_ + 1} {label}: {rate:9.0f} events/s", flush=True)
    plain, sealed_rate = statistics.median(rates[False]), statistics.median(rates[True])
    print(f"median without chain: {plain:.0f}/s, with: {sealed_rate:.0f}/s "
          f"({sealed_rate / plain:.2f}x)")  # fmt: skip

    total = 6 * args.chunks * args.chunk
    while total < args.events:
        step = min(args.chunks, -(-(args.events - total) // args.chunk))
        await writes(store, step, args.chunk, args.writers, sealed=True)
        total += step * args.chunk
    started = time.perf_counter()
    result = await chain.verify(store)
    took = time.perf_counter() - started
    print(f"verify: {result.count} events in {took:.1f}s ({result.count / took:.0f}/s), "
          f"ok={result.ok}")  # fmt: skip
    started = time.perf_counter()
    exported = 0
    async for _ in chain.export(store, since=datetime(2000, 1, 1, tzinfo=UTC)):
        exported += 1
    took = time.perf_counter() - started
    print(f"export: {exported} events in {took:.1f}s ({exported / took:.0f}/s)")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"largest resident memory of this process: {peak:.0f} MiB")
    await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=200)
    parser.add_argument("--chunk", type=int, default=100)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--url", default="")
    asyncio.run(main(parser.parse_args()))
