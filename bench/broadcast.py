"""Benchmark: a Clarion crisis broadcast against a plain asyncio sender, same channel.

    .venv/bin/python bench/broadcast.py [--n 10000 | --full] [--sms-n N] [--rounds 3]
                                        [--workers 1] [--smtp-pool 64] [--concurrency 64]

Email: an SMTP sink runs in a separate process (bench/smtp_sink.py) and counts what it
receives per recipient. A plain asyncio sender with no durability sends N emails over
the same SMTP client and number of pooled connections Clarion uses (--smtp-pool, and
--concurrency messages in flight, on both sides), with the very text
Clarion's template renders (the ceiling of the channel for one process on this
machine); then a Clarion broadcast reaches N other customers (10% of them in a first
tier). SMS: the same against the Twilio-compatible server in its own process, with the
twilio library on both sides, for --sms-n messages (by default as many as emails;
10,000 with --full). The two sides alternate for --rounds rounds (this machine's
speed drifts by a third from one minute to the next); printed: the rates of each round,
their medians and ratios, time to notify tier 1 and everyone, and duplicates and losses
counted at the sink over all rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, insert, select  # noqa: E402

from clarion.channels import OutgoingEmail, OutgoingSms, SmtpEmailProvider, TwilioSmsProvider  # noqa: E402
from clarion.config import Settings  # noqa: E402
from clarion.crisis.models import BroadcastState, Tier  # noqa: E402
from clarion.models import Channel  # noqa: E402
from clarion.store import Store, repo  # noqa: E402
from clarion.store.tables import BroadcastRecipient, ContactPoint, Customer, utcnow  # noqa: E402
from clarion.templates import load_template_dir  # noqa: E402
from clarion.templates.render import RenderedEmail, RenderedSms, render  # noqa: E402
from starters.dev import start_temporal, stop_process, wait_for_temporal  # noqa: E402
from starters.sdk import ClarionClient  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SUBJECT = "Service disruption"


def worker_env(settings: Settings) -> dict[str, str]:
    """The environment of a ``clarion worker`` process with ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    for name, value in settings.model_dump().items():
        if value not in (None, ""):
            env[f"CLARION_{name.upper()}"] = str(
                value.get_secret_value() if hasattr(value, "get_secret_value") else value
            )
    return env


def bench_settings(work: Path, smtp_port: int, task_queue: str, **extra: Any) -> Settings:
    """A bench run's settings: its own home and Temporal port, email to the SMTP sink on
    ``smtp_port``, quiet logs; ``extra`` adds or replaces settings."""
    values: dict[str, Any] = {
        "home": work, "temporal_address": f"127.0.0.1:{free_port()}", "task_queue": task_queue,
        "smtp_host": "127.0.0.1", "smtp_port": smtp_port,
        "email_from": "Bench <bench@bench.test>", "log_level": "WARNING",
    }  # fmt: skip
    return Settings(_env_file=None, **(values | extra))  # type: ignore[call-arg]


async def stop_all(
    workers: Iterable[asyncio.subprocess.Process],
    server: asyncio.subprocess.Process,
    servers: Iterable[asyncio.subprocess.Process],
    store: Store,
) -> None:
    """Stop the worker processes, then the Temporal dev server and the other ``servers``
    (SMTP sink, Twilio-compatible server), and close the store."""
    for proc in workers:
        proc.terminate()
        await proc.wait()
    await stop_process(server)
    for proc in servers:
        proc.terminate()
        await proc.wait()
    await store.close()


async def start_sink(work: Path) -> tuple[asyncio.subprocess.Process, int, Path]:
    """The SMTP sink in its own process: (process, port, where it writes its counts)."""
    port, out = free_port(), work / "sink.json"
    sink = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "bench" / "smtp_sink.py"), "--port", str(port),
        "--out", str(out),
    )  # fmt: skip
    return sink, port, out


async def wait_ready(*outs: Path) -> None:
    """Until each server started above has written ``<out>.ready`` (10 s at most)."""
    for _ in range(100):
        if all(Path(f"{out}.ready").exists() for out in outs):
            return
        await asyncio.sleep(0.1)


async def publish_examples(session: Any) -> None:
    """Publish the example templates (the crisis ones among them)."""
    for template in load_template_dir(ROOT / "examples" / "templates"):
        await repo.publish_template(session, definition=template)


async def open_store(settings: Settings) -> Store:
    """The store of ``settings``, migrated, with the example templates published."""
    store = Store(settings.database_url)
    await store.migrate()
    async with store.transaction() as session:
        await publish_examples(session)
    return store


async def spawn_worker(settings: Settings, log: Path) -> asyncio.subprocess.Process:
    """A ``clarion worker`` process with ``settings``, its log in ``log``."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "starters.cli", "worker",
        env=worker_env(settings), cwd=ROOT, stderr=log.open("wb"),
    )  # fmt: skip


def phone(k: int, area: str = "415") -> str:
    return f"+1{area}{5550000 + k:07d}"


async def seed(store: Store, n: int, prefix: str, *, phones_from: int | None = None) -> None:
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
            if phones_from is not None:
                points.append(
                    {
                        "customer_id": cid,
                        "kind": "phone",
                        "value": phone(phones_from + i),
                        "created_at": now,
                        "updated_at": now,
                    }
                )
        await session.execute(insert(ContactPoint), points)


async def plain_email(
    settings: Settings, n: int, concurrency: int, prefix: str, text: str
) -> float:
    """n emails with the text Clarion sends, through the same SMTP client; no store, no
    workflow, no retries: the ceiling of the channel for this process."""
    provider = SmtpEmailProvider(settings)
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            await provider.send(
                OutgoingEmail(f"{prefix}-{i}", f"{prefix}{i}@bench.test", SUBJECT, text)
            )

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    elapsed = time.perf_counter() - started
    await provider.aclose()
    return elapsed


async def plain_sms(settings: Settings, n: int, concurrency: int, first: int, body: str) -> float:
    provider = TwilioSmsProvider(settings)
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            await provider.send(
                OutgoingSms(f"plain-sms-{first + i}", phone(first + i, "628"), body)
            )

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    elapsed = time.perf_counter() - started
    await provider.aclose()
    return elapsed


async def broadcast(
    clarion: ClarionClient, store: Store, prefix: str, channels: list[Channel], n: int
) -> dict[str, Any]:
    """Launch a broadcast to the n customers of ``prefix`` and wait until every one is
    recorded as handled. The wait watches the store, not the workflow: a progress query
    costs the worker a few milliseconds of CPU, which 5 polls a second would take from
    the sending. The progress is queried once at the end."""
    tiers = [
        Tier(name="first", segment="vip == 'yes'", channels=channels),
        Tier(name="everyone", segment="true", channels=channels),
    ]
    started = time.perf_counter()
    handle = await clarion.launch_broadcast(
        title="bench", template="crisis-outage", segment=f"bench == '{prefix}'", tiers=tiers
    )
    of_broadcast = BroadcastRecipient.broadcast_id == handle.broadcast_id
    snapshot = select(func.count()).select_from(BroadcastRecipient).where(of_broadcast)
    # The first recipient not handled yet, from a seq on: each poll reads on from where
    # the last stopped (a count of the handled would read them all, 10 times a second).
    first_open, snapshot_written = 1, False
    while True:
        async with store.session() as session:
            snapshot_written = snapshot_written or (await session.scalar(snapshot) or 0) >= n
            if snapshot_written:
                seq = await session.scalar(
                    select(BroadcastRecipient.seq)
                    .where(
                        of_broadcast,
                        BroadcastRecipient.seq >= first_open,
                        BroadcastRecipient.status.in_(("pending", "sending")),
                    )
                    .order_by(BroadcastRecipient.seq)
                    .limit(1)
                )
                if seq is None:
                    break
                first_open = seq
        await asyncio.sleep(0.1)
    elapsed = time.perf_counter() - started
    while True:
        p = await handle.progress()
        if p.state is BroadcastState.ACTIVE and p.done >= p.total:
            break
        await asyncio.sleep(0.2)
    return {
        "elapsed": elapsed,
        "progress": p,
        "tier1_after": p.tiers[0].notified_after_s,
        "all_after": p.tiers[-1].notified_after_s,
    }


def count(received: dict[str, int], keys: list[str]) -> tuple[int, int]:
    """(losses, duplicates) over the expected recipients."""
    losses = sum(1 for k in keys if received.get(k, 0) == 0)
    duplicates = sum(max(0, received.get(k, 0) - 1) for k in keys)
    return losses, duplicates


def rendered_texts() -> tuple[str, str]:
    """What the crisis-outage template says to a bench customer, by email and by SMS."""
    template = next(
        t for t in load_template_dir(ROOT / "examples" / "templates") if t.name == "crisis-outage"
    )
    variables = {"customer": {"first_name": "Bench"}, "broadcast": {}}
    email = render(template.locales["en"].email, variables)
    sms = render(template.locales["en"].sms, variables)
    assert isinstance(email, RenderedEmail) and isinstance(sms, RenderedSms)
    assert email.subject == SUBJECT
    return email.text, sms.body


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by these processes (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


async def measure(
    res: dict[str, Any], r: int, pids: dict[str, list[int]], key: str, count: int, work: Any
) -> Any:
    """Run one side; note its rate and the CPU seconds per message of the sending
    process(es) (this process for plain, the worker(s) for Clarion), and of every process
    of the run (``pids``: this one, the workers, the Temporal server, the channel's server),
    by name."""
    plain = key.startswith("plain")
    before = {name: cpu_seconds(group) for name, group in pids.items()}
    t0 = time.perf_counter()
    out = await work
    elapsed = time.perf_counter() - t0
    spent = {
        name: (cpu_seconds(group) - before[name]) / count * 1000 for name, group in pids.items()
    }
    if isinstance(out, dict):  # a broadcast: until the last recipient was recorded
        elapsed = out["elapsed"]
    res[key], res[f"{key}_cpu_ms"] = count / elapsed, spent["bench" if plain else "workers"]
    res[f"{key}_where"] = spent
    where = ", ".join(f"{name} {ms:.2f}" for name, ms in spent.items())
    print(
        f"round {r + 1}: {key:14} {res[key]:7.1f}/s, {res[f'{key}_cpu_ms']:.2f} ms CPU per message"
        f" (ms per message: {where})",
        flush=True,
    )
    return out


def median(values: list[float]) -> float:
    return statistics.median(values)


async def main(
    n: int, sms_n: int, rounds: int, workers: int, smtp_pool: int, concurrency: int
) -> None:
    email_text, sms_body = rendered_texts()
    work = Path(tempfile.mkdtemp(prefix="clarion-bcast-"))
    sink, smtp_port, sink_out = await start_sink(work)
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
    await wait_ready(sink_out, work / "twilio.json")
    settings = bench_settings(
        work, smtp_port, "bench-broadcast",
        twilio_account_sid="AC00000000000000000000000000000001", twilio_auth_token="test-token",
        twilio_from_number="+14155550100", twilio_base_url=f"http://127.0.0.1:{twilio_port}",
        smtp_pool_size=smtp_pool, broadcast_concurrency=concurrency,
    )  # fmt: skip
    store = await open_store(settings)
    for r in range(rounds):
        await seed(store, n, f"c{r}x")
        await seed(store, sms_n, f"s{r}x", phones_from=r * sms_n)
    print(
        f"n={n} sms_n={sms_n} rounds={rounds} workers={workers} cores={os.cpu_count()} "
        f"smtp_pool={settings.smtp_pool_size} concurrency={settings.broadcast_concurrency}",
        flush=True,
    )

    server = await start_temporal(settings, ui_port=free_port())
    procs: list[asyncio.subprocess.Process] = []
    results: list[dict[str, Any]] = []
    try:
        client = await wait_for_temporal(settings, server)
        for k in range(workers):
            procs.append(await spawn_worker(settings, work / f"worker{k}.log"))
        await asyncio.sleep(3)
        clarion = ClarionClient(client, settings, store=store)
        conc = settings.broadcast_concurrency
        for r in range(rounds):
            # Each round: plain then Clarion, email then SMS, so that both sides see the same
            # machine; the medians over the rounds are the figures.
            res: dict[str, Any] = {}
            pids = {
                "bench": [os.getpid()],
                "workers": [proc.pid for proc in procs],
                "temporal": [server.pid],
            }
            email_pids = pids | {"sink": [sink.pid]}
            sms_pids = pids | {"twilio": [twilio.pid]}
            await measure(
                res,
                r,
                email_pids,
                "plain_email",
                n,
                plain_email(settings, n, conc, f"p{r}x", email_text),
            )
            b = await measure(
                res,
                r,
                email_pids,
                "clarion_email",
                n,
                broadcast(clarion, store, f"c{r}x", [Channel.EMAIL], n),
            )
            res["tier1"], res["all"] = b["tier1_after"], b["all_after"]
            await measure(
                res,
                r,
                sms_pids,
                "plain_sms",
                sms_n,
                plain_sms(settings, sms_n, conc, r * sms_n, sms_body),
            )
            await measure(
                res,
                r,
                sms_pids,
                "clarion_sms",
                sms_n,
                broadcast(clarion, store, f"s{r}x", [Channel.SMS], sms_n),
            )
            results.append(res)
    finally:
        await stop_all(procs, server, [sink, twilio], store)

    received = json.loads(sink_out.read_text())["by_recipient"]
    sms_received = json.loads((work / "twilio.json").read_text())["by_recipient"]
    plain_loss = plain_dup = loss = dup = sms_loss = sms_dup = 0
    for r in range(rounds):
        a, b_ = count(received, [f"p{r}x{i}@bench.test" for i in range(n)])
        plain_loss, plain_dup = plain_loss + a, plain_dup + b_
        a, b_ = count(received, [f"c{r}x{i}@bench.test" for i in range(n)])
        loss, dup = loss + a, dup + b_
        a, b_ = count(sms_received, [phone(r * sms_n + i) for i in range(sms_n)])
        sms_loss, sms_dup = sms_loss + a, sms_dup + b_
    m = {k: median([res[k] for res in results]) for k in results[0] if not k.endswith("_where")}
    ratios = [res["clarion_email"] / res["plain_email"] for res in results]
    sms_ratios = [res["clarion_sms"] / res["plain_sms"] for res in results]
    print(f"--- medians over {rounds} round(s)")
    print(
        f"email plain asyncio sender: {m['plain_email']:8.1f}/s; losses {plain_loss}, duplicates {plain_dup}"
    )
    print(
        f"email Clarion broadcast:    {m['clarion_email']:8.1f}/s (from launch); losses {loss}, duplicates {dup}"
    )
    print(
        f"email ratio Clarion/plain: {median(ratios):.2f} (target >= 0.90; per round: "
        f"{', '.join(f'{x:.2f}' for x in ratios)}); tier 1 ({n // 10}) notified after "
        f"{m['tier1']:.1f}s, everyone after {m['all']:.1f}s"
    )
    cpu = m["plain_email_cpu_ms"] / m["clarion_email_cpu_ms"]
    sms_cpu = m["plain_sms_cpu_ms"] / m["clarion_sms_cpu_ms"]
    print(
        f"CPU per message (the sender's process; Clarion: its worker): email plain "
        f"{m['plain_email_cpu_ms']:.2f} ms, Clarion {m['clarion_email_cpu_ms']:.2f} ms "
        f"(plain/Clarion {cpu:.2f}); sms plain {m['plain_sms_cpu_ms']:.2f} ms, Clarion "
        f"{m['clarion_sms_cpu_ms']:.2f} ms (plain/Clarion {sms_cpu:.2f})"
    )
    for side in ("plain_email", "clarion_email", "plain_sms", "clarion_sms"):
        names = results[0][f"{side}_where"]
        where = ", ".join(
            f"{name} {median([res[f'{side}_where'][name] for res in results]):.2f}"
            for name in names
        )
        print(f"CPU of each process, ms per message, {side}: {where}")
    print(
        f"sms plain twilio sender:    {m['plain_sms']:8.1f}/s; Clarion broadcast {m['clarion_sms']:8.1f}/s; "
        f"ratio {median(sms_ratios):.2f} (per round: {', '.join(f'{x:.2f}' for x in sms_ratios)}); "
        f"losses {sms_loss}, duplicates {sms_dup}"
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--full", action="store_true", help="100,000 emails (one round)")
    parser.add_argument(
        "--sms-n", type=int, default=None, help="SMS per side (default --n; 10,000 with --full)"
    )
    parser.add_argument("--rounds", type=int, default=None, help="default 3, 1 with --full")
    parser.add_argument(
        "--workers", type=int, default=1, help="Clarion worker processes (default 1)"
    )
    parser.add_argument(
        "--smtp-pool",
        type=int,
        default=64,
        help="SMTP connections of each side (CLARION_SMTP_POOL_SIZE; default 64)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=64,
        help="messages in flight on each side (CLARION_BROADCAST_CONCURRENCY; default 64)",
    )
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.full else 3)
    sms_n = args.sms_n or (10_000 if args.full else args.n)
    n = 100_000 if args.full else args.n
    asyncio.run(main(n, sms_n, rounds, args.workers, args.smtp_pool, args.concurrency))
    sys.stdout.flush()
    os._exit(0)
