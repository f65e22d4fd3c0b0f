"""Activities of the Erasure workflow: plan, wait for journeys to end, forget, close.

The customer id travels in the (encrypted) payloads; the store keeps only its hash in
the tombstone, and every log line names the request and the hash, never the id.
"""

from __future__ import annotations

import asyncio

from temporalio import activity

from clarion.audit import pseudonymise
from clarion.logging import get_logger
from clarion.models import (
    AuditKind,
    ErasureCloseInput,
    ErasureInput,
    ErasurePlan,
    ErasureReceipt,
    ErasureStep,
    ErasureWaitInput,
)
from clarion.store import Store, repo
from clarion.store import erasure as erasure_repo
from clarion.store.tables import utcnow

log = get_logger(__name__)


class ErasureActivities:
    def __init__(self, store: Store) -> None:
        self.store = store

    @activity.defn(name="open_erasure")
    async def open_erasure(self, data: ErasureInput) -> ErasurePlan:
        """Record the request (tombstone row, audit) and find what still runs."""
        wf_id = activity.info().workflow_id
        async with self.store.transaction() as session:
            row = await erasure_repo.open_request(
                session,
                request_id=data.request_id,
                customer_id=data.customer_id,
                reference=data.reference,
                requested_by=data.requested_by,
            )
            found = await repo.get_customer(session, external_id=data.customer_id) is not None
            journeys, messages = await erasure_repo.running_work(
                session, customer_id=data.customer_id
            )
            await repo.append_audit(
                session,
                kind=AuditKind.ERASURE_REQUESTED,
                customer_external_id=pseudonymise(data.customer_id),
                workflow_id=wf_id,
                actor=data.requested_by,
                reason=data.reference,
                detail={"request": data.request_id, "customer_ref": row.customer_ref},
                dedupe_key=f"erasure:{data.request_id}:requested",
            )
        log.info(
            "erasure opened",
            request_id=data.request_id,
            customer_ref=row.customer_ref,
            journeys=len(journeys),
            messages=len(messages),
        )
        return ErasurePlan(
            customer_ref=row.customer_ref, found=found, journeys=journeys, messages=messages
        )

    @activity.defn(name="wait_for_journeys")
    async def wait_for_journeys(self, data: ErasureWaitInput) -> int:
        """Wait (heartbeating) until the journeys told to end have ended; returns how many
        still run when ``within_s`` is up (the erasure goes on regardless)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + data.within_s
        while True:
            async with self.store.session() as session:
                left = await erasure_repo.journeys_still_running(
                    session, workflow_ids=data.journeys
                )
            activity.heartbeat(left)
            if left == 0 or loop.time() >= deadline:
                return left
            await asyncio.sleep(0.5)

    @activity.defn(name="erase_customer_data")
    async def erase_customer_data(self, data: ErasureStep) -> dict[str, int]:
        async with self.store.transaction() as session:
            counts = await erasure_repo.erase_customer(session, customer_id=data.customer_id)
        log.info(
            "customer data erased",
            request_id=data.request_id,
            customer_ref=erasure_repo.customer_ref(data.customer_id),
            sweep=data.sweep,
            rows=counts,
        )
        return counts

    @activity.defn(name="close_erasure")
    async def close_erasure(self, data: ErasureCloseInput) -> ErasureReceipt:
        """Complete the tombstone with the receipt and audit the erasure."""
        wf_id = activity.info().workflow_id
        async with self.store.transaction() as session:
            row = await erasure_repo.get_request(session, request_id=data.request_id)
            assert row is not None, f"erasure {data.request_id} was never opened"
            if row.status != "done":
                row.status = "done"
                row.completed_at = utcnow()
            found = data.rows.get("customers", 0) > 0
            receipt = ErasureReceipt(
                request_id=row.id,
                customer_ref=row.customer_ref,
                reference=row.reference,
                requested_by=row.requested_by,
                requested_at=row.requested_at,
                completed_at=row.completed_at or utcnow(),
                customer_found=found,
                journeys_ended=data.journeys_ended,
                messages_cancelled=data.messages_cancelled,
                rows=data.rows,
            )
            row.receipt = receipt.model_dump(mode="json")
            await repo.append_audit(
                session,
                kind=AuditKind.ERASED,
                customer_external_id=pseudonymise(data.customer_id),
                workflow_id=wf_id,
                actor=row.requested_by,
                reason=row.reference,
                detail={"request": row.id, "rows": data.rows, "customer_found": found},
                dedupe_key=f"erasure:{data.request_id}:erased",
            )
        log.info("erasure complete", request_id=data.request_id, customer_ref=row.customer_ref)
        return receipt
