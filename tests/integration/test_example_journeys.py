"""The shipped example journeys, run end to end with days-long waits skipped.

Runs on the time-skipping dev server (each workflow has its own virtual clock), with a
worker, a store of its own (SQLite) and the loopback SMTP and Twilio servers. With
CLARION_RECORD_HISTORIES=1 the histories are written to tests/data/histories/ for the
replay test (scripts/record-histories.sh).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from temporalio.client import WorkflowHandle

from clarion.channels import build_providers
from clarion.journeys import load_journey_dir
from clarion.journeys.models import JourneyRunStatus
from clarion.store import Store, repo
from clarion.store import journeys as journey_repo
from clarion.templates import load_template_dir
from clarion.temporal import ensure_search_attributes
from starters.sdk import ClarionClient
from tests.conftest import (
    ROOT,
    add_customer,
    make_settings,
    start_time_skipping,
    uid,
    unique_phone,
)
from tests.support.fake_twilio import FakeTwilio
from tests.support.smtp_server import SmtpServer
from workers.main import build_worker

HISTORIES = ROOT / "tests" / "data" / "histories"
RECORD = os.environ.get("CLARION_RECORD_HISTORIES") == "1"


@dataclass
class Examples:
    store: Store
    clarion: ClarionClient
    smtp: SmtpServer
    twilio: FakeTwilio


@pytest.fixture(scope="module")
async def examples(
    smtp_server: SmtpServer, fake_twilio: FakeTwilio, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Examples]:
    home = tmp_path_factory.mktemp("examples")
    store = Store(f"sqlite+aiosqlite:///{home / 'clarion.db'}")
    await store.migrate()
    async with store.transaction() as session:
        for template in load_template_dir(ROOT / "examples" / "templates"):
            await repo.publish_template(session, definition=template)
        for journey in load_journey_dir(ROOT / "examples" / "journeys"):
            await journey_repo.publish_journey(session, definition=journey)
    env = await start_time_skipping()
    await ensure_search_attributes(env.client, "default")
    settings = make_settings(home, store, smtp_server, fake_twilio, task_queue=uid("tq"))
    providers = build_providers(settings)
    try:
        async with build_worker(env.client, settings, store, providers):
            yield Examples(
                store, ClarionClient(env.client, settings, store=store), smtp_server, fake_twilio
            )
    finally:
        for provider in providers.values():
            await provider.aclose()
        await env.shutdown()
        await store.close()


async def finish(handle: WorkflowHandle, name: str) -> object:  # type: ignore[type-arg]
    result = await asyncio.wait_for(handle.result(), 120)
    if RECORD:
        history = await handle.fetch_history()
        (HISTORIES / f"journey_{name}.json").write_text(
            json.dumps(json.loads(history.to_json()), indent=1) + "\n"
        )
    return result


async def steps(store: Store, customer_id: str, journey: str) -> list[tuple[str, str]]:
    async with store.session() as session:
        [run] = await journey_repo.runs_for_customer(
            session, customer_external_id=customer_id, journey=journey
        )
        rows = await journey_repo.steps_of_run(session, run_id=run.id)
    return [(r.step, r.entered_at.isoformat()) for r in rows]


async def test_onboarding_without_activation_gets_tips_then_a_nudge(examples: Examples) -> None:
    phone = unique_phone()
    customer = await add_customer(examples.store, phone=phone, name="Ada Lovelace")
    started = await examples.clarion.send_event(customer.external_id, "signed_up")
    assert started.started == ["onboarding"]
    result = await finish(
        examples.clarion.journey_handle("onboarding", customer.external_id), "onboarding"
    )
    assert result.status is JourneyRunStatus.COMPLETED and result.reason == "nudged"  # type: ignore[attr-defined]
    assert len(examples.twilio.to(phone)) == 1
    entered = dict(await steps(examples.store, customer.external_id, "onboarding"))
    from datetime import datetime

    tips, nudge = datetime.fromisoformat(entered["tips"]), datetime.fromisoformat(entered["nudge"])
    welcome = datetime.fromisoformat(entered["welcome"])
    assert tips - welcome >= timedelta(days=3)
    assert nudge - tips >= timedelta(days=2)
    assert (nudge.hour, nudge.minute) == (10, 0)  # 10:00 in the customer's zone (UTC here)


async def test_onboarding_activation_converts(examples: Examples) -> None:
    customer = await add_customer(examples.store)
    await examples.clarion.send_event(customer.external_id, "signed_up")
    await examples.clarion.send_event(customer.external_id, "activated")
    result = await finish(
        examples.clarion.journey_handle("onboarding", customer.external_id), "onboarding_converted"
    )
    assert result.status is JourneyRunStatus.CONVERTED  # type: ignore[attr-defined]


async def test_renewal_escalates_high_value_customers_to_a_human(examples: Examples) -> None:
    phone = unique_phone()
    customer = await add_customer(examples.store, phone=phone)
    async with examples.store.transaction() as session:
        row = await repo.require_customer(session, external_id=customer.external_id)
        row.attributes = {**row.attributes, "plan": "enterprise"}
    await examples.clarion.send_event(
        customer.external_id, "renewal_due", {"renewal_date": "2027-01-31"}
    )
    result = await finish(
        examples.clarion.journey_handle("renewal", customer.external_id), "renewal"
    )
    assert result.status is JourneyRunStatus.COMPLETED  # type: ignore[attr-defined]
    visited = [s for s, _ in await steps(examples.store, customer.external_id, "renewal")]
    assert "account-manager" in visited and "final-reminder" in visited


async def test_service_recovery_low_score_is_escalated(examples: Examples) -> None:
    customer = await add_customer(examples.store)
    await examples.clarion.send_event(
        customer.external_id, "incident_affected", {"incident_title": "the outage"}
    )
    # Answered before the survey went out: it waits in the journey's inbox.
    await examples.clarion.send_event(customer.external_id, "survey_answered", {"score": 1})
    result = await finish(
        examples.clarion.journey_handle("service-recovery", customer.external_id),
        "service_recovery",
    )
    assert result.status is JourneyRunStatus.COMPLETED  # type: ignore[attr-defined]
    visited = [s for s, _ in await steps(examples.store, customer.external_id, "service-recovery")]
    assert "check-score" in visited and "escalate" in visited, visited
    assert customer.email and any(
        "outage" in str(m.message) for m in examples.smtp.to(customer.email)
    )
