"""Erasure: forget one customer, durably, with a receipt (GDPR art. 17, CCPA deletion).

  open (tombstone row with the hashed id, audit) and find what still runs
  -> end the customer's running journeys (an exit event: they close their records)
     and cancel their messages still in flight (waiting for quiet hours, a cap, approval)
  -> wait until those journeys have ended
  -> erase: delete the customer, contact points and consent ledger; pseudonymise their id
     wherever history is kept; clear previews and free-text errors
  -> after ``sweep_after``, erase again: rows written meanwhile by work that was ending
  -> close the tombstone with the receipt; audit it

The query ``progress`` reports the stage and the counts so far. It takes minutes, well
within the 30 days the GDPR allows; activities retry through store outages.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.erasure import ErasureActivities
    from clarion.journeys.models import ERASURE_EVENT, JourneyEvent
    from clarion.models import (
        ErasureCloseInput,
        ErasureInput,
        ErasurePlan,
        ErasureProgress,
        ErasureReceipt,
        ErasureStep,
        ErasureWaitInput,
    )
    from clarion.policy.timing import parse_duration
    from workflows.retries import STORE_RETRY

STORE_TIMEOUT = timedelta(seconds=60)
JOURNEY_WAIT = timedelta(minutes=10)


def erasure_workflow_id(request_id: str) -> str:
    return f"erasure:{request_id}"


@workflow.defn(name="Erasure")
class ErasureWorkflow:
    def __init__(self) -> None:
        self._progress: ErasureProgress | None = None

    @workflow.query(name="progress")
    def progress(self) -> ErasureProgress | None:
        return self._progress

    def _stage(self, stage: str, **update: object) -> None:
        assert self._progress is not None
        self._progress = self._progress.model_copy(update={"stage": stage, **update})

    @workflow.run
    async def run(self, inp: ErasureInput) -> ErasureReceipt:
        self._progress = ErasureProgress(request_id=inp.request_id, stage="starting")
        plan: ErasurePlan = await workflow.execute_activity_method(
            ErasureActivities.open_erasure,
            inp,
            start_to_close_timeout=STORE_TIMEOUT,
            retry_policy=STORE_RETRY,
        )
        self._stage("ending_journeys", journeys=len(plan.journeys), messages=len(plan.messages))
        for journey_id in plan.journeys:
            # A journey that ended meanwhile cannot take the signal: nothing to do then.
            with contextlib.suppress(Exception):
                await workflow.get_external_workflow_handle(journey_id).signal(
                    "event",
                    JourneyEvent(event_id=f"erasure:{inp.request_id}", name=ERASURE_EVENT),
                )
        for message_wf in plan.messages:
            with contextlib.suppress(Exception):
                await workflow.get_external_workflow_handle(message_wf).cancel()
        if plan.journeys:
            await workflow.execute_activity_method(
                ErasureActivities.wait_for_journeys,
                ErasureWaitInput(journeys=plan.journeys, within_s=JOURNEY_WAIT.total_seconds()),
                start_to_close_timeout=JOURNEY_WAIT + timedelta(minutes=1),
                heartbeat_timeout=timedelta(seconds=30),
                retry_policy=STORE_RETRY,
            )

        self._stage("erasing")
        rows = await self._erase(inp, sweep=False)
        self._stage("sweeping", rows=rows)
        await workflow.sleep(parse_duration(inp.sweep_after))
        for table, count in (await self._erase(inp, sweep=True)).items():
            rows[table] = rows.get(table, 0) + count
        receipt: ErasureReceipt = await workflow.execute_activity_method(
            ErasureActivities.close_erasure,
            ErasureCloseInput(
                request_id=inp.request_id,
                customer_id=inp.customer_id,
                journeys_ended=len(plan.journeys),
                messages_cancelled=len(plan.messages),
                rows=rows,
            ),
            start_to_close_timeout=STORE_TIMEOUT,
            retry_policy=STORE_RETRY,
        )
        self._stage("done", rows=rows)
        return receipt

    async def _erase(self, inp: ErasureInput, *, sweep: bool) -> dict[str, int]:
        return dict(
            await workflow.execute_activity_method(
                ErasureActivities.erase_customer_data,
                ErasureStep(request_id=inp.request_id, customer_id=inp.customer_id, sweep=sweep),
                start_to_close_timeout=STORE_TIMEOUT,
                retry_policy=STORE_RETRY,
            )
        )
