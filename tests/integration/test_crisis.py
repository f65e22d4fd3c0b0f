"""Crisis broadcasts end to end: real dev server, SMTP server, Twilio-compatible API."""

from __future__ import annotations

import asyncio
import json
import re
from collections import defaultdict
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import select
from temporalio.client import WorkflowHistory
from temporalio.service import RPCError

from clarion.crisis.models import BroadcastProgress, BroadcastState, Tier
from clarion.customers import CustomerRecord
from clarion.errors import NotFound
from clarion.models import Channel, ConsentStatus, Purpose
from clarion.store import Store, repo
from clarion.store import audit as audit_chain
from clarion.store import operators as operators_repo
from clarion.store.tables import AuditEvent, BroadcastRecipient, Delivery
from starters.sdk import BroadcastHandle, ClarionClient
from tests.conftest import Stack, StackWith, operator_client, uid, unique_phone
from tests.integration.test_replay import HISTORIES, RECORD, REPLAY_BROADCAST_ID
from tests.support.processes import wait_until

TIERS = [
    Tier(
        name="life-critical",
        segment="'medical-device' in tags",
        channels=[Channel.SMS, Channel.EMAIL],
    ),
    Tier(name="enterprise", segment="plan == 'enterprise'", channels=[Channel.EMAIL]),
    Tier(name="everyone", segment="true", channels=[Channel.EMAIL, Channel.SMS]),
]
GEN = re.compile(r"\bg(\d+)\]")


async def add(
    store: Store,
    region: str,
    *,
    email: bool = True,
    phone: str | None = None,
    plan: str = "basic",
    tags: list[str] | None = None,
    revoke: list[tuple[Channel, Purpose]] = (),  # type: ignore[assignment]
) -> CustomerRecord:
    ext = uid("cr")
    record = CustomerRecord(
        external_id=ext,
        name=f"Crisis {ext}",
        email=f"{ext}@example.com" if email else None,
        phone=phone,
        attributes={"region": region, "plan": plan, "tags": tags or []},
    )
    async with store.transaction() as session:
        customer, _ = await repo.upsert_customer(session, record=record)
        for channel, purpose in revoke:
            await repo.record_consent(
                session, customer=customer, channel=channel, purpose=purpose,
                status=ConsentStatus.REVOKED, source="test",
            )  # fmt: skip
    return record


async def reached(handle: BroadcastHandle, *, within: float = 120) -> BroadcastProgress:
    progress: list[BroadcastProgress] = []

    async def done() -> bool:
        try:
            p = await handle.progress()
        except RPCError:
            # A query can fail while its worker is being replaced (the crash tests kill
            # one): the next poll asks again.
            return False
        progress[:] = [p]
        return p.state in (BroadcastState.ACTIVE, BroadcastState.RESOLVED) and p.done >= p.total

    await wait_until(done, within=within, what="every recipient to be reached")
    return progress[0]


async def recipients(store: Store, broadcast_id: str) -> list[BroadcastRecipient]:
    async with store.session() as session:
        rows = await session.execute(
            select(BroadcastRecipient)
            .where(BroadcastRecipient.broadcast_id == broadcast_id)
            .order_by(BroadcastRecipient.seq)
        )
        return list(rows.scalars())


async def chain_covers(store: Store, broadcast_id: str, expected: int) -> None:
    """The broadcast's audit events (one per recipient and generation) are all sealed,
    exactly once each, and the audit chain verifies."""
    async with store.session() as session:
        found = (
            await session.execute(
                select(AuditEvent.seq, AuditEvent.hash).where(
                    AuditEvent.message_id.like(f"crisis-{broadcast_id}-%")
                )
            )
        ).all()
    assert len(found) == expected and all(seq is not None and h for seq, h in found)
    result = await audit_chain.verify(store)
    assert result.ok and result.unsealed == 0, result


async def test_tiers_go_in_order_and_consent_is_respected(stack: Stack) -> None:
    region = uid("r")
    critical = [
        await add(stack.store, region, phone=unique_phone(), tags=["medical-device"])
        for _ in range(3)
    ]
    enterprise = [await add(stack.store, region, plan="enterprise") for _ in range(4)]
    everyone = [await add(stack.store, region) for _ in range(5)]
    opted_out = await add(stack.store, region, revoke=[(Channel.EMAIL, Purpose.SERVICE)])
    recording = RECORD and "sqlite" in stack.store.url
    handle = await stack.clarion.launch_broadcast(
        title="Outage",
        template="crisis-outage",
        segment=f"region == '{region}'",
        tiers=TIERS,
        batch_size=4,
        broadcast_id=REPLAY_BROADCAST_ID if recording else None,
    )
    progress = await reached(handle)
    if recording:  # for the replay test (scripts/record-histories.sh)
        history = await handle._handle.fetch_history()
        (HISTORIES / "crisis_direct_batches.json").write_text(
            json.dumps(json.loads(history.to_json()), indent=1) + "\n"
        )
    assert (
        progress.total == 13
        and progress.by_status["sent"] == 12
        and progress.by_status["suppressed"] == 1
    )
    assert [(t.tier, t.total, t.sent) for t in progress.tiers] == [
        ("life-critical", 3, 3),
        ("enterprise", 4, 4),
        ("everyone", 6, 5),
    ]
    rows = await recipients(stack.store, handle.broadcast_id)
    by_tier: dict[int, list[BroadcastRecipient]] = defaultdict(list)
    for r in rows:
        by_tier[r.tier].append(r)
    for earlier, later in ((0, 1), (1, 2)):
        last = max(r.sent_at for r in by_tier[earlier] if r.sent_at)
        first = min(r.sent_at for r in by_tier[later] if r.sent_at)
        assert last <= first, (earlier, later)
    after = [t.notified_after_s for t in progress.tiers]
    assert all(a is not None for a in after) and after == sorted(after)  # type: ignore[type-var]
    # Life-critical customers got SMS first; the opted-out customer got nothing.
    for c in critical:
        assert c.phone and len(stack.twilio.to(c.phone)) == 1
    assert all(len(stack.smtp.to(c.email or "")) == 1 for c in enterprise + everyone)
    assert stack.smtp.to(opted_out.email or "") == []
    [row] = [r for r in rows if r.customer_external_id == opted_out.external_id]
    assert row.status == "suppressed" and "opted_out" in row.reason
    await chain_covers(stack.store, handle.broadcast_id, 13)


async def test_malformed_contacts_are_reported_and_the_rest_delivered(stack: Stack) -> None:
    region = uid("r")
    invalid_phone = unique_phone()
    stack.twilio.invalid_numbers.add(invalid_phone)
    fine = [await add(stack.store, region) for _ in range(3)]
    no_contact = await add(stack.store, region, email=False)
    sms_fails = await add(stack.store, region, email=False, phone=invalid_phone)
    handle = await stack.clarion.launch_broadcast(
        title="Outage", template="crisis-outage", segment=f"region == '{region}'", tiers=TIERS
    )
    progress = await reached(handle)
    assert progress.by_status.get("sent") == 3
    rows = {r.customer_external_id: r for r in await recipients(stack.store, handle.broadcast_id)}
    assert rows[no_contact.external_id].status == "suppressed"
    assert "no_contact_point" in rows[no_contact.external_id].reason
    assert (
        rows[sms_fails.external_id].status == "failed"
        and "21211" in rows[sms_fails.external_id].reason
    )
    assert all(rows[c.external_id].status == "sent" for c in fine)


async def test_a_batch_goes_chunk_by_chunk_and_resumes_after_a_failed_chunk(
    stack_with: StackWith,
) -> None:
    """One batch of 45 in chunks of 10 (CLARION_BROADCAST_CHUNK_SIZE), two chunks in flight
    at a time. After 20 messages the provider fails long enough for a chunk's in-batch
    retries to give up: the chunks in flight are written, the batch is retried from the
    last chunk written whole, and everyone gets the message once. The progress counts each
    recipient once too: those written before the failure come with the heartbeat or from
    the store, not again."""
    async with stack_with(broadcast_chunk_size=10) as stack:
        region = uid("r")
        phones = [unique_phone() for _ in range(45)]
        for p in phones:
            await add(stack.store, region, email=False, phone=p)
        before = stack.twilio.requests
        # After 20 requests, long enough to fail a chunk's in-batch retries.
        stack.twilio.outage_at, stack.twilio.outage = before + 20, [503] * 80
        handle = await stack.clarion.launch_broadcast(
            title="Outage", template="crisis-outage", segment=f"region == '{region}'",
            tiers=[Tier(name="all", channels=[Channel.SMS])], batch_size=45,
        )  # fmt: skip
        progress = await reached(handle, within=120)
    assert stack.twilio.fail_next == [] and stack.twilio.requests - before == 45 + 80
    assert progress.by_status.get("sent") == progress.done == progress.total == 45
    assert [len(stack.twilio.to(p)) for p in phones] == [1] * 45
    rows = await recipients(stack.store, handle.broadcast_id)
    assert [r.status for r in rows] == ["sent"] * 45
    async with stack.store.session() as session:
        attempts = (
            await session.execute(
                select(Delivery.attempt_id).where(
                    Delivery.message_id.like(f"crisis-{handle.broadcast_id}-%")
                )
            )
        ).all()
    assert len(attempts) == 45
    await chain_covers(stack.store, handle.broadcast_id, 45)


def most_batches_outstanding(history: WorkflowHistory) -> int:
    """The most batch activities a workflow had scheduled and not yet done at once."""
    outstanding: set[int] = set()
    most = 0
    for event in history.events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            kind = event.activity_task_scheduled_event_attributes.activity_type.name
            if kind == "send_broadcast_batch":
                outstanding.add(event.event_id)
        elif event.HasField("activity_task_completed_event_attributes"):
            outstanding.discard(event.activity_task_completed_event_attributes.scheduled_event_id)
        most = max(most, len(outstanding))
    return most


async def shards_of(stack: Stack, broadcast_id: str) -> list[WorkflowHistory]:
    return [
        await stack.client.get_workflow_handle(s.id).fetch_history()
        async for s in stack.client.list_workflows(
            f"WorkflowType = 'BroadcastShard' AND TaskQueue = '{stack.settings.task_queue}'"
            f" AND WorkflowId STARTS_WITH 'crisis:{broadcast_id}/'"
        )
    ]


async def test_a_tier_within_a_shard_runs_its_batches_from_the_broadcast(stack: Stack) -> None:
    """A tier of up to shard_size recipients starts no shard: the broadcast's workflow runs
    its batches, keeping the next one queued while one runs (never more than two
    scheduled and not done), and counts each once."""
    region = uid("r")
    people = [await add(stack.store, region) for _ in range(20)]
    handle = await stack.clarion.launch_broadcast(
        title="Outage", template="crisis-outage", segment=f"region == '{region}'",
        tiers=[Tier(name="all", channels=[Channel.EMAIL])], batch_size=5,
    )  # fmt: skip
    progress = await reached(handle)
    assert progress.by_status.get("sent") == 20 and progress.tiers[0].sent == 20
    assert all(len(stack.smtp.to(p.email or "")) == 1 for p in people)
    assert await shards_of(stack, handle.broadcast_id) == []
    history = await handle._handle.fetch_history()
    batches = [
        e
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == "send_broadcast_batch"
    ]
    assert len(batches) == 4
    assert most_batches_outstanding(history) == 2


async def test_a_shard_keeps_its_next_batch_queued(stack: Stack) -> None:
    """A tier above shard_size is cut into shards of at least two batches; while one
    batch runs, the shard's next one is already in the batch queue (so a worker takes it
    as soon as it is free): never more than two scheduled and not done, and each batch is
    reported to the broadcast once."""
    region = uid("r")
    people = [await add(stack.store, region) for _ in range(40)]
    handle = await stack.clarion.launch_broadcast(
        title="Outage", template="crisis-outage", segment=f"region == '{region}'",
        tiers=[Tier(name="all", channels=[Channel.EMAIL])], batch_size=5, shard_size=20,
        max_parallel_shards=2,
    )  # fmt: skip
    progress = await reached(handle)
    assert progress.by_status.get("sent") == 40
    assert all(len(stack.smtp.to(p.email or "")) == 1 for p in people)
    shards = await shards_of(stack, handle.broadcast_id)
    assert len(shards) == 2  # 40 recipients over 2 parallel shards of at most 20
    for history in shards:
        assert most_batches_outstanding(history) == 2
        reports = [
            e.signal_external_workflow_execution_initiated_event_attributes
            for e in history.events
            if e.HasField("signal_external_workflow_execution_initiated_event_attributes")
        ]
        assert len(reports) == 4


async def test_provider_errors_for_a_while_then_completes(stack: Stack) -> None:
    region = uid("r")
    phones = [unique_phone() for _ in range(6)]
    for p in phones:
        await add(stack.store, region, email=False, phone=p)
    stack.twilio.fail_next[:] = [503] * 6 + [429] * 6
    handle = await stack.clarion.launch_broadcast(
        title="Outage", template="crisis-outage", segment=f"region == '{region}'",
        tiers=[Tier(name="all", channels=[Channel.SMS])],
    )  # fmt: skip
    progress = await reached(handle, within=180)
    assert progress.by_status.get("sent") == 6 and stack.twilio.fail_next == []
    assert all(len(stack.twilio.to(p)) == 1 for p in phones)


async def test_rate_limit_holds_across_workers(stack_with: StackWith, tmp_path: Path) -> None:
    """Two workers, this one and a `clarion worker` process, share the channel's token
    bucket in the store: the SMS go out at the configured rate (plus at most one second's
    burst), not as fast as the workers can send."""
    from tests.support.processes import spawn_cli

    rate, n = 10, 60
    async with stack_with(rate_limit_sms=rate) as stack:
        region = uid("r")
        phones = [unique_phone() for _ in range(n)]
        for p in phones:
            await add(stack.store, region, email=False, phone=p)
        target = stack.client.service_client.config.target_host
        log = tmp_path / "worker.log"
        other = await spawn_cli(
            stack.settings.model_copy(update={"temporal_address": target}), "worker", log=log
        )
        try:
            await wait_until(
                lambda: log.exists() and "worker started" in log.read_text(),
                within=60,
                what="the second worker to start",
            )
            handle = await stack.clarion.launch_broadcast(
                title="Outage", template="crisis-outage", segment=f"region == '{region}'",
                tiers=[Tier(name="all", channels=[Channel.SMS])],
                shard_size=10, batch_size=5,  # 6 shards, 4 at a time: both workers busy
            )  # fmt: skip
            progress = await reached(handle, within=120)
        finally:
            other.terminate()
            await other.wait()
        workers = set()
        async for shard in stack.client.list_workflows(
            f"WorkflowType = 'BroadcastShard' AND TaskQueue = '{stack.settings.task_queue}'"
        ):
            history = await stack.client.get_workflow_handle(shard.id).fetch_history()
            for event in history.events:
                if event.HasField("activity_task_started_event_attributes"):
                    workers.add(event.activity_task_started_event_attributes.identity)
    assert progress.by_status.get("sent") == n
    assert len(workers) == 2, workers  # both workers sent batches
    times = sorted(float(m["at"]) for p in phones for m in stack.twilio.to(p))
    assert len(times) == n
    # A bucket of one second's tokens refilled at `rate`: no one-second window sees more
    # than 2 * rate (a little slack for the time between taking a token and arriving).
    busiest = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    assert busiest <= 2 * rate + 2, busiest
    assert times[-1] - times[0] >= (n - rate) / rate - 1.0


async def test_update_mid_broadcast_never_sends_stale_after_new(stack: Stack) -> None:
    region = uid("r")
    people = [await add(stack.store, region) for _ in range(8)]
    stack.smtp.stalled.clear()
    stack.smtp.release.clear()
    stack.smtp.stall_rcpt.set()
    try:
        handle = await stack.clarion.launch_broadcast(
            title="Outage", template="crisis-outage", segment=f"region == '{region}'",
            tiers=[Tier(name="all", channels=[Channel.EMAIL])], batch_size=2,
        )  # fmt: skip
        await wait_until(stack.smtp.stalled.is_set, within=60, what="the first send to stall")
        assert await handle.update("crisis-update") == 2
    finally:
        stack.smtp.stall_rcpt.clear()
        stack.smtp.release.set()
    await reached(handle)

    async def everyone_has_gen2() -> bool:
        return all(
            any(
                GEN.search(str(m.message["Subject"])) and "g2]" in str(m.message["Subject"])
                for m in stack.smtp.to(p.email or "")
            )
            for p in people
        )

    await wait_until(everyone_has_gen2, within=120, what="the follow-up to reach everyone")
    for person in people:
        gens = [
            int(GEN.search(str(m.message["Subject"])).group(1))
            for m in stack.smtp.to(person.email or "")
        ]  # type: ignore[union-attr]
        assert gens == sorted(gens) and gens[-1] == 2, (person.external_id, gens)
        assert len(gens) == len(set(gens))


async def test_non_crisis_template_waits_for_approval_then_resolves(stack: Stack) -> None:
    region = uid("r")
    people = [await add(stack.store, region) for _ in range(3)]
    handle = await stack.clarion.launch_broadcast(
        title="Planned work", template="welcome", segment=f"region == '{region}'",
        tiers=[Tier(name="all", channels=[Channel.EMAIL])],
    )  # fmt: skip

    async def awaiting() -> bool:
        return (await handle.progress()).state is BroadcastState.AWAITING_APPROVAL

    await wait_until(awaiting, within=30, what="approval to be asked")
    assert all(stack.smtp.to(p.email or "") == [] for p in people)
    async with stack.store.transaction() as session:
        _, token = await operators_repo.add_operator(
            session, name=uid("im"), roles=["incident_manager"]
        )
    manager = ClarionClient(
        stack.client,
        stack.settings.model_copy(update={"operator_token": SecretStr(token)}),
        store=stack.store,
    )
    assert await manager.broadcast(handle.broadcast_id).approve(reason="planned") == "approved"
    await reached(handle)
    assert await handle.resolve("crisis-resolved") == 2
    final = await asyncio.wait_for(handle.result(), 60)
    assert final.state is BroadcastState.RESOLVED
    for p in people:
        subjects = [str(m.message["Subject"]) for m in stack.smtp.to(p.email or "")]
        assert len(subjects) == 2 and "Resolved" in subjects[-1]


async def test_approving_a_broadcast_waits_for_its_gate_to_start(stack: Stack) -> None:
    """A broadcast shows awaiting_approval a moment before its approval gate starts (on a
    busy machine, seconds): an approval given in that moment waits for the gate instead
    of failing with "unknown approval request"."""
    from clarion.models import ApprovalGateInput
    from clarion.policy.approval import DEFAULT_RULES

    broadcast_id = uid("b")
    # The broadcast's workflow, running (on a queue no worker polls) but not yet at its gate.
    subject = await stack.client.start_workflow(
        "CrisisBroadcast", id=f"crisis:{broadcast_id}", task_queue=uid("nobody")
    )
    manager = await operator_client(stack, "incident_manager")
    try:
        approving = asyncio.create_task(manager.approve(broadcast_id, reason="planned"))
        await asyncio.sleep(1.5)
        assert not approving.done()  # still waiting, not "unknown approval request"
        await stack.client.start_workflow(
            "ApprovalGate",
            ApprovalGateInput(
                request_id=broadcast_id, subject_kind="broadcast", subject_id=broadcast_id,
                category="crisis_unapproved", template="welcome", template_version=1,
                rule=DEFAULT_RULES["crisis_unapproved"].model_dump(mode="json"),
            ),
            id=f"approval:{broadcast_id}", task_queue=stack.settings.task_queue,
        )  # fmt: skip
        assert await asyncio.wait_for(approving, 60) == "approved"
        # An id with neither a gate nor a running message or broadcast fails at once.
        with pytest.raises(NotFound):
            await asyncio.wait_for(manager.approve(uid("nobody"), reason="x"), 5)
    finally:
        await subject.terminate()


async def test_explicit_list_reports_unknown_ids(stack: Stack) -> None:
    region = uid("r")
    people = [await add(stack.store, region) for _ in range(2)]
    handle = await stack.clarion.launch_broadcast(
        title="Outage", template="crisis-outage",
        customers=[p.external_id for p in people] + ["nobody-1", "nobody-2"],
        tiers=[Tier(name="all", channels=[Channel.EMAIL])],
    )  # fmt: skip
    progress = await reached(handle)
    assert progress.total == 2 and progress.by_status["sent"] == 2
    assert progress.unknown_customers == 2


async def test_worker_killed_mid_broadcast_duplicates_bounded_and_reported(
    stack: Stack, tmp_path: object
) -> None:
    from pathlib import Path

    from starters.sdk import ClarionClient
    from tests.support.processes import spawn_cli

    region = uid("r")
    people = [await add(stack.store, region) for _ in range(30)]
    target = stack.client.service_client.config.target_host
    settings = stack.settings.model_copy(
        update={"temporal_address": target, "task_queue": uid("tq")}
    )
    log = Path(str(tmp_path)) / "workers.log"
    first = await spawn_cli(
        settings.model_copy(update={"failpoints": "broadcast_after_send=hang"}), "worker", log=log
    )
    clarion = ClarionClient(stack.client, settings, store=stack.store)
    try:
        handle = await clarion.launch_broadcast(
            title="Outage", template="crisis-outage", segment=f"region == '{region}'",
            tiers=[Tier(name="all", channels=[Channel.EMAIL])],
            batch_size=10, heartbeat_timeout_s=4,
        )  # fmt: skip

        def first_chunk_out() -> bool:
            return sum(len(stack.smtp.to(p.email or "")) for p in people) >= 10

        await wait_until(first_chunk_out, within=60, what="the first chunk to go out")
    finally:
        first.kill()  # dies after sending, before recording
        await first.wait()
    second = await spawn_cli(settings, "worker", log=log)
    try:
        progress = await reached(handle, within=120)
    finally:
        second.terminate()
        await second.wait()
    received = [len(stack.smtp.to(p.email or "")) for p in people]
    assert all(n >= 1 for n in received)  # everyone notified
    duplicates = sum(n - 1 for n in received)
    assert duplicates == progress.possible_duplicates == 10  # exactly the chunk in flight, reported
    assert progress.by_status["sent"] == 30
    # Written by the replacement worker's retried batch: one sealed event per recipient,
    # no hole in the chain.
    await chain_covers(stack.store, handle.broadcast_id, 30)


async def test_unacknowledged_recipients_are_escalated_to_a_call(stack: Stack) -> None:
    from clarion.store import broadcasts as broadcast_repo
    from clarion.store.tables import utcnow

    region = uid("r")
    phones = [unique_phone() for _ in range(4)]
    people = [await add(stack.store, region, email=False, phone=p) for p in phones]
    tier = Tier(
        name="life-critical",
        channels=[Channel.SMS],
        acknowledge_within="4s",
        escalate_to=[Channel.VOICE],
    )
    handle = await stack.clarion.launch_broadcast(
        title="Outage", template="crisis-outage", segment=f"region == '{region}'", tiers=[tier]
    )
    await reached(handle)
    assert await handle.acknowledge(people[0].external_id)
    assert not await handle.acknowledge(people[0].external_id)  # the first one counts
    async with stack.store.transaction() as session:  # an SMS reply from the second
        assert await broadcast_repo.ack_by_phone(session, phone=phones[1], at=utcnow()) == [
            handle.broadcast_id
        ]

    async def escalated() -> bool:
        return (await handle.progress()).escalated == 2

    await wait_until(escalated, within=60, what="the escalation calls")
    progress = await handle.progress()
    assert progress.acknowledged == 2 and progress.tiers[0].acknowledged == 2
    assert [len(stack.twilio.calls_to(p)) for p in phones] == [0, 0, 1, 1]
    call = stack.twilio.calls_to(phones[2])[0]
    assert call["twiml"].startswith("<Response><Say>This is an urgent service message.")
    rows = {r.customer_external_id: r for r in await recipients(stack.store, handle.broadcast_id)}
    assert rows[people[2].external_id].escalated_at is not None
    assert rows[people[0].external_id].escalated_at is None
    # Delivery analytics: the acknowledged texts, and the texts that fell back to a call.
    async with stack.store.session() as session:
        texts = {
            d.customer_external_id: d
            for d in (
                await session.execute(
                    select(Delivery).where(
                        Delivery.message_id.like(f"crisis-{handle.broadcast_id}-%"),
                        Delivery.channel == "sms",
                    )
                )
            ).scalars()
        }
    assert [texts[p.external_id].acked_at is not None for p in people] == [
        True,
        True,
        False,
        False,
    ]
    assert [texts[p.external_id].fell_back for p in people] == [False, False, True, True]


async def test_email_carries_a_signed_acknowledgement_link(stack: Stack) -> None:
    from clarion.crisis.acks import verify_ack_token
    from clarion.store.tables import utcnow

    region = uid("r")
    person = await add(stack.store, region)
    tier = Tier(name="all", channels=[Channel.EMAIL], acknowledge_within="1h")
    handle = await stack.clarion.launch_broadcast(
        title="Outage", template="crisis-outage", segment=f"region == '{region}'", tiers=[tier]
    )
    await reached(handle)
    [mail] = stack.smtp.to(person.email or "")
    body = mail.message.get_payload(decode=True).decode()  # type: ignore[union-attr]
    link = re.search(r"http://localhost:8000/ack/(\S+)", body)
    assert link is not None
    assert verify_ack_token("test-ack-secret", link.group(1), utcnow()) == (
        handle.broadcast_id,
        person.external_id,
    )
