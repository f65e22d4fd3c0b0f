"""Retention: purge message bodies and delivery details older than the configured period.

A Temporal Schedule (``<task queue>-retention``, cron from CLARION_RETENTION_CRON) starts
it; every worker keeps the schedule in place (workers/schedules.py). The cutoff is taken
from the workflow's clock, so a run that is retried purges exactly the same range.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.retention import RetentionActivities
    from clarion.models import PurgeInput, RetentionInput, RetentionReport
    from workflows.retries import STORE_RETRY


@workflow.defn(name="Retention")
class RetentionWorkflow:
    @workflow.run
    async def run(self, inp: RetentionInput) -> RetentionReport:
        cutoff = workflow.now() - timedelta(days=inp.days)
        return await workflow.execute_activity_method(
            RetentionActivities.purge_expired,
            PurgeInput(cutoff=cutoff, days=inp.days),
            start_to_close_timeout=timedelta(minutes=30),
            retry_policy=STORE_RETRY,
        )
