"""Benchmark: broadcast batches one worker runs at a time (CLARION_BROADCAST_BATCH_SLOTS),
or the values of another worker setting, side by side.

    .venv/bin/python bench/batch_slots.py [--n 6000] [--rounds 5] [--slots 1 4]
    .venv/bin/python bench/batch_slots.py --setting broadcast_chunk_size --slots 250 1000

One Temporal dev server, an SMTP sink in its own process, and one Clarion worker per
value, each on its own task queue; broadcasts of N emails alternate between the
workers for --rounds rounds. Printed: each broadcast's rate (launch to the last outcome
in the store) and its worker's CPU per email, then the medians of the rounds after the
first (a warm-up).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from broadcast import (
    bench_settings,
    broadcast,
    cpu_seconds,
    free_port,
    open_store,
    seed,
    spawn_worker,
    start_sink,
    stop_all,
    wait_ready,
)

from clarion.models import Channel
from starters.dev import start_temporal, wait_for_temporal
from starters.sdk import ClarionClient


async def main(n: int, rounds: int, slots: list[int], setting: str) -> None:
    work = Path(tempfile.mkdtemp(prefix="clarion-slots-"))
    sink, port, out = await start_sink(work)
    await wait_ready(out)
    address = f"127.0.0.1:{free_port()}"  # one server for all
    settings = {
        k: bench_settings(
            work, port, f"bench-{setting}-{k}", temporal_address=address, **{setting: k}
        )
        for k in slots
    }
    first = settings[slots[0]]
    store = await open_store(first)
    for r in range(rounds):
        for k in slots:
            await seed(store, n, f"c{r}s{k}x")
    print(f"n={n} rounds={rounds} {setting}={slots} cores={os.cpu_count()}", flush=True)
    server = await start_temporal(first, ui_port=free_port())
    workers = {}
    results: dict[int, list[tuple[float, float]]] = {k: [] for k in slots}
    try:
        client = await wait_for_temporal(first, server)
        for k, s in settings.items():
            workers[k] = await spawn_worker(s, work / f"worker-{k}.log")
        await asyncio.sleep(3)
        for r in range(rounds):
            for k in slots:
                clarion = ClarionClient(client, settings[k], store=store)
                cpu0 = cpu_seconds([workers[k].pid])
                b = await broadcast(clarion, store, f"c{r}s{k}x", [Channel.EMAIL], n)
                cpu = (cpu_seconds([workers[k].pid]) - cpu0) * 1000 / n
                results[k].append((n / b["elapsed"], cpu))
                print(
                    f"round {r + 1}: {setting}={k}: {n / b['elapsed']:7.1f}/s, {cpu:.2f} ms CPU "
                    "per email",
                    flush=True,
                )
    finally:
        await stop_all(workers.values(), server, [sink], store)
    print(f"--- medians of rounds 2 to {rounds}")
    for k in slots:
        later = results[k][1:] or results[k]
        print(
            f"{setting}={k}: {statistics.median(x[0] for x in later):7.1f}/s, "
            f"{statistics.median(x[1] for x in later):.2f} ms CPU per email"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=6000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--slots", type=int, nargs="+", default=[1, 4], help="the values")
    parser.add_argument("--setting", default="broadcast_batch_slots")
    args = parser.parse_args()
    asyncio.run(main(args.n, args.rounds, args.slots, args.setting))
    sys.stdout.flush()
    os._exit(0)
