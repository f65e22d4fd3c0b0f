"""A journey survives a worker kill and a Temporal dev server restart, and resumes on time."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from clarion.journeys.loader import parse_journey
from clarion.store import Store
from clarion.store import journeys as journey_repo
from clarion.temporal import connect
from starters.dev import start_temporal, stop_process, wait_for_temporal
from starters.sdk import ClarionClient
from tests.conftest import add_customer, make_settings, uid
from tests.support.fake_twilio import FakeTwilio
from tests.support.processes import spawn_cli, wait_until
from tests.support.smtp_server import SmtpServer, free_port

PAUSE = 8


async def test_journey_survives_worker_kill_and_server_restart(
    store: Store, smtp_server: SmtpServer, fake_twilio: FakeTwilio, tmp_path: Path
) -> None:
    name = f"t-restart-{uuid.uuid4().hex[:8]}"
    definition = parse_journey(
        {
            "steps": {
                "hello": {
                    "send": {"template": "test-notice", "context": {"ref": "R1"}},
                    "next": "pause",
                },
                "pause": {"wait": {"duration": f"{PAUSE}s"}, "next": "again"},
                "again": {"send": {"template": "test-notice", "context": {"ref": "R2"}}},
            }
        },
        where="test",
        default_name=name,
    )
    async with store.transaction() as session:
        await journey_repo.publish_journey(session, definition=definition)
    customer = await add_customer(store)
    assert customer.email
    settings = make_settings(tmp_path, store, smtp_server, fake_twilio, task_queue=uid("tq"))
    settings = settings.model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"})
    log = tmp_path / "workers.log"

    server = await start_temporal(settings, ui_port=free_port())
    worker = None
    try:
        client = await wait_for_temporal(settings, server)
        worker = await spawn_cli(settings, "worker", log=log)
        clarion = ClarionClient(client, settings, store=store)
        await clarion.start_journey(name, customer.external_id)

        async def pausing() -> bool:
            async with store.session() as session:
                runs = await journey_repo.runs_for_customer(
                    session, customer_external_id=customer.external_id
                )
            return bool(runs) and runs[0].current_step == "pause"

        await wait_until(pausing, within=60, what="the journey to reach its wait")
        worker.kill()
        await worker.wait()
        await stop_process(server)  # the server goes down too; its state stays in temporal.db
        await asyncio.sleep(1)

        server = await start_temporal(settings, ui_port=free_port())
        await wait_for_temporal(settings, server)
        worker = await spawn_cli(settings, "worker", log=log)
        client = await connect(settings)
        handle = ClarionClient(client, settings, store=store).journey_handle(
            name, customer.external_id
        )
        result = await asyncio.wait_for(handle.result(), 90)
    finally:
        if worker is not None and worker.returncode is None:
            worker.kill()
            await worker.wait()
        await stop_process(server)

    assert result.status.value == "completed", (result, log.read_text()[-2000:])
    subjects = [str(m.message["Subject"]) for m in smtp_server.to(customer.email)]
    assert sum("R1" in s for s in subjects) == 1  # not started again from the beginning
    assert sum("R2" in s for s in subjects) == 1
    async with store.session() as session:
        [run] = await journey_repo.runs_for_customer(
            session, customer_external_id=customer.external_id
        )
        steps = {s.step: s for s in await journey_repo.steps_of_run(session, run_id=run.id)}
    waited = steps["again"].entered_at - steps["pause"].entered_at
    assert timedelta(seconds=PAUSE) <= waited < timedelta(seconds=PAUSE + 20), waited


# Processes, HTTP and the browser over a store: SQLite is enough (see conftest.py).
pytestmark = pytest.mark.sqlite_only
