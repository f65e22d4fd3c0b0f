"""Schedules every worker keeps in place: the retention purge."""

from __future__ import annotations

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from clarion.config import Settings
from clarion.logging import get_logger
from clarion.models import RetentionInput
from workflows.retention import RetentionWorkflow

log = get_logger(__name__)


def retention_schedule_id(settings: Settings) -> str:
    return f"{settings.task_queue}-retention"


def retention_schedule(settings: Settings) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            RetentionWorkflow.run,
            RetentionInput(days=settings.retention_days),
            id=f"{settings.task_queue}-retention-run",
            task_queue=settings.task_queue,
        ),
        spec=ScheduleSpec(cron_expressions=[settings.retention_cron]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def ensure_retention_schedule(client: Client, settings: Settings) -> str | None:
    """Create the retention schedule, or bring it in line with the settings; with
    CLARION_RETENTION_DAYS=0, delete it. Returns the schedule id (None when off)."""
    schedule_id = retention_schedule_id(settings)
    if settings.retention_days == 0:
        try:
            await client.get_schedule_handle(schedule_id).delete()
            log.info("retention schedule removed", schedule_id=schedule_id)
        except Exception:  # none to remove
            pass
        return None
    wanted = retention_schedule(settings)
    try:
        await client.create_schedule(schedule_id, wanted)
        log.info("retention schedule created", schedule_id=schedule_id)
    except ScheduleAlreadyRunningError:

        def change(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=wanted)

        await client.get_schedule_handle(schedule_id).update(change)
    return schedule_id
