"""Benchmark: Clarion's SMTP client, messages composed directly against the same messages
built with the email package (how every email was built before), side by side.

    .venv/bin/python bench/smtp_client.py [--n 5000] [--rounds 5] [--concurrency 32]
                                          [--composed-only]

Both send N crisis notices (the text Clarion's crisis-outage template renders) through
SmtpEmailProvider, with its pool of connections, to the SMTP sink in its own process
(bench/smtp_sink.py). "email package" is the provider with the composer switched off: it
builds each message with EmailMessage, flattens it and sends it with aiosmtplib's
sendmail. The two alternate for --rounds rounds; printed: each round's rate and CPU per
message of this process, and the medians. The sink's counts are checked at the end (no
loss, no duplicate). --composed-only sends composed messages only: the CPU the client
spends per email, to compare two versions of it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from broadcast import bench_settings, plain_email, rendered_texts, start_sink, wait_ready  # noqa: E402

from clarion.channels import email as email_channel  # noqa: E402


async def main(n: int, rounds: int, concurrency: int, composed_only: bool) -> None:
    text, _ = rendered_texts()
    work = Path(tempfile.mkdtemp(prefix="clarion-smtp-"))
    sink, port, sink_out = await start_sink(work)
    await wait_ready(sink_out)
    settings = bench_settings(work, port, "unused")
    composer = email_channel.compose
    names = ["composed"] if composed_only else ["email package", "composed"]
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    print(f"n={n} rounds={rounds} concurrency={concurrency} smtp_pool={settings.smtp_pool_size}")
    try:
        for r in range(rounds):
            for name in names:
                email_channel.compose = composer if name == "composed" else _never  # type: ignore[assignment]
                cpu = time.process_time()
                elapsed = await plain_email(settings, n, concurrency, f"r{r}{name[0]}", text)
                cpu = time.process_time() - cpu
                results[name].append((n / elapsed, cpu / n * 1000))
                print(
                    f"round {r + 1}: {name:14} {n / elapsed:7.1f}/s, "
                    f"{cpu / n * 1000:.3f} ms CPU per message",
                    flush=True,
                )
    finally:
        email_channel.compose = composer
        sink.terminate()
        await sink.wait()
    counts = json.loads(sink_out.read_text())
    expected = len(names) * rounds * n
    duplicates = sum(c - 1 for c in counts["by_recipient"].values() if c > 1)
    print(f"--- medians over {rounds} rounds")
    for name, rows in results.items():
        rate = statistics.median(r for r, _ in rows)
        cpu = statistics.median(c for _, c in rows)
        print(f"{name:14} {rate:7.1f}/s, {cpu:.3f} ms CPU per message")
    if not composed_only:
        old, new = (statistics.median(r for r, _ in results[k]) for k in results)
        print(f"composed / email package: {new / old:.2f}x the rate")
    print(f"sink: {counts['messages']} of {expected} messages, duplicates {duplicates}")


def _never(*_: Any) -> None:
    return None


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--composed-only",
        action="store_true",
        help="only the composed messages (the CPU of the client)",
    )
    args = parser.parse_args()
    asyncio.run(main(args.n, args.rounds, args.concurrency, args.composed_only))
