"""Crisis broadcasts.

CrisisBroadcastWorkflow prepares the audience snapshot (in the store, in tier order),
waits for approval when the template is not a pre-approved crisis template, then
dispatches tier after tier: a tier of up to a shard's size runs its batches of
recipients from the broadcast's workflow; a larger one is cut into shards (child
workflows, so no history grows without bound) that run batches and report each back. A
follow-up (update) or the resolution notice is a new generation of the message: pending
recipients get the newest one, recipients already reached get a follow-up pass.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.broadcast import BroadcastActivities
    from clarion.crisis.models import (
        BatchInput,
        BatchReport,
        BroadcastInput,
        BroadcastProgress,
        BroadcastState,
        FinishBroadcastInput,
        FollowUp,
        NewGeneration,
        PreparedBroadcast,
        ShardInput,
        Tally,
        TierProgress,
        TierRange,
        batch_task_queue,
    )
    from clarion.models import ApprovalGateInput, ApprovalOutcome
    from clarion.policy.timing import parse_duration
    from workflows.approval import approval_gate
    from workflows.retries import STORE_RETRY

CRISIS_UNAPPROVED = "crisis_unapproved"

# No shard smaller than this: one batch activity pipelines its chunks and keeps a channel
# busy on its own, so a small tier gains nothing from more shards but their start-up.
MIN_SHARD = 500
MIN_SHARD_BEFORE = 50  # broadcasts started before the LARGER_SHARDS patch
LARGER_SHARDS = "larger-shards"
BATCH_QUEUE = "batch-task-queue"  # batches on their own task queue (broadcast_batch_slots)
# A shard keeps its next batch queued while one runs, so that a worker starts it as soon as
# it is free (no round trip through the shard between batches), or another worker runs it.
BATCH_LOOKAHEAD = "batch-lookahead"
BATCHES_AHEAD = 2
# A tier of at most shard_size recipients runs its batches from the broadcast's own
# workflow (no child workflow to start, report to and wait for); larger tiers are cut
# into shards of at least two batches.
DIRECT_BATCHES = "direct-batches"
BATCH_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
)


def _seconds(duration: str | None) -> float | None:
    return None if duration is None else parse_duration(duration).total_seconds()


async def _batch(shard: ShardInput, workflow_id: str, queue: str | None, start: int) -> Tally:
    """One batch of ``shard`` from ``start``, on the batch ``queue``."""
    tally: Tally = await workflow.execute_activity_method(
        BroadcastActivities.send_broadcast_batch,
        BatchInput(
            broadcast_id=shard.broadcast_id,
            tier=shard.tier,
            seq_from=start,
            seq_to=min(start + shard.batch_size - 1, shard.seq_to),
            channels=shard.channels,
            workflow_id=workflow_id,
            escalate=shard.escalate,
            ack_within_s=shard.ack_within_s,
        ),
        task_queue=queue,
        start_to_close_timeout=timedelta(minutes=30),
        heartbeat_timeout=timedelta(seconds=shard.heartbeat_timeout_s),
        retry_policy=BATCH_RETRY,
    )
    return tally


async def _batches(
    shard: ShardInput,
    workflow_id: str,
    queue: str | None,
    report: Callable[[int, Tally], Awaitable[None]],
) -> None:
    """The batches of ``shard``, each reported in order once done: one runs while the next
    waits in the batch queue (``BATCHES_AHEAD``)."""
    ahead: list[tuple[int, asyncio.Task[Tally]]] = []
    starts = range(shard.seq_from, shard.seq_to + 1, shard.batch_size)
    for number, start in enumerate(starts):
        ahead.append((number, asyncio.create_task(_batch(shard, workflow_id, queue, start))))
        if len(ahead) == BATCHES_AHEAD:
            done, task = ahead.pop(0)
            await report(done, await task)
    for done, task in ahead:
        await report(done, await task)


@workflow.defn(name="BroadcastShard")
class BroadcastShardWorkflow:
    """Sends one shard of a tier in batches, reporting each batch to the parent: one batch
    runs while the next waits in the batch queue (``BATCHES_AHEAD``), reported in order."""

    @workflow.run
    async def run(self, shard: ShardInput) -> Tally:
        self.shard = shard
        self.total = Tally()
        self.shard_id = workflow.info().workflow_id
        self.parent = workflow.get_external_workflow_handle(shard.parent_id)
        # Shards started before the patch send their batches on the workflows' queue.
        self.queue = (
            batch_task_queue(workflow.info().task_queue) if workflow.patched(BATCH_QUEUE) else None
        )
        if not workflow.patched(BATCH_LOOKAHEAD):  # shards started before: one at a time
            starts = range(shard.seq_from, shard.seq_to + 1, shard.batch_size)
            for number, start in enumerate(starts):
                await self._report(number, await _batch(shard, self.shard_id, self.queue, start))
            return self.total
        await _batches(shard, self.shard_id, self.queue, self._report)
        return self.total

    async def _report(self, number: int, tally: Tally) -> None:
        self.total.merge(tally)
        await self.parent.signal(
            "batch_done",
            BatchReport(
                shard_id=self.shard_id,
                batch_no=number,
                tier=self.shard.tier,
                tally=tally,
                gen=0,
                escalation=self.shard.escalate,
            ),
        )


@workflow.defn(name="CrisisBroadcast")
class CrisisBroadcastWorkflow:
    def __init__(self) -> None:
        self.state = BroadcastState.PREPARING
        self.input: BroadcastInput | None = None
        self.prepared: PreparedBroadcast | None = None
        self.reports: set[tuple[str, int]] = set()
        self.tally = Tally()  # the first pass: every recipient once
        self.followups = Tally()  # later passes: follow-ups and the resolution
        self.escalations = Tally()  # second sends to recipients who did not acknowledge
        self.escalation_tasks: list[asyncio.Task[None]] = []
        self.pass_no = 0
        self.gen = 1
        self.dispatched_gen = 0
        self.resolution_gen: int | None = None
        self.approval: ApprovalOutcome | None = None
        self.cancelled = False
        self.reason = ""
        self.launched_at: datetime | None = None
        self.tier_done_after: dict[int, float] = {}

    # ----------------------------------------------------------------- messages

    @workflow.signal(name="batch_done")
    def batch_done(self, report: BatchReport) -> None:
        key = (report.shard_id, report.batch_no)
        if key in self.reports:
            return  # a duplicate report
        self.reports.add(key)
        self._count(report.tally, escalation=report.escalation)

    def _count(self, tally: Tally, *, escalation: bool = False) -> None:
        if escalation:
            self.escalations.merge(tally)
        else:
            (self.tally if self.pass_no <= 1 else self.followups).merge(tally)

    async def _counted(self, number: int, tally: Tally) -> None:
        """A batch the broadcast ran itself, done (``number``: its place in the tier)."""
        self._count(tally)

    @workflow.update(name="follow_up")
    async def follow_up(self, message: FollowUp) -> int:
        """A newer message: pending recipients get it instead, reached ones as a follow-up."""
        assert self.input is not None
        result = await workflow.execute_activity_method(
            BroadcastActivities.new_generation,
            NewGeneration(
                broadcast_id=self.input.broadcast_id, template=message.template, kind=message.kind
            ),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=STORE_RETRY,
        )
        if not result.ok:
            raise ValueError(result.error)  # reported to the caller as a failed update
        self.gen = max(self.gen, result.gen)
        if message.kind == "resolution":
            self.resolution_gen = result.gen
        return result.gen

    @follow_up.validator
    def _check_follow_up(self, message: FollowUp) -> None:
        if self.state not in (BroadcastState.DISPATCHING, BroadcastState.ACTIVE):
            raise ValueError(f"the broadcast is {self.state.value}; it takes no more messages")
        if self.resolution_gen is not None:
            raise ValueError("the broadcast is being resolved")
        if message.kind not in ("update", "resolution"):
            raise ValueError(f"kind {message.kind!r}: use update or resolution")

    @workflow.signal(name="cancel")
    async def cancel(self, reason: str) -> None:
        """Stop sending: running batches see the state in the store and stop at their next
        chunk; no new shard or tier starts."""
        if self.cancelled or self.state in (BroadcastState.RESOLVED, BroadcastState.CANCELLED):
            return
        self.cancelled = True
        self.reason = reason or "cancelled"
        await self._set(BroadcastState.CANCELLED)

    @workflow.query(name="progress")
    def progress(self) -> BroadcastProgress:
        assert self.input is not None
        ranges = self.prepared.ranges if self.prepared else []
        total = sum(r.count for r in ranges)
        tiers = []
        for r in ranges:
            sent = self.tally.total(tier=r.tier, status="sent")
            failed = self.tally.total(tier=r.tier, status="failed")
            suppressed = self.tally.total(tier=r.tier, status="suppressed")
            tiers.append(
                TierProgress(
                    tier=self.input.tiers[r.tier].name,
                    total=r.count,
                    pending=max(0, r.count - sent - failed - suppressed),
                    sent=sent,
                    failed=failed,
                    suppressed=suppressed,
                    notified_after_s=self.tier_done_after.get(r.tier),
                    escalated=self.escalations.total(tier=r.tier, status="sent"),
                )
            )
        done = self.tally.total()
        by_status: dict[str, int] = {"pending": max(0, total - done)}
        by_channel: dict[str, int] = {}
        for key, n in self.tally.counts.items():
            _, channel, status = key.split("|")
            by_status[status] = by_status.get(status, 0) + n
            if status == "sent":
                by_channel[channel] = by_channel.get(channel, 0) + n
        by_status["followups_sent"] = self.followups.total(status="sent")
        elapsed = (workflow.now() - self.launched_at).total_seconds() if self.launched_at else 0.0
        rate = done / elapsed if elapsed > 0 else 0.0
        return BroadcastProgress(
            broadcast_id=self.input.broadcast_id,
            state=self.state,
            gen=self.gen,
            total=total,
            done=done,
            by_status=by_status,
            by_channel=by_channel,
            tiers=tiers,
            rate_per_s=round(rate, 2),
            eta_s=round((total - done) / rate, 1)
            if rate > 0 and done < total
            else (0.0 if done >= total else None),
            launched_at=self.launched_at,
            possible_duplicates=self.tally.possible_duplicates + self.followups.possible_duplicates,
            unknown_customers=self.prepared.unknown_customers if self.prepared else 0,
            escalated=self.escalations.total(status="sent"),
            reason=self.reason,
        )

    # ----------------------------------------------------------------- run

    @workflow.run
    async def run(self, inp: BroadcastInput) -> BroadcastProgress:
        self.input = inp
        self.prepared = await workflow.execute_activity_method(
            BroadcastActivities.prepare_broadcast,
            inp,
            start_to_close_timeout=timedelta(minutes=10),
            retry_policy=STORE_RETRY,
        )
        if not self.prepared.ok:
            self.reason = self.prepared.error
            return await self._end(BroadcastState.CANCELLED)
        if not self.prepared.pre_approved:
            await self._set(BroadcastState.AWAITING_APPROVAL)
            gate = asyncio.create_task(self._approval(inp, self.prepared))
            await workflow.wait_condition(lambda: gate.done() or self.cancelled)
            if self.cancelled:
                gate.cancel()  # the gate is cancelled with it: nobody needs to decide
                return await self._end(BroadcastState.CANCELLED)
            self.approval = gate.result()
            if not self.approval.approved:
                self.reason = f"approval {self.approval.status}: {self.approval.reason}"
                return await self._end(BroadcastState.REJECTED)
        self.launched_at = workflow.now()
        await self._set(BroadcastState.DISPATCHING)
        while not self.cancelled:
            target = self.gen
            self.pass_no += 1
            await self._dispatch(self.prepared.ranges)
            self.dispatched_gen = target
            if self.cancelled:
                break
            if self.resolution_gen is not None and self.dispatched_gen >= self.resolution_gen:
                return await self._end(BroadcastState.RESOLVED)
            if self.state is not BroadcastState.ACTIVE:
                await self._set(BroadcastState.ACTIVE)
            await workflow.wait_condition(lambda: self.gen > self.dispatched_gen or self.cancelled)
        return await self._end(BroadcastState.CANCELLED)

    async def _approval(self, inp: BroadcastInput, prepared: PreparedBroadcast) -> ApprovalOutcome:
        """A template that is not a pre-approved crisis template needs the approval gate
        (category ``crisis_unapproved``): who decides and how it escalates is policy."""
        return await approval_gate(
            ApprovalGateInput(
                request_id=inp.broadcast_id,
                subject_kind="broadcast",
                subject_id=inp.broadcast_id,
                category=CRISIS_UNAPPROVED,
                template=inp.template,
                template_version=prepared.template_version,
                requested_by=inp.requested_by,
                rule=prepared.approval_rule or {},
            )
        )

    async def _dispatch(self, ranges: list[TierRange]) -> None:
        """One pass: every tier in order. A tier of at most ``shard_size`` recipients runs
        its batches from here; a larger one is cut into shards that run in parallel."""
        assert self.input is not None
        direct = workflow.patched(DIRECT_BATCHES)
        for r in ranges:
            if direct and r.count <= self.input.shard_size:
                await _batches(
                    self._shard_input(r.tier, r.seq_from, r.seq_to),
                    workflow.info().workflow_id,
                    batch_task_queue(workflow.info().task_queue),
                    self._counted,
                )
            else:
                await self._shards(r, direct=direct)
            self._tier_done(r)
            if self.cancelled:
                return

    async def _shards(self, r: TierRange, *, direct: bool) -> None:
        """Tier ``r`` spread over parallel shards (so that several workers share it), with
        no shard above shard_size and none below the smallest (since DIRECT_BATCHES: two
        batches, so that each shard keeps its next batch queued)."""
        assert self.input is not None
        inp = self.input
        if direct:
            smallest = 2 * inp.batch_size
        else:
            smallest = MIN_SHARD if workflow.patched(LARGER_SHARDS) else MIN_SHARD_BEFORE
        length = min(inp.shard_size, max(smallest, -(-r.count // inp.max_parallel_shards)))
        gate = asyncio.Semaphore(inp.max_parallel_shards)

        async def run_shard(start: int, end: int) -> None:
            async with gate:
                if self.cancelled:
                    return
                await workflow.execute_child_workflow(
                    BroadcastShardWorkflow.run,
                    self._shard_input(r.tier, start, end),
                    id=f"{workflow.info().workflow_id}/p{self.pass_no}/t{r.tier}/{start}",
                )

        starts = range(r.seq_from, r.seq_to + 1, length)
        await asyncio.gather(*(run_shard(a, min(a + length - 1, r.seq_to)) for a in starts))

    def _shard_input(
        self, tier: int, seq_from: int, seq_to: int, *, escalate: bool = False
    ) -> ShardInput:
        """What a shard of ``tier`` over ``seq_from..seq_to`` sends (the broadcast's own
        batches take the same): the tier's channels, or its escalation ladder."""
        assert self.input is not None
        inp, spec = self.input, self.input.tiers[tier]
        return ShardInput(
            broadcast_id=inp.broadcast_id,
            parent_id=workflow.info().workflow_id,
            tier=tier,
            seq_from=seq_from,
            seq_to=seq_to,
            channels=spec.escalate_to if escalate else spec.channels,
            batch_size=inp.batch_size,
            heartbeat_timeout_s=inp.heartbeat_timeout_s,
            escalate=escalate,
            ack_within_s=None if escalate else _seconds(spec.acknowledge_within),
        )

    def _tier_done(self, r: TierRange) -> None:
        """The first pass reached tier ``r``: note when, and wait for acknowledgements."""
        assert self.input is not None
        if self.pass_no == 1 and self.launched_at is not None:
            self.tier_done_after[r.tier] = (workflow.now() - self.launched_at).total_seconds()
            if self.input.tiers[r.tier].acknowledge_within:
                self.escalation_tasks.append(asyncio.create_task(self._escalate_later(r)))

    async def _escalate_later(self, r: TierRange) -> None:
        """After the tier's acknowledgement time, send again on its escalation ladder to
        every reached recipient who has not acknowledged."""
        assert self.input is not None
        tier = self.input.tiers[r.tier]
        assert tier.acknowledge_within is not None
        await workflow.sleep(parse_duration(tier.acknowledge_within))
        if self.cancelled or self.resolution_gen is not None or not tier.escalate_to:
            return
        await workflow.execute_child_workflow(
            BroadcastShardWorkflow.run,
            self._shard_input(r.tier, r.seq_from, r.seq_to, escalate=True),
            id=f"{workflow.info().workflow_id}/escalate/t{r.tier}",
        )

    async def _set(self, state: BroadcastState) -> None:
        assert self.input is not None
        self.state = state
        await workflow.execute_activity_method(
            BroadcastActivities.set_state,
            FinishBroadcastInput(broadcast_id=self.input.broadcast_id, state=state),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=STORE_RETRY,
        )

    async def _end(self, state: BroadcastState) -> BroadcastProgress:
        for task in self.escalation_tasks:
            if not task.done():
                task.cancel()  # resolved or cancelled: no escalation any more
        await self._set(state)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.progress()
