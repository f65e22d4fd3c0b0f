"""Alert intake end to end: the IncidentWorkflow's debounce, proposals through the approval
gate, launch and resolution, on the real dev server.

The worker reads tests/data/alerts/fast.yaml: a minor or major alert must keep firing for
3 s; 4 s of quiet after a recovery ends a watch; critical alerts confirm at once. Keys
``outage.*`` map to the pre-approved crisis-outage template (resolution: crisis-resolved).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select

from clarion.crisis.models import BroadcastState
from clarion.errors import NotFound, ValidationFailed
from clarion.incidents import IncidentState, IncidentStatus
from clarion.store import Store
from clarion.store.tables import AlertRecord, Broadcast, IncidentRecord
from starters.sdk import ClarionClient, build_alert
from tests.conftest import ROOT, Stack, StackWith, add_customer, operator_client, uid
from tests.integration.test_crisis import reached
from tests.support.processes import wait_until

RULES = ROOT / "tests" / "data" / "alerts" / "fast.yaml"


async def record_history(stack: Stack, key: str, name: str) -> None:
    """Keep the incident's history for the replay test (scripts/record-histories.sh)."""
    if os.environ.get("CLARION_RECORD_HISTORIES") == "1" and "sqlite" in stack.store.url:
        history = await stack.client.get_workflow_handle(f"alert:{key}").fetch_history()
        (ROOT / "tests" / "data" / "histories" / f"{name}.json").write_text(
            json.dumps(json.loads(history.to_json()), indent=1) + "\n"
        )


@pytest.fixture
async def alerts(stack_with: StackWith) -> AsyncIterator[Stack]:
    async with stack_with(alerts_file=RULES) as running:
        yield running


async def status(
    stack: Stack, key: str, *wanted: IncidentStatus, within: float = 30
) -> IncidentState:
    found: list[IncidentState] = []

    async def arrived() -> bool:
        try:
            state = await stack.clarion.incident_state(key)
        except NotFound:
            return False
        found[:] = [state]
        return state.status in wanted

    await wait_until(arrived, within=within, what=f"incident of {key} to be {wanted}")
    return found[0]


async def customers_in(stack: Stack, region: str, n: int) -> list[str]:
    return [
        (await add_customer(stack.store, attributes={"region": region})).external_id
        for _ in range(n)
    ]


async def requests_for(clarion: ClarionClient, incident_id: str, status: str | None) -> list:  # type: ignore[type-arg]
    return [r for r in await clarion.approvals(status=status) if r.subject_id == incident_id]


async def pending(clarion: ClarionClient, incident_id: str, category: str):  # type: ignore[no-untyped-def]
    """The one pending request of the incident in ``category`` (waits for the gate to open)."""
    found: list = []  # type: ignore[type-arg]

    async def opened() -> bool:
        found[:] = [
            r for r in await requests_for(clarion, incident_id, "pending") if r.category == category
        ]
        return bool(found)

    await wait_until(opened, within=15, what=f"a pending {category} request")
    assert len(found) == 1, found
    return found[0]


async def incident_rows(store: Store, key: str) -> list[IncidentRecord]:
    async with store.session() as session:
        rows = await session.execute(select(IncidentRecord).where(IncidentRecord.key == key))
        return list(rows.scalars())


async def test_flapping_alert_sends_nothing(alerts: Stack) -> None:
    region = uid("r")
    ids = await customers_in(alerts, region, 2)
    key = f"outage.{uid('db')}"
    for _ in range(4):  # fires for under a second, four times: never the 3 s it must last
        await alerts.clarion.ingest_alert(
            source="monitor", key=key, severity="major", affects=f"region == '{region}'"
        )
        await asyncio.sleep(0.6)
        await alerts.clarion.ingest_alert(source="monitor", key=key, severity="resolved")
        await asyncio.sleep(0.6)
    state = await status(alerts, key, IncidentStatus.CLEARED, within=40)
    # The query shows "cleared" while the status is being written to the store; the
    # workflow ends once it is written.
    await asyncio.wait_for(alerts.client.get_workflow_handle(f"alert:{key}").result(), 30)
    await record_history(alerts, key, "incident_flapping")
    assert state.alerts == 8 and state.flaps == 3, state
    assert state.confirmed_at is None and state.proposed_at is None
    assert await requests_for(alerts.clarion, state.incident_id, None) == []
    async with alerts.store.session() as session:
        assert await session.get(Broadcast, state.incident_id) is None
        logged = await session.scalar(
            select(func.count()).select_from(AlertRecord).where(AlertRecord.key == key)
        )
    assert logged == 8
    [row] = await incident_rows(alerts.store, key)
    assert row.status == "cleared" and row.launched_at is None
    for customer in ids:
        assert alerts.smtp.to(f"{customer}@example.com") == []


async def test_sustained_alert_one_proposal_then_launch_and_resolution(alerts: Stack) -> None:
    manager = await operator_client(alerts, "incident_manager")
    region = uid("r")
    ids = await customers_in(alerts, region, 3)
    await customers_in(alerts, uid("elsewhere"), 2)
    key = f"outage.{uid('grid')}"
    for _ in range(9):  # the same alert, again and again, for 4 s: sustained
        receipt = await alerts.clarion.ingest_alert(
            source="monitor",
            key=key,
            severity="major",
            summary="Grid failure in the east",
            affects=f"region == '{region}'",
        )
        assert receipt.workflow_id == f"alert:{key}"
        await asyncio.sleep(0.5)
    state = await status(alerts, key, IncidentStatus.PROPOSED)
    assert state.alerts == 9 and state.flaps == 0
    assert state.audience_size == 3 and state.template == "crisis-outage"
    assert state.confirmed_at is not None and state.first_alert_at is not None
    assert (state.confirmed_at - state.first_alert_at).total_seconds() >= 2.5
    request = await pending(manager, state.incident_id, "incident_launch")
    assert request.preview["proposal"]["audience_size"] == 3
    assert "email" in request.preview  # the template's text, to read before launching
    assert len(await incident_rows(alerts.store, key)) == 1  # duplicates: one incident

    await manager.approve(request.id)
    state = await status(alerts, key, IncidentStatus.LAUNCHED)
    assert state.broadcast_id == state.incident_id
    progress = await reached(alerts.clarion.broadcast(state.broadcast_id))
    assert progress.by_status.get("sent") == 3
    for customer in ids:
        assert len(alerts.smtp.to(f"{customer}@example.com")) == 1
    record = await manager.incident(state.incident_id)
    me = await manager.operator()
    assert me is not None
    assert record["status"] == "launched" and record["approved_by"] == [me.name]
    assert record["alert_to_launch_s"] is not None and record["alert_to_launch_s"] > 2.5
    assert record["confirmed_to_launch_s"] is not None

    # Recovery after launch proposes the resolution notice.
    await alerts.clarion.ingest_alert(source="monitor", key=key, severity="resolved")
    state = await status(alerts, key, IncidentStatus.RESOLUTION_PROPOSED)
    resolution = await pending(manager, state.incident_id, "incident_resolution")
    assert resolution.template == "crisis-resolved"
    await manager.approve(resolution.id)
    state = await status(alerts, key, IncidentStatus.RESOLVED)
    await record_history(alerts, key, "incident_resolved")
    assert state.ended_at is not None
    final = await alerts.clarion.broadcast(state.broadcast_id).result()
    assert final.state is BroadcastState.RESOLVED
    for customer in ids:
        assert len(alerts.smtp.to(f"{customer}@example.com")) == 2  # outage, then resolved
    report = await manager.broadcast_report(state.broadcast_id)
    assert report["incident"]["alert_to_launch_s"] == record["alert_to_launch_s"]


async def test_critical_alert_at_once_and_recovery_withdraws_it(alerts: Stack) -> None:
    manager = await operator_client(alerts, "incident_manager")
    region = uid("r")
    await customers_in(alerts, region, 1)
    key = f"outage.{uid('dc')}"
    await alerts.clarion.ingest_alert(
        source="pager", key=key, severity="critical", affects=f"region == '{region}'"
    )
    state = await status(alerts, key, IncidentStatus.PROPOSED, within=15)
    assert state.confirmed_at is not None and state.first_alert_at is not None
    assert (state.confirmed_at - state.first_alert_at).total_seconds() < 2.5  # no debounce
    request = await pending(manager, state.incident_id, "incident_launch")
    await alerts.clarion.ingest_alert(source="pager", key=key, severity="ok")
    state = await status(alerts, key, IncidentStatus.WITHDRAWN)
    assert state.launched_at is None

    async def closed() -> bool:
        return (await manager.approval(request.id)).status == "cancelled"

    await wait_until(closed, within=15, what="the proposal to be cancelled")
    async with alerts.store.session() as session:
        assert await session.get(Broadcast, state.incident_id) is None


async def test_declined_and_unmapped_incidents_close_on_recovery(alerts: Stack) -> None:
    manager = await operator_client(alerts, "incident_manager")
    await add_customer(alerts.store, attributes={"region": "storm-coast"})
    # A type named by the alert, with the type's own audience; the manager declines.
    storm = f"weather.{uid('s')}"
    await alerts.clarion.ingest_alert(
        source="weather", key=storm, severity="critical", alert_type="storm"
    )
    state = await status(alerts, storm, IncidentStatus.PROPOSED, within=15)
    assert state.segment == "region == 'storm-coast'" and (state.audience_size or 0) >= 1
    request = await pending(manager, state.incident_id, "incident_launch")
    await manager.reject(request.id, reason="not customer-facing")
    state = await status(alerts, storm, IncidentStatus.DECLINED)
    await alerts.clarion.ingest_alert(source="weather", key=storm, severity="resolved")
    state = await status(alerts, storm, IncidentStatus.CLOSED)
    assert state.broadcast_id is None
    # A key no type matches: confirmed, recorded, nothing to propose.
    other = f"misc.{uid('m')}"
    await alerts.clarion.ingest_alert(source="misc", key=other, severity="critical")
    state = await status(alerts, other, IncidentStatus.UNMAPPED, within=15)
    assert "no alert type" in state.reason
    assert await requests_for(manager, state.incident_id, None) == []
    await alerts.clarion.ingest_alert(source="misc", key=other, severity="resolved")
    await status(alerts, other, IncidentStatus.CLOSED)


async def test_recovery_without_an_incident_and_bad_alerts(alerts: Stack) -> None:
    key = f"outage.{uid('none')}"
    receipt = await alerts.clarion.ingest_alert(source="m", key=key, severity="resolved")
    assert receipt.workflow_id is None and receipt.note == "no open incident"
    with pytest.raises(ValidationFailed) as bad:
        build_alert(source="m", key=key, severity="loud")
    assert bad.value.field == "severity" and bad.value.value == "loud"
    with pytest.raises(ValidationFailed) as bad:
        build_alert(source="m", key="has spaces", severity="major")
    assert bad.value.field == "key"
    with pytest.raises(ValidationFailed) as bad:
        build_alert(source="m", key=key, severity="major", affects="region ==")
    assert bad.value.field == "affects"
