"""The Clarion worker: DeliverMessage and its activities on the configured task queue."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from activities import (
    ApprovalActivities,
    BroadcastActivities,
    DeliveryActivities,
    ErasureActivities,
    IncidentActivities,
    JourneyActivities,
    RetentionActivities,
)
from clarion.channels import Provider, build_providers
from clarion.config import Settings
from clarion.crisis.models import batch_task_queue
from clarion.logging import get_logger
from clarion.models import Channel
from clarion.policy.approval import load_policy
from clarion.store import Store
from clarion.temporal import connect, ensure_search_attributes
from workers.schedules import ensure_retention_schedule
from workflows.registry import ALL_WORKFLOWS

log = get_logger(__name__)


@asynccontextmanager
async def _running(*workers: Worker) -> AsyncIterator[None]:
    """Run the workers together: started in order, stopped in reverse order."""
    async with AsyncExitStack() as stack:
        for worker in workers:
            await stack.enter_async_context(worker)
        yield


def build_worker(
    client: Client,
    settings: Settings,
    store: Store,
    providers: dict[Channel, Provider],
    *,
    task_queue: str | None = None,
) -> AbstractAsyncContextManager[None]:
    """Clarion's workflows and activities on ``task_queue`` (the settings' by default),
    and broadcast batches on their own queue, ``broadcast_batch_slots`` at a time: a batch
    keeps ``broadcast_concurrency`` messages in flight on its own, so more of them in one
    process only share its CPU (and leave fewer to the other workers)."""
    acts = DeliveryActivities(store, providers, settings)
    journeys = JourneyActivities(store, load_policy(settings.approval_policy_file))
    broadcasts = BroadcastActivities(store, providers, settings)
    approvals = ApprovalActivities(store, providers, settings)
    erasure = ErasureActivities(store)
    retention = RetentionActivities(store, settings.outbox_dir)
    incidents = IncidentActivities(store, settings)
    activities: Sequence[Callable[..., Any]] = [
        acts.prepare_delivery,
        acts.send_message,
        acts.record_outcome,
        acts.escalate_message,
        acts.defer_message,
        journeys.load_journey,
        journeys.record_steps,
        journeys.evaluate_branch,
        journeys.finish_journey,
        journeys.approval_rule,
        broadcasts.prepare_broadcast,
        broadcasts.new_generation,
        broadcasts.set_state,
        broadcasts.send_broadcast_batch,
        approvals.open_approval,
        approvals.ask_approvers,
        approvals.load_roster,
        approvals.record_approval_decision,
        approvals.close_approval,
        erasure.open_erasure,
        erasure.wait_for_journeys,
        erasure.erase_customer_data,
        erasure.close_erasure,
        retention.purge_expired,
        incidents.alert_rules,
        incidents.save_incident,
        incidents.propose_incident,
        incidents.launch_incident_broadcast,
        incidents.resolve_incident_broadcast,
    ]
    queue = task_queue or settings.task_queue
    main = Worker(
        client,
        task_queue=queue,
        workflows=ALL_WORKFLOWS,
        activities=activities,  # send_broadcast_batch too: shards started before its queue
        max_concurrent_activities=100,
        graceful_shutdown_timeout=timedelta(seconds=10),
    )
    batches = Worker(
        client,
        task_queue=batch_task_queue(queue),
        activities=[broadcasts.send_broadcast_batch],
        max_concurrent_activities=settings.broadcast_batch_slots,
        graceful_shutdown_timeout=timedelta(seconds=10),
    )
    return _running(batches, main)


def freeze_startup_objects() -> int:
    """Collect once, then move every object start-up made (modules, SQLAlchemy's and the
    SDK's tables, the sandbox's) out of the garbage collector's sight; returns how many.

    A full collection walks all tracked objects: a worker's start-up leaves some hundreds
    of thousands, so each one paused the worker for about a tenth of a second, a few times
    a minute under load. After this it walks only what the work allocated since."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


async def run_worker(
    settings: Settings, *, stop: asyncio.Event, client: Client | None = None
) -> None:
    """Run until ``stop`` is set; then finish in-flight tasks and close everything."""
    store = Store(settings.database_url)
    providers = build_providers(settings)
    try:
        if settings.auto_migrate:
            await store.migrate()
        client = client or await connect(settings)
        try:
            added = await ensure_search_attributes(client, settings.temporal_namespace)
        except Exception as exc:  # e.g. no operator permission: they may exist already
            log.warning(
                "could not check or register search attributes; create them as in "
                "docs/deployment.md if journeys fail to start",
                error=str(exc),
            )
        else:
            if added:
                log.info("search attributes registered", names=added)
        try:
            await ensure_retention_schedule(client, settings)
        except Exception as exc:  # e.g. no permission: purge by hand (clarion retention run)
            log.warning("could not create or update the retention schedule", error=str(exc))
        worker = build_worker(client, settings, store, providers)
        frozen = freeze_startup_objects()
        log.info(
            "worker started",
            frozen_objects=frozen,
            task_queue=settings.task_queue,
            batch_task_queue=batch_task_queue(settings.task_queue),
            batch_slots=settings.broadcast_batch_slots,
            namespace=settings.temporal_namespace,
            email=providers[Channel.EMAIL].name,
            sms=providers[Channel.SMS].name,
        )
        async with worker:
            await stop.wait()
            log.info("worker stopping")
    finally:
        for provider in providers.values():
            await provider.aclose()
        await store.close()
        log.info("worker stopped")
