"""Benchmark: a Clarion crisis broadcast against a plain asyncio sender, same channel.

    .venv/bin/python bench/broadcast.py [--n 10000 | --full] [--sms-n 2000]

Email: an SMTP sink runs in a separate process (bench/smtp_sink.py) and counts what it
receives per recipient. First a plain asyncio sender with no durability sends N emails
over the same number of pooled connections Clarion uses (the ceiling of the channel on
this machine); then a Clarion broadcast reaches N customers (10% of them in a first
tier). SMS: the same against the Twilio-compatible server in its own process, with the
twilio library on both sides. Printed: both rates, their ratio, time to notify tier 1
and everyone, and duplicates and losses counted at the sink.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert, select  # noqa: E402

from clarion.channels import OutgoingEmail, OutgoingSms, SmtpEmailProvider, TwilioSmsProvider  # noqa: E402
from clarion.config import Settings  # noqa: E402
from clarion.crisis.models import BroadcastState, Tier  # noqa: E402
from clarion.models import Channel  # noqa: E402
from clarion.store import Store, repo  # noqa: E402
from clarion.store.tables import ContactPoint, Customer, utcnow  # noqa: E402
from clarion.templates import load_template_dir  # noqa: E402
from starters.dev import start_temporal, stop_process, wait_for_temporal  # noqa: E402
from starters.sdk import ClarionClient  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def seed(store: Store, n: int, prefix: str, *, phones: bool = False) -> None:
    """n customers with an email (and a phone); 10% of them in the first tier."""
    now = utcnow()
    async with store.transaction() as session:
        await session.execute(
            insert(Customer),
            [
                {
                    "external_id": f"{prefix}{i}",
                    "name": f"Bench {i}",
                    "locale": "en",
                    "timezone": "UTC",
                    "attributes": {"bench": prefix, "vip": "yes" if i % 10 == 0 else "no"},
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(n)
            ],
        )
        ids = dict(
            (
                await session.execute(
                    select(Customer.external_id, Customer.id).where(
                        Customer.external_id.like(f"{prefix}%")
                    )
                )
            ).all()
        )
        points = []
        for i in range(n):
            cid = ids[f"{prefix}{i}"]
            points.append(
                {
                    "customer_id": cid,
                    "kind": "email",
                    "value": f"{prefix}{i}@bench.test",
                    "created_at": now,
                    "updated_at": now,
                }
            )
            if phones:
                points.append(
                    {
                        "customer_id": cid,
                        "kind": "phone",
                        "value": f"+1415{5550000 + i:07d}"[-12:],
                        "created_at": now,
                        "updated_at": now,
                    }
                )
        await session.execute(insert(ContactPoint), points)


async def plain_email(settings: Settings, n: int, concurrency: int) -> float:
    provider = SmtpEmailProvider(settings)
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            await provider.send(
                OutgoingEmail(
                    f"plain-{i}",
                    f"plain{i}@bench.test",
                    "Service disruption",
                    "We are aware of a disruption.",
                )
            )

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    elapsed = time.perf_counter() - started
    await provider.aclose()
    return elapsed


async def plain_sms(settings: Settings, n: int, concurrency: int) -> float:
    provider = TwilioSmsProvider(settings)
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            await provider.send(
                OutgoingSms(
                    f"plain-sms-{i}",
                    f"+1628{5550000 + i:07d}"[-12:],
                    "We are aware of a disruption.",
                )
            )

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return time.perf_counter() - started


async def broadcast(clarion: ClarionClient, prefix: str, channels: list[Channel]) -> dict[str, Any]:
    tiers = [
        Tier(name="first", segment="vip == 'yes'", channels=channels),
        Tier(name="everyone", segment="true", channels=channels),
    ]
    started = time.perf_counter()
    handle = await clarion.launch_broadcast(
        title="bench", template="crisis-outage", segment=f"bench == '{prefix}'", tiers=tiers
    )
    while True:
        p = await handle.progress()
        if p.state is BroadcastState.ACTIVE and p.done >= p.total:
            break
        await asyncio.sleep(0.2)
    elapsed = time.perf_counter() - started
    return {
        "elapsed": elapsed,
        "progress": p,
        "tier1_after": p.tiers[0].notified_after_s,
        "all_after": p.tiers[-1].notified_after_s,
    }


def count(
    received: dict[str, int], prefix: str, n: int, domain: str = "@bench.test"
) -> tuple[int, int]:
    """(losses, duplicates) for addresses prefix0..prefix{n-1}."""
    losses = duplicates = 0
    for i in range(n):
        got = received.get(f"{prefix}{i}{domain}", 0)
        losses += got == 0
        duplicates += max(0, got - 1)
    return losses, duplicates


async def main(n: int, sms_n: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="clarion-bcast-"))
    smtp_port, sink_out = free_port(), work / "sink.json"
    sink = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "bench" / "smtp_sink.py"),
        "--port",
        str(smtp_port),
        "--out",
        str(sink_out),
    )
    twilio_port = free_port()
    twilio = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.fake_twilio",
        "--port",
        str(twilio_port),
        "--out",
        str(work / "twilio.json"),
        cwd=ROOT,
    )
    for _ in range(100):
        if Path(str(sink_out) + ".ready").exists() and (work / "twilio.json.ready").exists():
            break
        await asyncio.sleep(0.1)
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        home=work, temporal_address=f"127.0.0.1:{free_port()}", task_queue="bench-broadcast",
        smtp_host="127.0.0.1", smtp_port=smtp_port, email_from="Bench <bench@bench.test>",
        twilio_account_sid="AC00000000000000000000000000000001", twilio_auth_token="test-token",
        twilio_from_number="+14155550100", twilio_base_url=f"http://127.0.0.1:{twilio_port}",
        log_level="WARNING",
    )  # fmt: skip
    store = Store(settings.database_url)
    await store.migrate()
    async with store.transaction() as session:
        for template in load_template_dir(ROOT / "examples" / "templates"):
            await repo.publish_template(session, definition=template)
    await seed(store, n, "c")
    await seed(store, sms_n, "s", phones=True)
    print(
        f"n={n} sms_n={sms_n} cores={os.cpu_count()} smtp_pool={settings.smtp_pool_size} concurrency={settings.broadcast_concurrency}"
    )

    server = await start_temporal(settings, ui_port=free_port())
    worker = None
    try:
        client = await wait_for_temporal(settings, server)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
        for name, value in settings.model_dump().items():
            if value not in (None, ""):
                env[f"CLARION_{name.upper()}"] = str(
                    value.get_secret_value() if hasattr(value, "get_secret_value") else value
                )
        worker = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "starters.cli",
            "worker",
            env=env,
            cwd=ROOT,
            stderr=(work / "worker.log").open("wb"),
        )
        await asyncio.sleep(3)
        clarion = ClarionClient(client, settings, store=store)

        plain_t = await plain_email(settings, n, settings.broadcast_concurrency)
        clarion_email = await broadcast(clarion, "c", [Channel.EMAIL])
        plain_sms_t = await plain_sms(settings, sms_n, settings.broadcast_concurrency)
        clarion_sms = await broadcast(clarion, "s", [Channel.SMS])
    finally:
        if worker is not None:
            worker.terminate()
            await worker.wait()
        await stop_process(server)
        sink.terminate()
        twilio.terminate()
        await sink.wait()
        await twilio.wait()
        await store.close()

    received = json.loads(sink_out.read_text())["by_recipient"]
    sms_received = json.loads((work / "twilio.json").read_text())["by_recipient"]
    plain_loss, plain_dup = count(received, "plain", n)
    loss, dup = count(received, "c", n)
    sms_loss = sum(
        1 for i in range(sms_n) if sms_received.get(f"+1415{5550000 + i:07d}"[-12:], 0) == 0
    )
    sms_dup = sum(
        max(0, sms_received.get(f"+1415{5550000 + i:07d}"[-12:], 0) - 1) for i in range(sms_n)
    )
    e_rate, c_rate = n / plain_t, n / clarion_email["elapsed"]
    s_rate, cs_rate = sms_n / plain_sms_t, sms_n / clarion_sms["elapsed"]
    print(
        f"email plain asyncio sender: {e_rate:8.1f}/s ({plain_t:.1f}s), losses {plain_loss}, duplicates {plain_dup}"
    )
    print(
        f"email Clarion broadcast:    {c_rate:8.1f}/s ({clarion_email['elapsed']:.1f}s from launch), losses {loss}, duplicates {dup}"
    )
    print(
        f"email ratio Clarion/plain: {c_rate / e_rate:.2f} (target >= 0.90); tier 1 ({n // 10}) notified after {clarion_email['tier1_after']:.1f}s, everyone after {clarion_email['all_after']:.1f}s"
    )
    print(
        f"sms plain twilio sender:    {s_rate:8.1f}/s; Clarion broadcast {cs_rate:8.1f}/s; ratio {cs_rate / s_rate:.2f}; losses {sms_loss}, duplicates {sms_dup}"
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--full", action="store_true", help="100,000 emails")
    parser.add_argument("--sms-n", type=int, default=2_000)
    args = parser.parse_args()
    asyncio.run(main(100_000 if args.full else args.n, args.sms_n))
    sys.stdout.flush()
    os._exit(0)
