"""Benchmark: what CPU spent per message beside the send costs the rate, on this machine.

    .venv/bin/python bench/extra_cpu.py [--n 6000] [--rounds 3] [--extra 0 100 200 300]

The plain asyncio sender of bench/broadcast.py (the same SMTP client, pool and
concurrency) sends N emails to the SMTP sink in its own process, while a task of the same
process burns the given microseconds of CPU per message, a slice at a time between sends
(32 messages' worth, then it lets the sends run): the way Clarion's worker spends CPU on
each recipient, reading, planning and recording, beside the sending. The amounts
alternate for --rounds rounds; printed: each round's rate and CPU per message of the
process for each amount, then the medians and their ratio to the first amount.

It answers "how close to the plain sender can a worker come that spends X more per
message", which is the ceiling of a broadcast whose worker costs that much more than
the plain sender (bench/broadcast.py prints both CPU figures).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from broadcast import bench_settings, plain_email, rendered_texts, start_sink, wait_ready  # noqa: E402

from clarion.config import Settings  # noqa: E402

SLICE = 32  # messages' worth of CPU burnt at a time


def burn(seconds: float) -> None:
    """Spend ``seconds`` of this thread's CPU."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


async def send(
    settings: Settings, text: str, n: int, extra_us: int, prefix: str
) -> tuple[float, float]:
    """(messages per second, ms of CPU per message) for n emails sent by the plain sender
    with ``extra_us`` burnt per message beside it."""

    async def burner() -> None:
        for _ in range(0, n, SLICE):
            burn(extra_us * SLICE / 1e6)
            await asyncio.sleep(0)

    cpu = time.process_time()
    _, elapsed = await asyncio.gather(
        burner(), plain_email(settings, n, settings.broadcast_concurrency, prefix, text)
    )
    return n / elapsed, (time.process_time() - cpu) / n * 1000


async def main(n: int, rounds: int, extras: list[int]) -> None:
    text, _ = rendered_texts()
    work = Path(tempfile.mkdtemp(prefix="clarion-extra-"))
    sink, port, sink_out = await start_sink(work)
    await wait_ready(sink_out)
    settings = bench_settings(work, port, "unused")
    rates: dict[int, list[float]] = {x: [] for x in extras}
    cpus: dict[int, list[float]] = {x: [] for x in extras}
    print(f"n={n} rounds={rounds} smtp_pool={settings.smtp_pool_size}", flush=True)
    try:
        await send(settings, text, min(n, 1000), 0, "warm")
        for r in range(rounds):
            for extra in extras:
                rate, cpu = await send(settings, text, n, extra, f"r{r}x{extra}x")
                rates[extra].append(rate)
                cpus[extra].append(cpu)
                print(
                    f"round {r + 1}: extra {extra:4d} us: {rate:7.1f}/s, {cpu:.2f} ms CPU per message",
                    flush=True,
                )
    finally:
        sink.terminate()
        await sink.wait()
    print(f"--- medians over {rounds} rounds")
    base = statistics.median(rates[extras[0]])
    for extra in extras:
        rate = statistics.median(rates[extra])
        print(
            f"extra {extra:4d} us: {rate:7.1f}/s, {statistics.median(cpus[extra]):.2f} ms CPU "
            f"per message, {rate / base:.2f} of extra {extras[0]} us"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=6000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--extra", type=int, nargs="+", default=[0, 100, 200, 300])
    args = parser.parse_args()
    asyncio.run(main(args.n, args.rounds, args.extra))
