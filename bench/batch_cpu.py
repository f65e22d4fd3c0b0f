"""Benchmark: the CPU a broadcast batch spends per recipient beside the send, by phase.

    .venv/bin/python bench/batch_cpu.py [--n 10000] [--rounds 4] [--batch 2000]

Runs Clarion's broadcast activities (``prepare_broadcast``, then ``send_broadcast_batch``
over the audience in batches) in this process, outside a Temporal worker (the SDK's
ActivityEnvironment gives them their activity context), against a SQLite store in a
temporary directory, with an email provider that accepts each message at once. What is
left is what a broadcast does for each recipient beside the send itself: reading the
recipients, customers, contact points and consent; planning and rendering; marking
``sending``; writing the delivery rows, the recipients' state and the sealed audit
events. Each round broadcasts to N customers of its own; printed per round and as
medians over the rounds, in microseconds per recipient:

- ``process``: CPU of the whole process (the store driver's thread included);
- ``main``: CPU of the event loop's thread;
- the loop's CPU inside ``_plan``, ``_prepare_chunk`` (planning included), ``_send_all``
  and ``_record`` (a phase's figure also holds what other tasks of the batch ran while it
  awaited the store: with this provider, little).

Unlike bench/broadcast.py, whose rates drift with the machine by a fifth from one round
to the next, these figures move by a few percent: they show what a change to the batch
costs or saves. bench/extra_cpu.py tells what a given CPU per recipient costs the rate.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from broadcast import bench_settings, open_store, seed  # noqa: E402
from sqlalchemy import func, select  # noqa: E402
from temporalio.testing import ActivityEnvironment  # noqa: E402

from activities.broadcast import BroadcastActivities  # noqa: E402
from clarion.channels import OutgoingMessage, ProviderReceipt  # noqa: E402
from clarion.crisis.models import Audience, BatchInput, BroadcastInput, Incident, Tier  # noqa: E402
from clarion.logging import configure_logging  # noqa: E402
from clarion.models import Channel  # noqa: E402
from clarion.store import Store  # noqa: E402
from clarion.store.tables import BroadcastRecipient  # noqa: E402

PHASES = ("_plan", "_prepare_chunk", "_send_all", "_record")


class AcceptAtOnce:
    """An email provider that accepts every message without any I/O."""

    name = "accept"
    channel = Channel.EMAIL

    async def send(self, message: OutgoingMessage) -> ProviderReceipt:
        return ProviderReceipt(provider=self.name, provider_message_id=message.message_id)

    async def aclose(self) -> None:
        return None


def timed(spent: dict[str, float], name: str, method: Callable[..., Awaitable[Any]]) -> Any:
    """``method``, adding the event loop thread's CPU it takes to ``spent[name]``."""

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.thread_time()
        try:
            return await method(*args, **kwargs)
        finally:
            spent[name] = spent.get(name, 0.0) + time.thread_time() - started

    return wrapper


async def one_round(
    acts: BroadcastActivities, store: Store, env: ActivityEnvironment, prefix: str, batch: int
) -> tuple[int, float, float, float]:
    """Broadcast to the customers of ``prefix``: (recipients, process CPU s, loop CPU s,
    wall s) of the batches."""
    broadcast_id = f"bench-{prefix}"
    prepared = await env.run(
        acts.prepare_broadcast,
        BroadcastInput(
            broadcast_id=broadcast_id,
            incident=Incident(id=f"inc-{prefix}", title="bench"),
            template="crisis-outage",
            audience=Audience(segment=f"bench == '{prefix}'"),
            tiers=[
                Tier(name="first", segment="vip == 'yes'", channels=[Channel.EMAIL]),
                Tier(name="everyone", segment="true", channels=[Channel.EMAIL]),
            ],
        ),
    )
    assert prepared.ok, prepared.error
    process, loop, wall = time.process_time(), time.thread_time(), time.perf_counter()
    for r in prepared.ranges:
        for start in range(r.seq_from, r.seq_to + 1, batch):
            await env.run(
                acts.send_broadcast_batch,
                BatchInput(
                    broadcast_id=broadcast_id,
                    tier=r.tier,
                    seq_from=start,
                    seq_to=min(start + batch - 1, r.seq_to),
                    channels=[Channel.EMAIL],
                    workflow_id=f"wf-{broadcast_id}",
                ),
            )
    process = time.process_time() - process
    loop = time.thread_time() - loop
    wall = time.perf_counter() - wall
    async with store.session() as session:
        sent = await session.scalar(
            select(func.count()).where(
                BroadcastRecipient.broadcast_id == broadcast_id,
                BroadcastRecipient.status == "sent",
            )
        )
    return int(sent or 0), process, loop, wall


async def main(n: int, rounds: int, batch: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="clarion-batch-cpu-"))
    settings = bench_settings(work, 1, "unused")
    configure_logging(settings.log_level)
    store = await open_store(settings)
    for r in range(rounds):
        await seed(store, n, f"b{r}x")
    acts = BroadcastActivities(store, {Channel.EMAIL: AcceptAtOnce()}, settings)
    spent: dict[str, float] = {}
    for name in PHASES:
        setattr(acts, name, timed(spent, name, getattr(acts, name)))
    gc.collect()
    gc.freeze()  # as the worker does after start-up
    env = ActivityEnvironment()
    print(f"n={n} rounds={rounds} batch={batch} chunk={settings.broadcast_chunk_size}", flush=True)
    figures: dict[str, list[float]] = {}
    try:
        for r in range(rounds):
            spent.clear()
            sent, process, loop, wall = await one_round(acts, store, env, f"b{r}x", batch)
            if sent != n:
                raise SystemExit(f"round {r + 1}: {sent} of {n} recipients sent")
            row = {"process": process, "main": loop, "wall": wall} | {
                name: spent.get(name, 0.0) for name in PHASES
            }
            for key, seconds in row.items():
                figures.setdefault(key, []).append(seconds / n * 1e6)
            print(
                f"round {r + 1}: "
                + ", ".join(f"{key} {seconds / n * 1e6:.0f}" for key, seconds in row.items())
                + " µs per recipient",
                flush=True,
            )
    finally:
        await store.close()
    print(f"--- medians over {rounds} rounds, µs per recipient")
    print(", ".join(f"{key} {statistics.median(values):.0f}" for key, values in figures.items()))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2000, help="recipients per batch")
    args = parser.parse_args()
    asyncio.run(main(args.n, args.rounds, args.batch))
