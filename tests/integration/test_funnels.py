"""Journey funnels and A/B results on fixed data with known answers (SQLite and
PostgreSQL)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from clarion.errors import NotFound
from clarion.store import Store
from clarion.store.funnels import journey_funnel
from clarion.store.tables import JourneyRun, JourneyStepRecord
from tests.conftest import make_settings, uid
from tests.support.fake_twilio import FakeTwilio
from tests.support.processes import run_cli
from tests.support.smtp_server import SmtpServer

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def run_row(journey: str, n: int, status: str, reason: str) -> JourneyRun:
    return JourneyRun(
        journey=journey,
        version=1,
        customer_external_id=f"{journey}-c{n}",
        workflow_id=f"journey:{journey}:c{n}",
        temporal_run_id=uid("run"),
        status=status,
        reason=reason,
        started_at=T0,
    )


async def seed(store: Store, journey: str) -> None:
    """Ten runs through welcome (60 s each); eight reach the split (A 4, B 4); outcomes:
    4 converted (A 1, B 3), exits: 2 on unsubscribed, 1 on stop; 2 completed, 1 running.
    Plus a second split, big enough to decide: C 200 (20 converted), D 200 (60)."""
    plan = [
        # (status, reason, variant or None)
        ("converted", "goal event purchased", "A"),
        ("converted", "goal event purchased", "B"),
        ("converted", "goal event purchased", "B"),
        ("converted", "goal event purchased", "B"),
        ("exited", "exit_on event unsubscribed", "A"),
        ("exited", "exit_on event unsubscribed", "A"),
        ("exited", "exit_on event stop", "B"),
        ("completed", "end of journey", "A"),
        ("completed", "end of journey", None),
        ("running", "", None),
    ]
    async with store.transaction() as session:
        for n, (status, reason, variant) in enumerate(plan):
            run = run_row(journey, n, status, reason)
            session.add(run)
            await session.flush()
            session.add(
                JourneyStepRecord(
                    run_id=run.id, seq=0, step="welcome", kind="send",
                    entered_at=T0, left_at=T0 + timedelta(seconds=60), outcome="delivered",
                )
            )  # fmt: skip
            if variant is not None:
                session.add(
                    JourneyStepRecord(
                        run_id=run.id, seq=1, step="ab", kind="split", variant=variant,
                        entered_at=T0 + timedelta(seconds=60),
                        left_at=T0 + timedelta(seconds=60 + 10 * (n + 1)), outcome=variant,
                    )
                )  # fmt: skip
    big = f"{journey}-big"
    async with store.transaction() as session:
        for n in range(400):
            variant = "C" if n < 200 else "D"
            converted = (n < 20) if variant == "C" else (200 <= n < 260)
            run = run_row(big, n, "converted" if converted else "completed", "")
            session.add(run)
            await session.flush()
            session.add(
                JourneyStepRecord(
                    run_id=run.id, seq=0, step="offer", kind="split", variant=variant,
                    entered_at=T0, left_at=T0, outcome=variant,
                )
            )  # fmt: skip


async def test_funnel_counts_exits_conversions_and_times(store: Store) -> None:
    journey = uid("fun")
    await seed(store, journey)
    async with store.session() as session:
        report = await journey_funnel(session, journey=journey)
    assert report["entered"] == 10 and report["converted"] == 4
    assert report["conversion_rate"] == 0.4
    assert report["by_status"] == {"converted": 4, "exited": 3, "completed": 2, "running": 1}
    assert report["exits_by_event"] == {"unsubscribed": 2, "stop": 1}
    assert report["goals"] == {"purchased": 4}
    assert [(s["step"], s["customers"]) for s in report["steps"]] == [("welcome", 10), ("ab", 8)]
    welcome, ab = report["steps"]
    assert welcome["median_time_in_step_s"] == 60.0
    # Split durations are 10, 20, ..., 80 s for runs 0-7: median 45 s.
    assert ab["median_time_in_step_s"] == 45.0 and ab["share_of_entered"] == 0.8
    [split] = report["ab_tests"]
    assert [(v["variant"], v["customers"], v["converted"]) for v in split["variants"]] == [
        ("A", 4, 1),
        ("B", 4, 3),
    ]
    [comparison] = split["comparisons"]
    assert (
        comparison["verdict"] == "too_small" and "too small to decide" in comparison["explanation"]
    )


async def test_a_split_with_enough_customers_is_decided(store: Store) -> None:
    journey = uid("fun")
    await seed(store, journey)
    async with store.session() as session:
        report = await journey_funnel(session, journey=f"{journey}-big")
    [split] = report["ab_tests"]
    [c] = split["comparisons"]
    assert (c["control"], c["variant"]) == ("C", "D")
    assert c["difference"] == pytest.approx(0.2)
    assert c["verdict"] == "b_better" and c["ci_low"] > 0
    assert c["p_value"] < 1e-6 and c["always_valid_p"] < 0.05
    with pytest.raises(NotFound):
        async with store.session() as session:
            await journey_funnel(session, journey="no-such-journey")


async def test_report_journey_cli(
    store: Store, smtp_server: SmtpServer, fake_twilio: FakeTwilio, tmp_path: Path
) -> None:
    journey = uid("fun")
    await seed(store, journey)
    settings = make_settings(tmp_path, store, smtp_server, fake_twilio, task_queue="unused")
    shown = await run_cli(settings, "report", "journey", journey)
    assert shown.code == 0, shown
    assert "10 entered, 4 converted (40.0%)" in shown.stdout
    assert "exited on unsubscribed: 2" in shown.stdout and "too small to decide" in shown.stdout
    as_json = await run_cli(settings, "report", "journey", f"{journey}-big", "--json")
    assert json.loads(as_json.stdout)["ab_tests"][0]["comparisons"][0]["verdict"] == "b_better"
    missing = await run_cli(settings, "report", "journey", "nope")
    assert missing.code == 1 and "nope" in missing.stderr
