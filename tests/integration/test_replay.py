"""Replay recorded DeliverMessage histories against today's workflow code.

A change to workflows/ that would break running workflows fails here. The histories in
tests/data/histories/ are re-recorded (after a deliberate, versioned change) with:

    scripts/record-histories.sh
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from tests.conftest import Stack, add_customer, encrypting_converter, unique_phone
from workflows.registry import ALL_WORKFLOWS

HISTORIES = Path(__file__).resolve().parent.parent / "data" / "histories"
RECORD = os.environ.get("CLARION_RECORD_HISTORIES") == "1"


def _replayer() -> Replayer:
    """Clarion's own (encrypting) converter: the recorded histories predate payload
    encryption, and its codec passes unencrypted payloads through."""
    return Replayer(workflows=ALL_WORKFLOWS, data_converter=encrypting_converter())


# Histories whose workflow derives ids from its own (a broadcast names its shards after
# itself) replay under the id they were recorded with.
REPLAY_BROADCAST_ID = "replay-direct-batches"  # the broadcast recorded for the replay test
WORKFLOW_IDS = {
    "crisis_small_shards": "crisis:20261124-115213-281d29",
    "crisis_direct_batches": f"crisis:{REPLAY_BROADCAST_ID}",
}


def _load(path: Path) -> WorkflowHistory:
    data = json.loads(path.read_text())
    return WorkflowHistory.from_json(WORKFLOW_IDS.get(path.stem, f"replay-{path.stem}"), data)


def test_histories_are_committed() -> None:
    names = sorted(p.stem for p in HISTORIES.glob("*.json"))
    assert names == [
        "crisis_direct_batches",  # recorded by test_crisis (tiers of 3, 4 and 6 in batches of 4)
        # Recorded before the larger-shards patch (120 recipients in 3 shards of up to 50)
        # and kept so: it shows that broadcasts started then still replay. Not re-recorded.
        "crisis_small_shards",
        "deliver_email",
        "deliver_fallback",
        "deliver_provider_failed",  # recorded by test_webhooks
        "deliver_quiet_hours",
        "deliver_suppressed",
        "erasure",
        "incident_flapping",  # recorded by test_alerts
        "incident_resolved",
        "journey_onboarding",
        "journey_onboarding_converted",
        "journey_renewal",
        "journey_service_recovery",
    ]
    # Every shipped journey has a recorded history.
    shipped = {
        p.stem.replace("-", "_")
        for p in (HISTORIES.parent.parent.parent / "examples" / "journeys").glob("*.yaml")
    }
    assert shipped <= {n.removeprefix("journey_") for n in names}


@pytest.mark.parametrize("path", sorted(HISTORIES.glob("*.json")), ids=lambda p: p.stem)
async def test_recorded_history_replays(path: Path) -> None:
    await _replayer().replay_workflow(_load(path))


@pytest.mark.parametrize("name", ["deliver_fallback", "journey_renewal"])
async def test_a_changed_workflow_is_caught(name: str) -> None:
    """The replay test can fail: an activity renamed in history is a non-determinism."""
    data = json.loads((HISTORIES / f"{name}.json").read_text())
    broken = copy.deepcopy(data)
    for event in broken["events"]:
        attrs = event.get("activityTaskScheduledEventAttributes")
        if attrs and attrs["activityType"]["name"] == "send_message":
            attrs["activityType"]["name"] = "send_message_v2"
            break
        child = event.get("startChildWorkflowExecutionInitiatedEventAttributes")
        if child:
            child["workflowType"]["name"] = "DeliverMessageV2"
            break
    with pytest.raises(NondeterminismError):
        await _replayer().replay_workflow(WorkflowHistory.from_json("broken", broken))


@pytest.mark.skipif(not RECORD, reason="set CLARION_RECORD_HISTORIES=1 to re-record")
async def test_record_histories(stack: Stack) -> None:
    phone = unique_phone()
    stack.twilio.invalid_numbers.add(phone)
    customer = await add_customer(stack.store, phone=phone)
    scenarios = {
        "deliver_email": dict(template="test-notice", context={"ref": "H1"}),
        "deliver_fallback": dict(
            template="test-notice", channels=["sms", "email"], context={"ref": "H2"}
        ),
        "deliver_suppressed": dict(template="spring-sale"),
    }
    HISTORIES.mkdir(parents=True, exist_ok=True)
    for name, kwargs in scenarios.items():
        handle = await stack.clarion.send_message(customer_id=customer.external_id, **kwargs)  # type: ignore[arg-type]
        await handle.result()
        history = await handle._handle.fetch_history()
        (HISTORIES / f"{name}.json").write_text(
            json.dumps(json.loads(history.to_json()), indent=1) + "\n"
        )
