"""Erasure of a customer mid-journey: the journey ends, their personal data is gone from
every table, a tombstone and a receipt remain, and nothing more is sent."""

from __future__ import annotations

import asyncio
import json
import os

from sqlalchemy import select, text

from clarion.audit import pseudonymise, ref
from clarion.journeys.models import JourneyRunStatus
from clarion.models import AuditKind
from clarion.store import audit as audit_store
from clarion.store import erasure as erasure_repo
from clarion.store import repo
from clarion.store.tables import (
    AuditEvent,
    Delivery,
    JourneyRun,
)
from tests.conftest import ROOT, Stack, add_customer, operator_client, unique_phone
from tests.support.processes import run_cli, wait_until

TABLES = (
    "customers",
    "contact_points",
    "consent_records",
    "deliveries",
    "audit_events",
    "journey_runs",
    "journey_steps",
    "broadcast_recipients",
    "approval_requests",
    "agent_tasks",
    "audience_lists",
    "erasure_requests",
)


async def dump(stack: Stack) -> str:
    """Every row of every table Clarion keeps about customers, as text."""
    parts = []
    async with stack.store.session() as session:
        for table in TABLES:
            rows = await session.execute(text(f"SELECT * FROM {table}"))
            parts.extend(repr(tuple(r)) for r in rows)
    return "\n".join(parts)


async def test_erasure_mid_journey(stack: Stack) -> None:
    phone = unique_phone()
    customer = await add_customer(stack.store, phone=phone, name="Erin Erased")
    other = await add_customer(stack.store, name="Kept Customer")
    assert customer.email
    # t-long: a 30-day wait, then a send. Erased while it waits.
    await stack.clarion.send_event(customer.external_id, "joined")
    await stack.clarion.send_event(other.external_id, "joined")
    handle = stack.clarion.journey_handle("t-long", customer.external_id)
    await wait_until(
        lambda: _waiting(stack, customer.external_id), what="the journey to start waiting"
    )
    # A message of theirs delivered earlier leaves history to anonymise.
    sent = await stack.clarion.send_message(
        customer_id=customer.external_id, template="test-notice", context={"ref": "E1"}
    )
    await sent.result()
    before = await dump(stack)
    assert customer.email in before and customer.external_id in before

    officer = await operator_client(stack, "compliance")
    erasure = await officer.erase_customer(
        customer.external_id, reference="DSR-2026-0042", sweep_after="1s"
    )
    receipt = await asyncio.wait_for(erasure.result(), 60)
    if os.environ.get("CLARION_RECORD_HISTORIES") == "1" and "sqlite" in stack.store.url:
        history = await stack.client.get_workflow_handle(erasure.workflow_id).fetch_history()
        (ROOT / "tests" / "data" / "histories" / "erasure.json").write_text(
            json.dumps(json.loads(history.to_json()), indent=1) + "\n"
        )

    # The journey ended on the erasure, and sent nothing more.
    result = await asyncio.wait_for(handle.result(), 30)
    assert result.status is JourneyRunStatus.EXITED
    assert result.reason == "the customer's data was erased"
    assert len(stack.smtp.to(customer.email)) == 1

    # The receipt and the tombstone.
    assert receipt.customer_ref == ref(customer.external_id)
    assert receipt.reference == "DSR-2026-0042" and receipt.customer_found
    assert receipt.journeys_ended == 1
    assert receipt.rows["customers"] == 1 and receipt.rows["contact_points"] == 2
    assert receipt.rows["deliveries"] >= 1 and receipt.rows["audit_events"] >= 3
    assert receipt.completed_at >= receipt.requested_at
    async with stack.store.session() as session:
        [tomb] = await erasure_repo.requests_for(session, customer_id=customer.external_id)
        assert tomb.status == "done" and tomb.receipt["request_id"] == erasure.request_id
        assert await repo.get_customer(session, external_id=customer.external_id) is None
        assert await repo.get_customer(session, external_id=other.external_id) is not None
        pseud = pseudonymise(customer.external_id)
        runs = (
            await session.execute(
                select(JourneyRun).where(JourneyRun.customer_external_id == pseud)
            )
        ).scalars()
        assert [r.workflow_id.startswith("erased:") for r in runs] == [True]
        deliveries = (
            await session.execute(select(Delivery).where(Delivery.customer_external_id == pseud))
        ).scalars()
        assert len(list(deliveries)) == 1
        kinds = [
            e.kind
            for e in (
                await session.execute(
                    select(AuditEvent).where(AuditEvent.customer_external_id == pseud)
                )
            ).scalars()
        ]
        assert AuditKind.ERASED in kinds and AuditKind.SENT in kinds
    # Nothing personal is left anywhere: not the id, the name, the email or the phone.
    after = await dump(stack)
    for secret in (customer.external_id, customer.email, phone, "Erin Erased"):
        assert secret not in after, secret
    assert other.external_id in after  # the other customer is untouched
    # The audit trail still verifies: erased ids keep the digests the chain hashed.
    verification = await audit_store.verify(stack.store)
    assert verification.ok, verification.problem

    # The status command shows the receipt.
    record = await officer.erasure_record(erasure.request_id)
    assert record["status"] == "done" and record["receipt"]["rows"]["customers"] == 1


async def _waiting(stack: Stack, customer_id: str) -> bool:
    try:
        status = await stack.clarion.journey_status("t-long", customer_id)
    except Exception:
        return False
    return status.current_step == "nap" and status.waiting_until is not None


async def test_erase_cli_needs_the_compliance_role_and_reports(stack: Stack) -> None:
    customer = await add_customer(stack.store)
    target = stack.client.service_client.config.target_host
    plain = (await operator_client(stack, "operator")).settings
    denied = await run_cli(
        plain.model_copy(update={"temporal_address": target}),
        "customers",
        "erase",
        customer.external_id,
    )
    assert denied.code == 3 and "compliance" in denied.stderr
    settings = (await operator_client(stack, "compliance")).settings
    settings = settings.model_copy(update={"temporal_address": target})
    done = await run_cli(
        settings,
        "customers",
        "erase",
        customer.external_id,
        "--reference",
        "DSR-7",
        "--sweep-after",
        "1s",
        "--wait",
        "--json",
    )
    assert done.code == 0, done
    data = json.loads(done.stdout)
    assert data["status"] == "done" and data["receipt"]["reference"] == "DSR-7"
    shown = await run_cli(settings, "customers", "erasure", data["request_id"], "--json")
    assert shown.code == 0 and json.loads(shown.stdout)["status"] == "done"
    bad = await run_cli(settings, "customers", "erase", "x", "--sweep-after", "soon")
    assert bad.code == 2 and "--sweep-after" in bad.stderr
