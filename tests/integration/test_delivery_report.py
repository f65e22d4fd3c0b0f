"""Delivery analytics on fixed data with known answers (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, update
from temporalio.testing import WorkflowEnvironment

from clarion.errors import ValidationFailed
from clarion.store import Store
from clarion.store.reports import delivery_report, refresh_rollup
from clarion.store.tables import Delivery, utcnow
from starters.sdk import ClarionClient
from tests.conftest import make_settings, uid
from tests.support.fake_twilio import FakeTwilio
from tests.support.processes import run_cli
from tests.support.smtp_server import SmtpServer

DAY = datetime(2020, 5, 4, 12, 0, tzinfo=UTC)  # far from other tests' rows


def row(
    template: str,
    channel: str,
    status: str,
    n: int,
    *,
    secs: float = 0,
    error: str = "",
    day: datetime = DAY,
    **outcomes: object,
) -> Delivery:
    created = day + timedelta(minutes=n)
    return Delivery(
        **outcomes,
        attempt_id=f"{template}-{channel}-{n}:{channel}",
        message_id=f"{template}-{n}",
        workflow_id=f"message:{template}-{n}",
        customer_external_id=f"c{n}",
        channel=channel,
        template=template,
        template_version=1,
        purpose="service",
        status=status,
        error=error,
        created_at=created,
        sent_at=created + timedelta(seconds=secs) if status == "sent" else None,
    )


def exact(values: list[float], q: float) -> float:
    """Nearest rank, as the report approximates it."""
    ranked = sorted(values)
    return ranked[max(1, math.ceil(q * len(ranked))) - 1]


async def seed(store: Store, template: str) -> None:
    """email: 10 sent taking 1..10 s, 2 failed (bounce), 1 suppressed (opted_out);
    sms: 4 sent taking 2 s each, 3 suppressed (2 opted_out, 1 no_contact_point)."""
    rows = [row(template, "email", "sent", n, secs=n) for n in range(1, 11)]
    rows += [row(template, "email", "failed", 20 + n, error="550 bounce") for n in range(2)]
    rows += [row(template, "email", "suppressed", 30, error="opted_out")]
    rows += [row(template, "sms", "sent", 40 + n, secs=2) for n in range(4)]
    rows += [row(template, "sms", "suppressed", 50 + n, error="opted_out") for n in range(2)]
    rows += [row(template, "sms", "suppressed", 60, error="no_contact_point")]
    async with store.transaction() as session:
        await session.execute(
            delete(Delivery).where(
                Delivery.created_at < DAY + timedelta(days=1), Delivery.created_at >= DAY
            )
        )
        session.add_all(rows)


async def test_report_by_template_and_channel(store: Store) -> None:
    template = uid("rep")
    await seed(store, template)
    async with store.session() as session:
        groups = await delivery_report(
            session,
            since=DAY,
            until=DAY + timedelta(days=1),
            by=["template", "channel"],
            prices={"email": 0.001, "sms": 0.05},
        )
    email, sms = groups
    assert (email["template"], email["channel"]) == (template, "email")
    assert (email["attempted"], email["sent"], email["failed"], email["suppressed"]) == (
        13,
        10,
        2,
        1,
    )
    assert email["failed_by_reason"] == {"550 bounce": 2}
    assert email["suppressed_by_reason"] == {"opted_out": 1}
    assert email["median_time_to_send_s"] == pytest.approx(5.0, rel=0.02)
    assert email["p95_time_to_send_s"] == pytest.approx(10.0, rel=0.02)
    assert email["cost"] == pytest.approx(0.01) and email["cost_per_sent"] == pytest.approx(0.001)
    assert (sms["attempted"], sms["sent"], sms["suppressed"]) == (7, 4, 3)
    assert sms["suppressed_by_reason"] == {"opted_out": 2, "no_contact_point": 1}
    assert sms["median_time_to_send_s"] == pytest.approx(2.0, rel=0.02)
    assert sms["cost"] == pytest.approx(0.2)
    async with store.session() as session:
        [whole] = await delivery_report(
            session, since=DAY, until=DAY + timedelta(days=1), by=["day"]
        )
    assert whole["day"] == "2020-05-04" and whole["attempted"] == 20 and whole["sent"] == 14
    with pytest.raises(ValidationFailed) as bad:
        async with store.session() as session:
            await delivery_report(session, since=DAY, until=DAY + timedelta(days=1), by=["colour"])
    assert (bad.value.field, bad.value.value) == ("by", "colour")
    with pytest.raises(ValidationFailed) as backwards:
        async with store.session() as session:
            await delivery_report(session, since=DAY, until=DAY, by=["channel"])
    assert backwards.value.field == "since"


OUTCOME_DAY = datetime(2020, 6, 8, tzinfo=UTC)  # a day of its own, long closed


async def seed_outcomes(store: Store, template: str) -> list[Delivery]:
    """Two journeys' worth of sends on OUTCOME_DAY and the next day, with every outcome.

    day 1, journey "welcome", segment "gold", sms: 6 sent (1..6 s to send), 4 of them
    delivered (10, 20, 30, 40 s after the start), 2 acknowledged, 1 opted out; 1 failed
    ("30003") that fell back to email; email: 1 sent (fallback, 4 s), no delivery receipt.
    day 2, no journey, segment "": sms: 3 sent (2 s), 1 delivered (5 s), 1 suppressed.
    """
    one, two = OUTCOME_DAY, OUTCOME_DAY + timedelta(days=1)
    at = one + timedelta(hours=1)
    tagged = {"journey": "welcome", "segment": "gold"}
    rows = [
        row(
            template,
            "sms",
            "sent",
            n,
            secs=n,
            day=one,
            delivered_at=one + timedelta(minutes=n, seconds=10 * n) if n <= 4 else None,
            acked_at=at if n <= 2 else None,
            opted_out_at=at if n == 6 else None,
            **tagged,
        )
        for n in range(1, 7)
    ]
    rows.append(row(template, "sms", "failed", 7, error="30003", day=one, fell_back=True, **tagged))
    rows.append(row(template, "email", "sent", 8, secs=4, day=one, **tagged))
    rows += [
        row(
            template,
            "sms",
            "sent",
            10 + n,
            secs=2,
            day=two,
            delivered_at=two + timedelta(minutes=10 + n, seconds=5) if n == 0 else None,
        )
        for n in range(3)
    ]
    rows.append(row(template, "sms", "suppressed", 20, error="opted_out", day=two))
    async with store.transaction() as session:
        await session.execute(
            delete(Delivery).where(
                Delivery.created_at >= one, Delivery.created_at < two + timedelta(days=1)
            )
        )
        session.add_all(rows)
    return rows


async def report(
    store: Store,
    since: datetime,
    until: datetime,
    by: list[str],
    *,
    refresh: bool = True,
    rollup: bool = True,
) -> list[dict[str, Any]]:
    async with store.session() as session:
        return await delivery_report(
            session,
            since=since,
            until=until,
            by=by,
            prices={"email": 0.001, "sms": 0.05},
            refresh=refresh,
            rollup=rollup,
        )


async def test_outcomes_by_journey_and_segment(store: Store) -> None:
    template = uid("out")
    await seed_outcomes(store, template)
    two_days = (OUTCOME_DAY, OUTCOME_DAY + timedelta(days=2))
    groups = await report(store, *two_days, ["template", "journey", "segment", "channel"])
    keyed = {(g["journey"], g["segment"], g["channel"]): g for g in groups}
    assert set(keyed) == {("welcome", "gold", "sms"), ("welcome", "gold", "email"), ("", "", "sms")}
    sms = keyed["welcome", "gold", "sms"]
    assert (sms["attempted"], sms["sent"], sms["failed"], sms["delivered"]) == (7, 6, 1, 4)
    assert (sms["fell_back"], sms["acknowledged"], sms["opted_out_after"]) == (1, 2, 1)
    assert sms["failed_by_reason"] == {"30003": 1}
    assert sms["median_time_to_send_s"] == pytest.approx(exact([1, 2, 3, 4, 5, 6], 0.5), rel=0.02)
    assert sms["p95_time_to_send_s"] == pytest.approx(6.0, rel=0.02)
    # time to deliver, from the start of the attempt: 10, 20, 30, 40 s
    assert sms["median_time_to_deliver_s"] == pytest.approx(20.0, rel=0.02)
    assert sms["p95_time_to_deliver_s"] == pytest.approx(40.0, rel=0.02)
    assert sms["cost"] == pytest.approx(0.3)
    assert sms["cost_per_sent"] == pytest.approx(0.05)
    assert sms["cost_per_delivered"] == pytest.approx(0.075)
    assert sms["cost_per_acknowledged"] == pytest.approx(0.15)
    email = keyed["welcome", "gold", "email"]
    assert (email["sent"], email["delivered"], email["fell_back"]) == (1, 0, 0)
    assert email["median_time_to_deliver_s"] is None and email["cost_per_delivered"] is None
    plain = keyed["", "", "sms"]
    assert (plain["attempted"], plain["sent"], plain["suppressed"], plain["delivered"]) == (
        4,
        3,
        1,
        1,
    )
    assert plain["suppressed_by_reason"] == {"opted_out": 1}
    assert plain["median_time_to_deliver_s"] == pytest.approx(5.0, rel=0.02)
    # By day: the two days apart.
    days = await report(store, *two_days, ["template", "day"])
    assert [(d["day"], d["attempted"]) for d in days] == [("2020-06-08", 8), ("2020-06-09", 4)]


async def test_rollup_matches_raw_rows_and_edges_come_from_raw_rows(store: Store) -> None:
    template = uid("out")
    await seed_outcomes(store, template)
    dims = ["template", "version", "channel", "purpose", "journey", "segment", "day"]
    two_days = (OUTCOME_DAY, OUTCOME_DAY + timedelta(days=2))
    rolled = [g for g in await report(store, *two_days, dims) if g["template"] == template]
    raw = [
        g for g in await report(store, *two_days, dims, rollup=False) if g["template"] == template
    ]
    assert rolled == raw and len(rolled) == 3
    # A range starting and ending inside days: the partial days come from the rows.
    since = OUTCOME_DAY + timedelta(minutes=3)  # leaves out the first two sends
    until = OUTCOME_DAY + timedelta(days=1, minutes=11)  # the second day's first send only
    [part] = [
        g for g in await report(store, since, until, ["template"]) if g["template"] == template
    ]
    assert (part["attempted"], part["sent"], part["delivered"], part["acknowledged"]) == (
        7,
        6,
        3,
        0,
    )
    # The first day in part from its rows, the second whole from the rollup.
    [mixed] = [
        g
        for g in await report(store, since, OUTCOME_DAY + timedelta(days=2), ["template"])
        if g["template"] == template
    ]
    assert (mixed["attempted"], mixed["sent"], mixed["delivered"], mixed["suppressed"]) == (
        10,
        8,
        3,
        1,
    )


async def test_a_late_change_to_a_closed_day_shows_after_refresh(store: Store) -> None:
    template = uid("out")
    rows = await seed_outcomes(store, template)
    day = (OUTCOME_DAY, OUTCOME_DAY + timedelta(days=1))
    [before] = [g for g in await report(store, *day, ["template"]) if g["template"] == template]
    assert before["delivered"] == 4
    async with store.session() as session:
        again = await refresh_rollup(session)
        await session.commit()
    # Rows changed in the last minutes are looked at again (commits that came late).
    assert "2020-06-08" in again.days and again.rolled_until == utcnow().date().isoformat()
    # The receipt of the fifth SMS arrives late (a status callback), days after.
    async with store.transaction() as session:
        await session.execute(
            update(Delivery)
            .where(Delivery.attempt_id == rows[4].attempt_id)
            .values(
                delivered_at=OUTCOME_DAY + timedelta(minutes=5, seconds=50), updated_at=utcnow()
            )
        )
    [stale] = [
        g
        for g in await report(store, *day, ["template"], refresh=False)
        if g["template"] == template
    ]
    assert stale["delivered"] == 4  # the rollup, as it was
    [after] = [g for g in await report(store, *day, ["template"]) if g["template"] == template]
    assert after["delivered"] == 5
    assert after["p95_time_to_deliver_s"] == pytest.approx(50.0, rel=0.02)


async def test_report_deliveries_cli(
    store: Store, smtp_server: SmtpServer, fake_twilio: FakeTwilio, tmp_path: Path
) -> None:
    template = uid("rep")
    await seed(store, template)
    settings = make_settings(
        tmp_path, store, smtp_server, fake_twilio, task_queue="unused", price_sms=0.05
    )
    window = ["--since", DAY.isoformat(), "--until", (DAY + timedelta(days=1)).isoformat()]
    as_json = await run_cli(settings, "report", "deliveries", *window, "--by", "channel", "--json")
    assert as_json.code == 0, as_json
    groups = {g["channel"]: g for g in json.loads(as_json.stdout)["groups"]}
    assert groups["sms"]["cost"] == pytest.approx(0.2) and groups["email"]["sent"] == 10
    as_csv = await run_cli(settings, "report", "deliveries", *window, "--by", "channel", "--csv")
    assert as_csv.stdout.splitlines()[0].startswith("channel,attempted,sent,failed")
    bad = await run_cli(settings, "report", "deliveries", "--by", "colour")
    assert bad.code == 2 and "colour" in bad.stderr
    bad_since = await run_cli(settings, "report", "deliveries", "--since", "last week")
    assert bad_since.code == 2 and "--since" in bad_since.stderr
    backwards = await run_cli(settings, "report", "deliveries", "--since", "1h", "--until", "2h")
    assert backwards.code == 2 and "--since" in backwards.stderr
    by_journey = await run_cli(
        settings, "report", "deliveries", *window, "--by", "journey,segment", "--json"
    )
    assert by_journey.code == 0, by_journey
    [group] = json.loads(by_journey.stdout)["groups"]
    assert (group["journey"], group["segment"], group["attempted"]) == ("", "", 20)
    refreshed = await run_cli(settings, "report", "refresh", "--json")
    assert refreshed.code == 0, refreshed
    assert json.loads(refreshed.stdout)["rolled_until"] == datetime.now(UTC).date().isoformat()


async def test_the_sdk_returns_the_groups_the_cli_prints(
    temporal_env: WorkflowEnvironment,
    store: Store,
    smtp_server: SmtpServer,
    fake_twilio: FakeTwilio,
    tmp_path: Path,
) -> None:
    template = uid("out")
    await seed_outcomes(store, template)
    settings = make_settings(
        tmp_path, store, smtp_server, fake_twilio, task_queue="unused", price_sms=0.05
    )
    since, until = OUTCOME_DAY.isoformat(), (OUTCOME_DAY + timedelta(days=2)).isoformat()
    clarion = ClarionClient(temporal_env.client, settings, store=store)
    groups = await clarion.delivery_report(since, until, by=["template", "journey", "channel"])
    cli = await run_cli(
        settings,
        "report",
        "deliveries",
        *("--since", since, "--until", until, "--by", "template,journey,channel", "--json"),
    )
    assert cli.code == 0, cli
    assert json.loads(cli.stdout)["groups"] == json.loads(json.dumps(groups))
    ours = [g for g in groups if g["template"] == template]
    assert [(g["journey"], g["channel"], g["attempted"]) for g in ours] == [
        ("", "sms", 4),
        ("welcome", "email", 1),
        ("welcome", "sms", 7),
    ]
    with pytest.raises(ValidationFailed) as bad:
        await clarion.delivery_report("7d", by=["colour"])
    assert (bad.value.field, bad.value.value) == ("by", "colour")
    with pytest.raises(ValidationFailed) as bad_since:
        await clarion.delivery_report("yesterday")
    assert bad_since.value.field == "since"
