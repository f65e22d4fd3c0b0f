"""Delivery analytics on fixed data with known answers (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete

from clarion.errors import ValidationFailed
from clarion.store import Store
from clarion.store.reports import delivery_report
from clarion.store.tables import Delivery
from tests.conftest import make_settings, uid
from tests.support.fake_twilio import FakeTwilio
from tests.support.processes import run_cli
from tests.support.smtp_server import SmtpServer

DAY = datetime(2020, 5, 4, 12, 0, tzinfo=UTC)  # far from other tests' rows


def row(
    template: str, channel: str, status: str, n: int, *, secs: float = 0, error: str = ""
) -> Delivery:
    created = DAY + timedelta(minutes=n)
    return Delivery(
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
    with pytest.raises(ValidationFailed):
        async with store.session() as session:
            await delivery_report(session, since=DAY, until=DAY + timedelta(days=1), by=["colour"])


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
