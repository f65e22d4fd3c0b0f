"""Journeys end to end on the real dev server: every step type, events, exits, versions."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from clarion.customers import CustomerRecord
from clarion.journeys.models import JourneyRunStatus
from clarion.models import Channel
from clarion.store import journeys as journey_repo
from clarion.store.tables import Delivery
from starters.sdk import JourneyRefused
from tests.conftest import Stack, add_customer, operator_client, unique_phone
from tests.support.processes import wait_until


async def emails_with_ref(stack: Stack, address: str, ref: str) -> int:
    return sum(1 for m in stack.smtp.to(address) if f"Notice {ref} " in str(m.message["Subject"]))


async def test_send_wait_send_then_exit(stack: Stack) -> None:
    phone = unique_phone()
    customer = await add_customer(stack.store, phone=phone, name="Jo Journey")
    assert customer.email
    handle = await stack.clarion.start_journey("t-linear", customer.external_id)
    result = await asyncio.wait_for(handle.result(), 30)
    assert result.status is JourneyRunStatus.COMPLETED and result.reason == "completed"
    assert await emails_with_ref(stack, customer.email, "J1") == 1
    assert [m["body"] for m in stack.twilio.to(phone)] == ["Notice J2 for Jo"]
    async with stack.store.session() as session:
        [run] = await journey_repo.runs_for_customer(
            session, customer_external_id=customer.external_id
        )
        steps = await journey_repo.steps_of_run(session, run_id=run.id)
    assert run.status == "completed" and run.ended_at is not None and run.version == 1
    assert [(s.step, s.kind) for s in steps] == [
        ("hello", "send"),
        ("pause", "wait"),
        ("again", "send"),
        ("done", "exit"),
    ]
    pause = steps[1]
    assert pause.left_at is not None and pause.left_at - pause.entered_at >= timedelta(seconds=2)
    assert steps[0].outcome.startswith("delivered")
    async with stack.store.session() as session:
        sends = (
            await session.execute(
                select(Delivery)
                .where(Delivery.customer_external_id == customer.external_id)
                .order_by(Delivery.created_at)
            )
        ).scalars()
    assert [(d.channel, d.journey) for d in sends] == [("email", "t-linear"), ("sms", "t-linear")]


async def test_wait_for_event_then_branch_on_attributes_and_event(stack: Stack) -> None:
    customer = await add_customer(stack.store)  # attributes: plan=pro
    assert customer.email
    handle = await stack.clarion.start_journey("t-activation", customer.external_id)
    await wait_until(
        lambda: _status_step(stack, customer.external_id, "t-activation", "wait-activation"),
        what="waiting",
    )
    delivery = await stack.clarion.send_event(customer.external_id, "activated", {"amount": 150})
    assert delivery.delivered == ["t-activation"]
    result = await asyncio.wait_for(handle.result(), 30)
    assert result.status is JourneyRunStatus.COMPLETED
    assert await emails_with_ref(stack, customer.email, "BIG") == 1
    status = await stack.clarion.journey_status("t-activation", customer.external_id)
    assert [h.outcome for h in status.history][:2] == [
        "event activated",
        "case 0: plan == 'pro' and event.amount > 100",
    ]


async def test_wait_for_timeout_path(stack: Stack) -> None:
    customer = await add_customer(stack.store)
    assert customer.email
    handle = await stack.clarion.start_journey("t-activation", customer.external_id)
    result = await asyncio.wait_for(handle.result(), 30)
    assert result.status is JourneyRunStatus.COMPLETED
    assert await emails_with_ref(stack, customer.email, "NUDGE") == 1


async def test_entry_event_starts_the_journey_and_goal_converts(stack: Stack) -> None:
    customer = await add_customer(stack.store)
    started = await stack.clarion.send_event(customer.external_id, "signed_up", {"source": "web"})
    assert started.started == ["t-activation"] and started.delivered == []
    converted = await stack.clarion.send_event(customer.external_id, "purchased")
    assert converted.delivered == ["t-activation"]
    result = await asyncio.wait_for(
        stack.clarion.journey_handle("t-activation", customer.external_id).result(), 30
    )
    assert result.status is JourneyRunStatus.CONVERTED and result.reason == "goal event purchased"


async def test_exit_on_while_waiting_and_reentry_never(stack: Stack) -> None:
    customer = await add_customer(stack.store)
    first = await stack.clarion.send_event(customer.external_id, "joined")
    assert first.started == ["t-long"]
    await wait_until(
        lambda: _status_step(stack, customer.external_id, "t-long", "nap"), what="napping"
    )
    status = await stack.clarion.journey_status("t-long", customer.external_id)
    assert status.waiting_until is not None and status.current_kind == "wait"
    # Findable in Temporal by journey, version, step and customer.
    query = (
        f"ClarionJourney = 't-long' AND ClarionJourneyVersion = 1 AND ClarionJourneyStep = 'nap' "
        f"AND ClarionCustomer = '{customer.external_id}'"
    )

    async def listed() -> bool:
        return [w.id async for w in stack.client.list_workflows(query)] == [
            f"journey:t-long:{customer.external_id}"
        ]

    await wait_until(listed, within=30, what="the journey in Temporal's visibility")
    await stack.clarion.send_event(customer.external_id, "stop")
    result = await asyncio.wait_for(
        stack.clarion.journey_handle("t-long", customer.external_id).result(), 30
    )
    assert result.status is JourneyRunStatus.EXITED and result.reason == "exit_on event stop"
    again = await stack.clarion.send_event(customer.external_id, "joined")
    assert again.started == [] and again.skipped == {"t-long": "re-entry: never"}
    with pytest.raises(JourneyRefused, match="re-entry: never"):
        await stack.clarion.start_journey("t-long", customer.external_id)


async def test_split_is_deterministic_per_customer_and_recorded(stack: Stack) -> None:
    seen: dict[str, str] = {}
    for _ in range(6):
        customer = await add_customer(stack.store)
        handle = await stack.clarion.start_journey("t-split", customer.external_id)
        result = await asyncio.wait_for(handle.result(), 30)
        seen[customer.external_id] = result.reason
        status = await stack.clarion.journey_status("t-split", customer.external_id)
        assert result.reason == f"got {status.variants['ab']}"
    from clarion.journeys.definition import SplitVariant
    from clarion.journeys.split import assign_variant

    variants = [
        SplitVariant(variant="A", weight=50, next="a"),
        SplitVariant(variant="B", weight=50, next="b"),
    ]
    for customer_id, reason in seen.items():
        expected = assign_variant(variants, journey="t-split", step="ab", customer_id=customer_id)
        assert reason == f"got {expected.variant}"


async def test_approval_approved_rejected_and_timeout(stack: Stack) -> None:
    """The approval step goes through the approval gate: an approver decides with
    `clarion approvals` (or the SDK); nobody deciding in time takes on_timeout."""
    from temporalio.client import WorkflowUpdateFailedError

    from clarion.journeys.models import ApprovalDecision
    from starters.sdk import ApprovalRefused
    from workflows.journey import JourneyWorkflow

    approver = await operator_client(stack, "approver")
    approved, rejected, ignored = [await add_customer(stack.store) for _ in range(3)]
    handles = {
        c.external_id: await stack.clarion.start_journey("t-approval", c.external_id)
        for c in (approved, rejected, ignored)
    }

    async def request_of(customer_id: str) -> str | None:
        wf_id = handles[customer_id].id
        found = [r.id for r in await stack.clarion.approvals() if r.subject_id == wf_id]
        return found[0] if found else None

    requests: dict[str, str] = {}
    for c in (approved, rejected, ignored):

        async def opened(c: CustomerRecord = c) -> bool:
            request = await request_of(c.external_id)
            if request is not None:
                requests[c.external_id] = request
            return request is not None

        await wait_until(opened, what="the approval request")
    with pytest.raises(ApprovalRefused, match="needs a reason"):
        await approver.reject(requests[rejected.external_id], reason="")
    assert await approver.reject(requests[rejected.external_id], reason="wrong price") == "rejected"
    assert await approver.approve(requests[approved.external_id]) == "approved"
    # The journey's own update now points to the gate.
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handles[ignored.external_id].execute_update(
            JourneyWorkflow.decide, ApprovalDecision(approved=True, operator="ops")
        )
    assert "approval gate" in str(refused.value.cause)
    results = {k: await asyncio.wait_for(h.result(), 30) for k, h in handles.items()}
    assert results[rejected.external_id].reason == "rejected"
    assert results[ignored.external_id].reason == "nobody decided"
    assert results[approved.external_id].status is JourneyRunStatus.COMPLETED
    assert approved.email and await emails_with_ref(stack, approved.email, "APPROVED") == 1
    view = await stack.clarion.approval(requests[ignored.external_id])
    assert view.status in ("expired", "cancelled")  # either way, nobody is asked any more


async def _status_step(stack: Stack, customer_id: str, journey: str, step: str) -> bool:
    try:
        status = await stack.clarion.journey_status(journey, customer_id)
    except Exception:
        return False
    return (status.current_step == step and status.waiting_for is not None) or (
        status.current_step == step and status.waiting_until is not None
    )


_ = Channel


async def test_event_during_a_send_is_handled_after_the_send(stack: Stack) -> None:
    customer = await add_customer(stack.store)
    stack.smtp.stalled.clear()
    stack.smtp.release.clear()
    stack.smtp.stall_rcpt.set()
    try:
        handle = await stack.clarion.start_journey("t-send-wait", customer.external_id)
        await wait_until(stack.smtp.stalled.is_set, within=30, what="the send to reach SMTP")
        status = await stack.clarion.journey_status("t-send-wait", customer.external_id)
        assert status.current_step == "hello"
        delivery = await stack.clarion.send_event(customer.external_id, "clicked")
        assert delivery.delivered == ["t-send-wait"]
    finally:
        stack.smtp.stall_rcpt.clear()
        stack.smtp.release.set()
    result = await asyncio.wait_for(handle.result(), 60)
    assert result.reason == "clicked"
    status = await stack.clarion.journey_status("t-send-wait", customer.external_id)
    assert [(h.step, h.outcome.split(" (")[0]) for h in status.history] == [
        ("hello", "delivered"),
        ("listen", "event clicked"),
        ("clicked", "exit: clicked"),
    ]


async def test_continue_as_new_carries_state_and_drops_duplicate_events(stack: Stack) -> None:
    from clarion.journeys.models import JourneyInput, journey_workflow_id
    from workflows.journey import JourneyWorkflow

    customer = await add_customer(stack.store)
    handle = await stack.client.start_workflow(
        JourneyWorkflow.run,
        JourneyInput(journey="t-loop", customer_id=customer.external_id, max_history_events=40),
        id=journey_workflow_id("t-loop", customer.external_id),
        task_queue=stack.settings.task_queue,
    )
    for n in range(8):
        await stack.clarion.send_event(customer.external_id, "ping", {"n": n}, event_id=f"ping-{n}")
        await stack.clarion.send_event(
            customer.external_id, "ping", {"n": n}, event_id=f"ping-{n}"
        )  # duplicate
        await wait_until(
            lambda n=n: _consumed(stack, customer.external_id, n + 1), within=30, what=f"ping {n}"
        )
    status = await stack.clarion.journey_status("t-loop", customer.external_id)
    assert status.continued >= 1, status
    # Stop while the next listen waits (a stop between two steps, say while the run
    # continues as new, ends the journey with no step interrupted: 8 steps, not 9).
    await wait_until(
        lambda: _status_step(stack, customer.external_id, "t-loop", "listen"),
        within=30,
        what="the next listen",
    )
    await stack.clarion.send_event(customer.external_id, "stop")
    result = await asyncio.wait_for(handle.result(), 30)
    assert result.status is JourneyRunStatus.EXITED
    assert result.steps_taken == 9  # 8 pings consumed once each, then the interrupted listen
    async with stack.store.session() as session:
        [run] = await journey_repo.runs_for_customer(
            session, customer_external_id=customer.external_id
        )
        steps = await journey_repo.steps_of_run(session, run_id=run.id)
    assert [s.outcome for s in steps] == ["event ping"] * 8 + ["interrupted"]
    assert run.status == "exited"


async def _consumed(stack: Stack, customer_id: str, count: int) -> bool:
    status = await stack.clarion.journey_status("t-loop", customer_id)
    return sum(1 for h in status.history if h.outcome == "event ping") >= count or (
        status.continued > 0 and len(status.history) >= count
    )


async def test_running_journey_keeps_its_version_after_a_new_publish(
    stack: Stack, tmp_path: Path
) -> None:
    from clarion.journeys.loader import parse_journey

    name = f"t-pin-{uuid.uuid4().hex[:8]}"

    def version(ref: str) -> object:
        return parse_journey(
            {
                "steps": {
                    "pause": {"wait": {"duration": "3s"}, "next": "hello"},
                    "hello": {"send": {"template": "test-notice", "context": {"ref": ref}}},
                }
            },
            where="test",
            default_name=name,
        )

    async with stack.store.transaction() as session:
        assert (await journey_repo.publish_journey(session, definition=version("V1"))).version == 1  # type: ignore[arg-type]
    early = await add_customer(stack.store)
    late = await add_customer(stack.store)
    first = await stack.clarion.start_journey(name, early.external_id)
    await wait_until(lambda: _status_step(stack, early.external_id, name, "pause"), what="pausing")
    async with stack.store.transaction() as session:
        assert (await journey_repo.publish_journey(session, definition=version("V2"))).version == 2  # type: ignore[arg-type]
    second = await stack.clarion.start_journey(name, late.external_id)
    await asyncio.wait_for(asyncio.gather(first.result(), second.result()), 30)
    assert early.email and late.email
    assert await emails_with_ref(stack, early.email, "V1") == 1
    assert await emails_with_ref(stack, early.email, "V2") == 0
    assert await emails_with_ref(stack, late.email, "V2") == 1
    assert (await stack.clarion.journey_status(name, early.external_id)).version == 1
    assert (await stack.clarion.journey_status(name, late.external_id)).version == 2


async def test_goal_before_the_first_step_closes_the_opened_step(stack: Stack) -> None:
    from clarion.journeys.models import JourneyEvent, JourneyInput, journey_workflow_id
    from workflows.journey import JourneyWorkflow

    customer = await add_customer(stack.store)
    goal = JourneyEvent(event_id=uuid.uuid4().hex, name="purchased")
    handle = await stack.client.start_workflow(
        JourneyWorkflow.run,
        JourneyInput(journey="t-activation", customer_id=customer.external_id),
        id=journey_workflow_id("t-activation", customer.external_id),
        task_queue=stack.settings.task_queue,
        start_signal="event",
        start_signal_args=[goal],
    )
    result = await asyncio.wait_for(handle.result(), 30)
    assert result.status is JourneyRunStatus.CONVERTED
    async with stack.store.session() as session:
        [run] = await journey_repo.runs_for_customer(
            session, customer_external_id=customer.external_id
        )
        [step] = await journey_repo.steps_of_run(session, run_id=run.id)
    assert run.status == "converted" and run.ended_at is not None
    assert (
        step.step == "wait-activation"
        and step.outcome == "interrupted"
        and step.left_at is not None
    )
