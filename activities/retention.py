"""Activity of the Retention workflow: purge the store and the local outbox, then bring
the delivery reports' rollup up to date."""

from __future__ import annotations

from pathlib import Path

from temporalio import activity

from clarion.logging import get_logger
from clarion.models import AuditKind, PurgeInput, RetentionReport
from clarion.store import Store, repo
from clarion.store import retention as retention_repo
from clarion.store.reports import refresh_rollup

log = get_logger(__name__)


def purge_outbox(folder: Path, cutoff_ts: float) -> int:
    """Delete the local sinks' message files (full bodies) older than the cutoff."""
    if not folder.is_dir():
        return 0
    removed = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file() and path.stat().st_mtime < cutoff_ts:
                path.unlink()
                removed += 1
        except OSError:  # removed meanwhile, or not ours to remove: next run tries again
            continue
    return removed


class RetentionActivities:
    def __init__(self, store: Store, outbox_dir: Path) -> None:
        self.store = store
        self.outbox_dir = outbox_dir

    @activity.defn(name="purge_expired")
    async def purge_expired(self, data: PurgeInput) -> RetentionReport:
        info = activity.info()
        async with self.store.transaction() as session:
            rows = await retention_repo.purge_before(session, cutoff=data.cutoff)
        rows["outbox_files"] = purge_outbox(self.outbox_dir, data.cutoff.timestamp())
        async with self.store.transaction() as session:
            await repo.append_audit(
                session,
                kind=AuditKind.RETENTION_PURGED,
                workflow_id=info.workflow_id,
                reason=f"older than {data.days} days",
                detail={"cutoff": data.cutoff.isoformat(), "rows": rows},
                dedupe_key=f"retention:{info.workflow_id}:{info.workflow_run_id}",
            )
        log.info("retention purge", workflow_id=info.workflow_id, cutoff=data.cutoff, rows=rows)
        # The daily schedule also keeps the delivery reports' rollup fresh: yesterday, and
        # the days whose details the purge just cleared.
        async with self.store.transaction() as session:
            rolled = await refresh_rollup(session)
        log.info("delivery rollup refreshed by retention", days=len(rolled.days))
        return RetentionReport(cutoff=data.cutoff, rows=rows)
