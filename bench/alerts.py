"""Benchmark: from an operations alert to customers notified, Clarion's part of it.

    .venv/bin/python bench/alerts.py [--n 1000] [--rounds 3]

Starts a dev server, an SMTP sink in its own process and one Clarion worker (with alert
rules mapping ``bench.*`` keys to the pre-approved crisis-outage template), seeds --n
customers per round, then per round: posts a critical alert affecting that round's
customers, waits for the launch proposal to open, approves it at once as an incident
manager, and waits until every customer was sent the email. Printed per round and as
medians: alert to proposal open, approval to launch, approval to everyone notified, and
alert to everyone notified. The human decision is instant here: what remains is
Clarion's own share of "templates out within 15 minutes of confirmation". Losses and
duplicates are counted at the sink.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from broadcast import (  # noqa: E402
    bench_settings,
    count,
    free_port,
    publish_examples,
    seed,
    spawn_worker,
    start_sink,
    stop_all,
    wait_ready,
)
from pydantic import SecretStr  # noqa: E402

from clarion.crisis.models import BroadcastState  # noqa: E402
from clarion.store import Store  # noqa: E402
from clarion.store import incidents as incidents_repo  # noqa: E402
from clarion.store import operators as operators_repo  # noqa: E402
from starters.dev import start_temporal, wait_for_temporal  # noqa: E402
from starters.sdk import ClarionClient  # noqa: E402

RULES = """\
debounce: {sustain: 5m, settle: 10m, immediate: [critical]}
types:
  - name: bench
    keys: ["bench.*"]
    template: crisis-outage
"""


async def one_round(
    clarion: ClarionClient, manager: ClarionClient, store: Store, r: int, n: int
) -> dict[str, float]:
    key = f"bench.r{r}"
    t0 = time.perf_counter()
    await clarion.ingest_alert(
        source="bench",
        key=key,
        severity="critical",
        summary="bench outage",
        affects=f"bench == 'a{r}x'",
    )
    while True:
        state = await clarion.incident_state(key)
        pending = [
            q
            for q in await manager.approvals(status="pending")
            if q.subject_id == state.incident_id
        ]
        if pending:
            break
        await asyncio.sleep(0.05)
    t_proposed = time.perf_counter()
    await manager.approve(pending[0].id)
    t_approved = time.perf_counter()
    while state.broadcast_id is None:
        await asyncio.sleep(0.05)
        state = await clarion.incident_state(key)
    t_launched = time.perf_counter()
    handle = clarion.broadcast(state.broadcast_id)
    while True:
        p = await handle.progress()
        if p.state is BroadcastState.ACTIVE and p.done >= p.total:
            break
        await asyncio.sleep(0.1)
    t_all = time.perf_counter()
    async with store.session() as session:
        record = await incidents_repo.get_incident(session, state.incident_id)
    assert p.total == n, (p.total, n)
    return {
        "alert_to_proposal": t_proposed - t0,
        "approval_to_launch": t_launched - t_approved,
        "approval_to_all": t_all - t_approved,
        "alert_to_all": t_all - t0,
        "recorded_alert_to_launch": float(record["alert_to_launch_s"]),
    }


async def main(n: int, rounds: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="clarion-alerts-"))
    rules = work / "alerts.yaml"
    rules.write_text(RULES)
    sink, smtp_port, sink_out = await start_sink(work)
    await wait_ready(sink_out)
    settings = bench_settings(work, smtp_port, "bench-alerts", alerts_file=rules)
    store = Store(settings.database_url)
    await store.migrate()
    async with store.transaction() as session:
        await publish_examples(session)
        _, token = await operators_repo.add_operator(
            session, name="bench-manager", roles=["incident_manager"], email=None
        )
    for r in range(rounds):
        await seed(store, n, f"a{r}x")
    print(f"n={n} rounds={rounds} cores={os.cpu_count()}", flush=True)

    server = await start_temporal(settings, ui_port=free_port())
    worker = None
    results: list[dict[str, float]] = []
    try:
        client = await wait_for_temporal(settings, server)
        worker = await spawn_worker(settings, work / "worker.log")
        await asyncio.sleep(3)
        clarion = ClarionClient(client, settings, store=store)
        manager = ClarionClient(
            client,
            settings.model_copy(update={"operator_token": SecretStr(token)}),
            store=store,
        )
        for r in range(rounds):
            res = await one_round(clarion, manager, store, r, n)
            results.append(res)
            print(
                f"round {r + 1}: alert->proposal {res['alert_to_proposal']:.2f}s, "
                f"approval->launch {res['approval_to_launch']:.2f}s, approval->all "
                f"{res['approval_to_all']:.2f}s, alert->all {res['alert_to_all']:.2f}s "
                f"(recorded alert->launch {res['recorded_alert_to_launch']:.2f}s)",
                flush=True,
            )
    finally:
        await stop_all([worker] if worker is not None else [], server, [sink], store)

    received = json.loads(sink_out.read_text())["by_recipient"]
    expected = [f"a{r}x{i}@bench.test" for r in range(rounds) for i in range(n)]
    losses, duplicates = count(received, expected)
    m = {k: statistics.median(res[k] for res in results) for k in results[0]}
    print(f"--- medians over {rounds} round(s), {n} customers each")
    print(
        f"alert->proposal open {m['alert_to_proposal']:.2f}s; approval->launch "
        f"{m['approval_to_launch']:.2f}s; approval->everyone notified "
        f"{m['approval_to_all']:.2f}s; alert->everyone notified {m['alert_to_all']:.2f}s; "
        f"losses {losses}, duplicates {duplicates}"
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.n, args.rounds))
    sys.stdout.flush()
    os._exit(0)
