"""The post-incident report of a broadcast, on a run with known answers: tiers, an
opted-out recipient, an approval, an acknowledgement and a resolution notice."""

from __future__ import annotations

import asyncio
import json

from pydantic import SecretStr

from clarion.crisis.models import BroadcastState, Tier
from clarion.crisis.report import to_markdown
from clarion.models import Channel, Purpose
from clarion.store import operators as operators_repo
from starters.sdk import ClarionClient
from tests.conftest import Stack, uid
from tests.integration.test_crisis import add, reached
from tests.support.processes import run_cli, wait_until


async def test_report_of_an_approved_broadcast_with_an_update(stack: Stack) -> None:
    region = uid("r")
    critical = [await add(stack.store, region, tags=["medical-device"]) for _ in range(2)]
    rest = [await add(stack.store, region) for _ in range(3)]
    opted_out = await add(stack.store, region, revoke=[(Channel.EMAIL, Purpose.SERVICE)])
    tiers = [
        Tier(name="life-critical", segment="'medical-device' in tags", channels=[Channel.EMAIL]),
        Tier(name="everyone", segment="true", channels=[Channel.EMAIL]),
    ]
    handle = await stack.clarion.launch_broadcast(
        title="Planned work",
        template="welcome",  # not pre-approved: an incident manager must approve
        segment=f"region == '{region}'",
        tiers=tiers,
        incident_id="INC-42",
    )

    async def awaiting() -> bool:
        return (await handle.progress()).state is BroadcastState.AWAITING_APPROVAL

    await wait_until(awaiting, within=30, what="approval to be asked")
    async with stack.store.transaction() as session:
        name = uid("im")
        _, token = await operators_repo.add_operator(session, name=name, roles=["incident_manager"])
    manager = ClarionClient(
        stack.client,
        stack.settings.model_copy(update={"operator_token": SecretStr(token)}),
        store=stack.store,
    )
    await manager.broadcast(handle.broadcast_id).approve(reason="planned window")
    await reached(handle)
    assert await handle.acknowledge(critical[0].external_id)
    assert await handle.resolve("crisis-resolved") == 2
    await asyncio.wait_for(handle.result(), 60)

    report = await stack.clarion.broadcast_report(handle.broadcast_id)
    assert report["incident_id"] == "INC-42" and report["recipients"] == 6
    assert report["by_status"] == {"sent": 5, "suppressed": 1}
    life, everyone = report["tiers"]
    assert (life["tier"], life["recipients"], life["by_status"]) == (
        "life-critical",
        2,
        {"sent": 2},
    )
    assert (everyone["tier"], everyone["recipients"]) == ("everyone", 4)
    assert 0 <= life["fully_notified_after_s"] <= everyone["fully_notified_after_s"]
    assert report["channels"]["email"]["sent"] >= 10  # launch and resolution to five people
    assert report["channels"]["email"]["delivery_rate"] == 1.0
    assert report["acknowledged"] == 1 and life["acknowledged"] == 1
    assert [(u["generation"], u["kind"], u["reached"]) for u in report["updates"]] == [
        (1, "launch", 5),
        (2, "resolution", 5),
    ]
    assert report["updates"][1]["after_s"] >= report["updates"][0]["after_s"]
    [(reason, count)] = report["suppressed_by_reason"].items()
    assert "opted_out" in reason and count == 1
    [approval] = report["approvals"]
    assert approval["status"] == "approved" and approval["category"] == "crisis_unapproved"
    assert [(d["operator"], d["approved"]) for d in approval["decisions"]] == [(name, True)]

    text = to_markdown(report)
    assert text.startswith("# Incident INC-42: Planned work")
    assert "| life-critical | 2 | 2 | 0 | 0 |" in text
    assert f"{name} approved (planned window)" in text
    assert "1 x " in text and "opted_out" in text

    md = await run_cli(stack.settings, "crisis", "report", handle.broadcast_id)
    assert md.code == 0, md
    assert md.stdout == text
    as_json = await run_cli(
        stack.settings, "crisis", "report", handle.broadcast_id, "--format", "json"
    )
    assert as_json.code == 0 and json.loads(as_json.stdout)["recipients"] == 6
    missing = await run_cli(stack.settings, "crisis", "report", "no-such-broadcast")
    assert missing.code == 1 and "no-such-broadcast" in missing.stderr
    bad = await run_cli(stack.settings, "crisis", "report", handle.broadcast_id, "--format", "pdf")
    assert bad.code == 2 and "--format" in bad.stderr
    assert opted_out.email and rest
