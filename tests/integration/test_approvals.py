"""Approvals end to end: the gate as a child of DeliverMessage, on the real dev server.

The worker here reads tests/data/policies/approvals-fast.yaml: billing asks approvers for
3 s, then compliance for 3 s, then expires; price changes need two approvers; regulatory
messages are rejected when compliance does not decide within 2 s.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from clarion.channels import build_providers
from clarion.errors import NotFound
from clarion.models import AuditKind, Channel, OperatorDecision, OutcomeStatus
from clarion.store import Store, repo
from clarion.store import approvals as approvals_repo
from clarion.store.tables import AgentTask, Delivery
from starters.sdk import ApprovalRefused, ClarionClient, MessageHandle, NotAuthorised
from tests.conftest import (
    ROOT,
    Stack,
    StackWith,
    add_customer,
    make_settings,
    operator_client,
    uid,
    unique_phone,
)
from tests.support.fake_twilio import FakeTwilio
from tests.support.smtp_server import SmtpServer
from workers.main import build_worker

POLICY = ROOT / "tests" / "data" / "policies" / "approvals-fast.yaml"


@pytest.fixture
async def approvals(stack_with: StackWith) -> AsyncIterator[Stack]:
    async with stack_with(approval_policy_file=POLICY) as running:
        yield running


operator = operator_client


async def request_approval(
    stack: Stack,
    requester: ClarionClient,
    template: str = "test-billing",
    context: dict[str, str] | None = None,
    *,
    name: str = "Ada Lovelace",
    level: int | None = 0,
) -> MessageHandle:
    """A customer, and a message to them from ``requester`` waiting for approval (at
    ``level``; None: do not wait)."""
    customer = await add_customer(stack.store, name=name)
    handle = await requester.send_message(
        customer_id=customer.external_id,
        template=template,
        context=context or {"invoice": uid("I")},
    )
    if level is not None:
        await pending(stack, handle.message_id, level=level)
    return handle


async def notified(stack: Stack, address: str) -> None:
    """Wait for the approval notice to reach ``address`` (sent once the level is asked)."""
    for _ in range(100):
        if stack.smtp.to(address):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{address} was not notified")


async def pending(stack: Stack, request_id: str, *, level: int = 0) -> None:
    """Wait until the request is open in the store (at ``level``)."""
    for _ in range(200):
        async with stack.store.session() as session:
            try:
                view = await approvals_repo.get_request(session, request_id)
            except NotFound:
                view = None
        if view is not None and view.status == "pending" and view.level >= level:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"request {request_id} never became pending at level {level}")


async def audit_kinds(stack: Stack, **filters: object) -> list[str]:
    async with stack.store.session() as session:
        events = await repo.audit_events(session, **filters)  # type: ignore[arg-type]
    return [e.kind for e in events]


async def test_approved_billing_message_is_sent(approvals: Stack) -> None:
    stack = approvals
    requester = await operator(stack, "operator")
    approver = await operator(stack, "approver")
    handle = await request_approval(stack, requester, "test-billing", {"invoice": "I-1"})
    assert await handle.stage() == "awaiting_approval"
    assert stack.smtp.with_id(handle.message_id) == []  # nothing out before the decision

    view = await approver.approval(handle.message_id)
    assert view.category == "billing" and view.requested_by == (await requester.operator()).name
    assert view.preview["email"]["subject"] == "Your invoice I-1"
    # The approver was notified by email through Clarion's own channel.
    me = await approver.operator()
    assert me is not None and me.email is not None
    await notified(stack, me.email)

    assert await approver.approve(handle.message_id, reason="checked") == "approved"
    outcome = await handle.result()
    assert outcome.status is OutcomeStatus.DELIVERED
    assert len(stack.smtp.with_id(handle.message_id)) == 1
    kinds = await audit_kinds(stack, message_id=handle.message_id)
    assert AuditKind.APPROVAL_REQUESTED in kinds and AuditKind.APPROVED in kinds
    assert kinds.index(AuditKind.APPROVED) < kinds.index(AuditKind.SENT)
    assert (await approver.approval(handle.message_id)).status == "approved"


async def test_rejected_billing_message_is_never_sent(approvals: Stack) -> None:
    stack = approvals
    requester = await operator(stack, "operator")
    approver = await operator(stack, "approver")
    handle = await request_approval(stack, requester, "test-billing", {"invoice": "I-2"})
    with pytest.raises(ApprovalRefused, match="needs a reason"):
        await approver.reject(handle.message_id, reason=" ")
    assert await approver.reject(handle.message_id, reason="wrong amount") == "rejected"
    outcome = await handle.result()
    assert outcome.status is OutcomeStatus.SUPPRESSED
    assert "rejected by" in outcome.reason and "wrong amount" in outcome.reason
    assert stack.smtp.with_id(handle.message_id) == []
    view = await approver.approval(handle.message_id)
    assert view.status == "rejected"
    assert [(d.approved, d.reason) for d in view.decisions] == [(False, "wrong amount")]
    # A decision after the end is refused too.
    with pytest.raises(ApprovalRefused, match="already rejected"):
        await approver.approve(handle.message_id)


async def test_validator_refusals(approvals: Stack) -> None:
    stack = approvals
    requester = await operator(stack, "operator", "approver")  # asks, then would approve
    viewer = await operator(stack, "viewer")
    other = await operator(stack, "approver")
    handle = await request_approval(stack, requester, "test-billing", {"invoice": "I-3"})
    with pytest.raises(ApprovalRefused, match="lacks a role"):
        await viewer.approve(handle.message_id)
    with pytest.raises(ApprovalRefused, match="four-eyes"):
        await requester.approve(handle.message_id)
    with pytest.raises(NotAuthorised):
        await stack.clarion.approve(handle.message_id)  # no operator token at all
    # An operator unknown to the gate, straight through Temporal: refused by the validator.
    gate = stack.client.get_workflow_handle(f"approval:{handle.message_id}")
    with pytest.raises(WorkflowUpdateFailedError):
        await gate.execute_update(
            "decide", OperatorDecision(operator="mallory", approved=True), result_type=str
        )
    # Refusals through the SDK are in the audit trail, with the operator and the reason.
    async with stack.store.session() as session:
        events = await repo.audit_events(session, kind=AuditKind.APPROVAL_REFUSED)
    mine = [e for e in events if e.workflow_id == f"approval:{handle.message_id}"]
    assert {e.actor for e in mine} == {
        (await viewer.operator()).name,  # type: ignore[union-attr]
        (await requester.operator()).name,  # type: ignore[union-attr]
    }
    assert await other.approve(handle.message_id) == "approved"
    assert (await handle.result()).status is OutcomeStatus.DELIVERED


async def test_roles_guard_what_an_operator_may_start(approvals: Stack) -> None:
    viewer = await operator(approvals, "viewer")
    customer = await add_customer(approvals.store)
    with pytest.raises(NotAuthorised, match="needs the role operator"):
        await viewer.send_message(customer_id=customer.external_id, template="test-notice")
    with pytest.raises(NotAuthorised, match="needs the role incident_manager"):
        await viewer.launch_broadcast(title="x", template="crisis-outage", segment="true")
    with pytest.raises(NotAuthorised, match="needs the role operator"):
        await viewer.start_journey("t-approval", customer.external_id)


async def test_refused_signal_is_audited_and_changes_nothing(approvals: Stack) -> None:
    stack = approvals
    requester = await operator(stack, "operator")
    approver = await operator(stack, "approver")
    handle = await request_approval(stack, requester, "test-billing", {"invoice": "I-4"})
    gate = stack.client.get_workflow_handle(f"approval:{handle.message_id}")
    await gate.signal("decide", OperatorDecision(operator="mallory", approved=True))
    for _ in range(100):
        if AuditKind.APPROVAL_REFUSED in await audit_kinds(
            stack, kind=AuditKind.APPROVAL_REFUSED, actor="mallory"
        ):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the refused signal was not audited")
    assert (await approver.approval(handle.message_id)).status == "pending"
    name = (await approver.operator()).name  # type: ignore[union-attr]
    await gate.signal("decide", OperatorDecision(operator=name, approved=True))
    assert (await handle.result()).status is OutcomeStatus.DELIVERED


async def test_two_approvers_needed_for_price_change(approvals: Stack) -> None:
    stack = approvals
    requester = await operator(stack, "operator")
    first, second = await operator(stack, "approver"), await operator(stack, "approver")
    handle = await request_approval(stack, requester, "test-price", {"starts": "1 Jan"})
    assert "1 of 2" in await first.approve(handle.message_id)
    with pytest.raises(ApprovalRefused, match="already approved"):
        await first.approve(handle.message_id)
    assert stack.smtp.with_id(handle.message_id) == []
    assert await second.approve(handle.message_id) == "approved"
    assert (await handle.result()).status is OutcomeStatus.DELIVERED


async def test_escalation_then_expiry(approvals: Stack) -> None:
    stack = approvals
    requester = await operator(stack, "operator")
    compliance = await operator(stack, "compliance")
    handle = await request_approval(stack, requester, "test-billing", {"invoice": "I-5"})
    # Compliance may not decide at the first level ...
    with pytest.raises(ApprovalRefused, match="lacks a role"):
        await compliance.approve(handle.message_id)
    # ... is asked (and notified) once the approvers let 3 s pass ...
    await pending(stack, handle.message_id, level=1)
    await notified(stack, (await compliance.operator()).email or "-")  # type: ignore[union-attr]
    # ... and when nobody decides, the request expires and nothing is sent.
    outcome = await asyncio.wait_for(handle.result(), timeout=30)
    assert outcome.status is OutcomeStatus.SUPPRESSED and "approval expired" in outcome.reason
    assert stack.smtp.with_id(handle.message_id) == []
    kinds = await audit_kinds(stack, workflow_id=f"approval:{handle.message_id}")
    assert AuditKind.APPROVAL_ESCALATED in kinds and AuditKind.APPROVAL_EXPIRED in kinds


async def test_ladder_ending_in_reject(approvals: Stack) -> None:
    """Regulatory messages: when compliance does not decide in 2 s, the request is rejected."""
    stack = approvals
    requester = await operator(stack, "operator")
    handle = await request_approval(stack, requester, "test-disclosure", {})
    outcome = await asyncio.wait_for(handle.result(), timeout=30)
    assert outcome.status is OutcomeStatus.SUPPRESSED
    assert outcome.reason.startswith("approval rejected: nobody decided")
    assert stack.smtp.with_id(handle.message_id) == []
    assert (await stack.clarion.approval(handle.message_id)).status == "rejected"


async def test_escalated_level_may_decide(approvals: Stack) -> None:
    stack = approvals
    requester = await operator(stack, "operator")
    compliance = await operator(stack, "compliance")
    handle = await request_approval(stack, requester, "test-billing", {"invoice": "I-6"}, level=1)
    assert await compliance.approve(handle.message_id) == "approved"
    assert (await handle.result()).status is OutcomeStatus.DELIVERED


async def test_approval_survives_worker_restart(
    temporal_env: WorkflowEnvironment,
    store: Store,
    smtp_server: SmtpServer,
    fake_twilio: FakeTwilio,
    tmp_path: Path,
) -> None:
    settings = make_settings(
        tmp_path,
        store,
        smtp_server,
        fake_twilio,
        task_queue=uid("tq"),
        approval_policy_file=POLICY.with_name("approvals-slow.yaml"),
    )
    POLICY.with_name("approvals-slow.yaml").exists() or pytest.fail("missing policy file")
    stack = Stack(
        settings=settings,
        store=store,
        client=temporal_env.client,
        clarion=ClarionClient(temporal_env.client, settings, store=store),
        smtp=smtp_server,
        twilio=fake_twilio,
    )
    requester = await operator(stack, "operator")
    approver = await operator(stack, "approver")
    customer = await add_customer(store)
    providers = build_providers(settings)
    async with build_worker(temporal_env.client, settings, store, providers):
        handle = await requester.send_message(
            customer_id=customer.external_id, template="test-billing", context={"invoice": "R-1"}
        )
        await pending(stack, handle.message_id)
    # The worker is gone; the request waits in Temporal. A new worker picks it up.
    providers = build_providers(settings)
    async with build_worker(temporal_env.client, settings, store, providers):
        assert await approver.approve(handle.message_id) == "approved"
        outcome = await asyncio.wait_for(handle.result(), timeout=30)
    for provider in providers.values():
        await provider.aclose()
    assert outcome.status is OutcomeStatus.DELIVERED
    assert len(smtp_server.with_id(handle.message_id)) == 1


# ---------------------------------------------------------------- acknowledgement ladder


async def alert(stack: Stack, ref: str, *, within: str) -> tuple[str, MessageHandle]:
    """An alert by SMS, then voice, to a new customer, asking for acknowledgement."""
    phone = unique_phone()
    customer = await add_customer(stack.store, email=False, phone=phone)
    handle = await stack.clarion.send_message(
        customer_id=customer.external_id,
        template="test-alert",
        channels=["sms", "voice"],
        context={"ref": ref},
        acknowledge_within=within,
    )
    return phone, handle


async def test_unacknowledged_message_escalates_to_voice_then_agent(stack: Stack) -> None:
    phone, handle = await alert(stack, "A-1", within="2s")
    outcome = await asyncio.wait_for(handle.result(), timeout=60)
    assert outcome.status is OutcomeStatus.DELIVERED
    assert outcome.acknowledged_by is None
    assert outcome.escalated_to == [Channel.VOICE]
    assert outcome.agent_task == f"{handle.message_id}:agent"
    assert len(stack.twilio.to(phone)) == 1 and len(stack.twilio.calls_to(phone)) == 1
    kinds = await audit_kinds(stack, message_id=handle.message_id)
    assert kinds.count(AuditKind.SENT) == 2
    assert kinds.index(AuditKind.ESCALATED) < kinds.index(AuditKind.AGENT_TASK)
    async with stack.store.session() as session:
        task = await session.get(AgentTask, outcome.agent_task)
        sms_row = await session.get(Delivery, f"{handle.message_id}:sms")
        voice_row = await session.get(Delivery, f"{handle.message_id}:voice")
    assert task is not None and task.status == "open" and "not acknowledged" in task.reason
    # Delivery analytics: nobody acknowledged; the SMS was followed by a call.
    assert sms_row is not None and voice_row is not None
    assert sms_row.fell_back and not voice_row.fell_back
    assert sms_row.acked_at is None and voice_row.acked_at is None


async def test_acknowledged_message_stops_escalating(stack: Stack) -> None:
    phone, handle = await alert(stack, "A-2", within="1h")
    for _ in range(100):
        if (await handle.stage()).startswith("awaiting_acknowledgement"):
            break
        await asyncio.sleep(0.1)
    await handle.acknowledge(by="customer", channel="sms")
    outcome = await asyncio.wait_for(handle.result(), timeout=30)
    assert outcome.acknowledged_by == "customer" and outcome.escalated_to == []
    assert outcome.channel is Channel.SMS and outcome.agent_task is None
    assert stack.twilio.calls_to(phone) == []
    async with stack.store.session() as session:
        sms_row = await session.get(Delivery, f"{handle.message_id}:sms")
    assert sms_row is not None and sms_row.acked_at is not None and not sms_row.fell_back


async def test_request_closes_when_the_message_ends(approvals: Stack) -> None:
    """A message workflow that ends while waiting (terminated by an operator) cancels its
    approval request: it leaves the pending list and nobody is asked any more."""
    stack = approvals
    requester = await operator(stack, "operator")
    handle = await request_approval(stack, requester, "test-billing", {"invoice": "T-1"})
    await stack.client.get_workflow_handle(handle.workflow_id).terminate("test")
    for _ in range(100):
        if (await stack.clarion.approval(handle.message_id)).status == "cancelled":
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the request was not closed")
    assert handle.message_id not in [r.id for r in await stack.clarion.approvals()]
    kinds = await audit_kinds(stack, message_id=handle.message_id)
    assert AuditKind.APPROVAL_CANCELLED in kinds
