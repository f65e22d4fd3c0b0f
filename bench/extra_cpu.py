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

With --elsewhere each amount is also burnt in another process: a planner process burns
half of it per message before handing a chunk of 1,000 messages to the sending process
over a socket (two chunks in flight), and the other half when the chunk's outcomes come
back, the way a broadcast batch plans and records its chunks. It answers whether moving
that work out of the sending process would help on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import pickle
import socket
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from broadcast import (  # noqa: E402
    SUBJECT,
    bench_settings,
    plain_email,
    rendered_texts,
    start_sink,
    wait_ready,
)

from clarion.channels import OutgoingEmail, SmtpEmailProvider  # noqa: E402
from clarion.config import Settings  # noqa: E402

SLICE = 32  # messages' worth of CPU burnt at a time
CHUNK = 1000  # messages a planner process hands over at a time (--elsewhere)


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


async def _receive(reader: asyncio.StreamReader) -> Any:
    (size,) = struct.unpack("!I", await reader.readexactly(4))
    return pickle.loads(await reader.readexactly(size))


def _hand_over(writer: asyncio.StreamWriter, value: Any) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    writer.write(struct.pack("!I", len(data)) + data)


def planner(sock: socket.socket, n: int, extra_us: int, prefix: str, text: str) -> None:
    """The planner process of --elsewhere: half the extra CPU per message before it hands
    a chunk over, half when the chunk's outcomes come back; two chunks in flight."""

    async def run() -> None:
        reader, writer = await asyncio.open_connection(sock=sock)
        starts = list(range(0, n, CHUNK))
        handed = returned = 0
        while returned < len(starts):
            while handed < len(starts) and handed - returned < 2:
                first = starts[handed]
                last = min(first + CHUNK, n)
                burn(extra_us / 2 * (last - first) / 1e6)
                _hand_over(
                    writer,
                    [
                        OutgoingEmail(f"{prefix}-{i}", f"{prefix}{i}@bench.test", SUBJECT, text)
                        for i in range(first, last)
                    ],
                )
                await writer.drain()
                handed += 1
            outcomes = await _receive(reader)
            returned += 1
            burn(extra_us / 2 * len(outcomes) / 1e6)
        _hand_over(writer, None)
        await writer.drain()
        writer.close()

    asyncio.run(run())


async def send_elsewhere(
    settings: Settings, text: str, n: int, extra_us: int, prefix: str
) -> tuple[float, float]:
    """(messages per second, ms of CPU per message of the sending process) for n emails
    that a planner process hands over in chunks, burning ``extra_us`` per message."""
    ours, theirs = socket.socketpair()
    process = multiprocessing.get_context("fork").Process(
        target=planner, args=(theirs, n, extra_us, prefix, text)
    )
    cpu, started = time.process_time(), time.perf_counter()
    process.start()
    theirs.close()
    reader, writer = await asyncio.open_connection(sock=ours)
    provider = SmtpEmailProvider(settings)
    gate = asyncio.Semaphore(settings.broadcast_concurrency)

    async def one(message: OutgoingEmail, outcomes: list[tuple[str, str]]) -> None:
        async with gate:
            receipt = await provider.send(message)
            outcomes.append((message.message_id, receipt.provider_message_id))

    async def chunk(messages: list[OutgoingEmail]) -> None:
        outcomes: list[tuple[str, str]] = []
        await asyncio.gather(*(one(message, outcomes) for message in messages))
        _hand_over(writer, outcomes)
        await writer.drain()

    chunks: list[asyncio.Task[None]] = []
    while (messages := await _receive(reader)) is not None:
        chunks.append(asyncio.create_task(chunk(messages)))
    await asyncio.gather(*chunks)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    writer.close()
    await provider.aclose()
    await asyncio.to_thread(process.join)
    return n / elapsed, cpu / n * 1000


async def main(n: int, rounds: int, extras: list[int], elsewhere: bool) -> None:
    text, _ = rendered_texts()
    work = Path(tempfile.mkdtemp(prefix="clarion-extra-"))
    sink, port, sink_out = await start_sink(work)
    await wait_ready(sink_out)
    settings = bench_settings(work, port, "unused")
    ways = [("here", send)] + ([("elsewhere", send_elsewhere)] if elsewhere else [])
    rates: dict[tuple[str, int], list[float]] = {}
    cpus: dict[tuple[str, int], list[float]] = {}
    print(f"n={n} rounds={rounds} smtp_pool={settings.smtp_pool_size}", flush=True)
    try:
        await send(settings, text, min(n, 1000), 0, "warm")
        for r in range(rounds):
            for extra in extras:
                for where, how in ways:
                    rate, cpu = await how(settings, text, n, extra, f"r{r}x{extra}{where}x")
                    rates.setdefault((where, extra), []).append(rate)
                    cpus.setdefault((where, extra), []).append(cpu)
                    print(
                        f"round {r + 1}: extra {extra:4d} us {where:9s}: {rate:7.1f}/s, "
                        f"{cpu:.2f} ms CPU per message (the sending process)",
                        flush=True,
                    )
    finally:
        sink.terminate()
        await sink.wait()
    print(f"--- medians over {rounds} rounds")
    base = statistics.median(rates[("here", extras[0])])
    for extra in extras:
        for where, _ in ways:
            rate = statistics.median(rates[(where, extra)])
            print(
                f"extra {extra:4d} us {where:9s}: {rate:7.1f}/s, "
                f"{statistics.median(cpus[(where, extra)]):.2f} ms CPU per message, "
                f"{rate / base:.2f} of extra {extras[0]} us here"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=6000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--extra", type=int, nargs="+", default=[0, 100, 200, 300])
    parser.add_argument(
        "--elsewhere", action="store_true", help="also burn it in a planner process"
    )
    args = parser.parse_args()
    asyncio.run(main(args.n, args.rounds, args.extra, args.elsewhere))
