"""The hash-chained audit trail in the store (SQLite, and PostgreSQL when configured):
sealing at commit, concurrent appends, tamper detection, erasure, export, the CLI.

Tamper tests change the shared store's chain and put it back as it was before they end,
so the chain stays verifiable for every other test."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from clarion.audit import pseudonymise, row_hash
from clarion.config import Settings
from clarion.models import AuditKind, Channel
from clarion.store import Store, repo
from clarion.store import audit as chain
from clarion.store.tables import AuditChain, AuditEvent
from tests.conftest import uid
from tests.support.processes import run_cli

events = chain.events


async def append(store: Store, n: int, *, customer: str | None = None, **kw: Any) -> list[int]:
    """Append ``n`` events in one transaction; returns their ids."""
    ids: list[int] = []
    async with store.transaction() as session:
        for i in range(n):
            event = await repo.append_audit(
                session,
                kind=AuditKind.SENT,
                customer_external_id=customer or uid("cust"),
                channel=Channel.EMAIL,
                reason=f"event {i}",
                detail={"i": i, "note": "Zürich"},
                **kw,
            )
            assert event is not None
            ids.append(event.id)
    return ids


async def rows(store: Store, ids: list[int]) -> list[dict[str, Any]]:
    async with store.session() as session:
        found = await session.execute(select(events).where(events.c.id.in_(ids)))
        by_id = {r.id: r._asdict() for r in found}
    return [by_id[i] for i in ids]


async def head(store: Store) -> tuple[int, str]:
    async with store.session() as session:
        row = (await session.execute(select(AuditChain.seq, AuditChain.hash))).one()
    return int(row.seq), str(row.hash)


async def verified(store: Store, **kw: Any) -> chain.Verification:
    result = await chain.verify(store, **kw)
    assert result.ok, result.problem
    return result


@asynccontextmanager
async def changed(store: Store, event_id: int, **values: Any) -> AsyncIterator[dict[str, Any]]:
    """UPDATE one event behind Clarion's back; put it back afterwards."""
    [before] = await rows(store, [event_id])
    async with store.transaction() as session:
        await session.execute(update(events).where(events.c.id == event_id).values(**values))
    try:
        yield before
    finally:
        async with store.transaction() as session:
            await session.execute(
                update(events)
                .where(events.c.id == event_id)
                .values(**{k: before[k] for k in values})
            )


@asynccontextmanager
async def deleted(store: Store, event_id: int) -> AsyncIterator[dict[str, Any]]:
    """DELETE one event behind Clarion's back; insert it again afterwards."""
    [before] = await rows(store, [event_id])
    async with store.transaction() as session:
        await session.execute(delete(events).where(events.c.id == event_id))
    try:
        yield before
    finally:
        async with store.transaction() as session:
            await session.execute(events.insert().values(**before))


# ------------------------------------------------------------------ sealing


async def test_appended_events_are_sealed_when_the_transaction_commits(store: Store) -> None:
    seq0, hash0 = await head(store)
    key = uid("dedupe")
    async with store.transaction() as session:
        first = await repo.append_audit(session, kind=AuditKind.REQUESTED, dedupe_key=key)
        again = await repo.append_audit(session, kind=AuditKind.REQUESTED, dedupe_key=key)
        second = await repo.append_audit(session, kind=AuditKind.SENT, reason="ok")
        assert first is not None and again is None and second is not None
        unsealed = await session.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.seq.is_(None))
        )
        assert unsealed and unsealed >= 2  # numbered at commit, not before
    a, b = await rows(store, [first.id, second.id])
    assert (a["seq"], a["prev_hash"]) == (seq0 + 1, hash0)
    assert (b["seq"], b["prev_hash"]) == (seq0 + 2, a["hash"])
    assert a["hash"] == row_hash(hash0, a) and b["hash"] == row_hash(a["hash"], b)
    assert await head(store) == (seq0 + 2, b["hash"])
    await verified(store)


async def test_rolled_back_and_skipped_events_leave_no_hole(store: Store) -> None:
    seq0, _ = await head(store)
    with pytest.raises(RuntimeError):
        async with store.transaction() as session:
            await repo.append_audit(session, kind=AuditKind.SENT)
            raise RuntimeError("rolled back")
    [kept] = await append(store, 1)
    # The broadcast's bulk path: INSERT ... ON CONFLICT DO NOTHING skips known keys.
    keys = [uid("bulk") for _ in range(3)]
    build = postgresql_insert if store.engine.dialect.name == "postgresql" else sqlite_insert
    bulk = build(events).on_conflict_do_nothing(index_elements=["dedupe_key"])
    now = datetime.now(UTC)
    for batch in (keys[:2], keys):  # the second batch repeats two keys
        async with store.transaction() as session:
            await session.execute(
                bulk,
                [
                    {"at": now, "kind": "sent", "actor": "system", "reason": "", "detail": {},
                     "dedupe_key": k}
                    for k in batch
                ],
            )  # fmt: skip
            chain.mark_pending(session)
    async with store.session() as session:
        seqs = (
            await session.scalars(
                select(AuditEvent.seq)
                .where(AuditEvent.dedupe_key.in_(keys))
                .order_by(AuditEvent.seq)
            )
        ).all()
    [kept_row] = await rows(store, [kept])
    assert kept_row["seq"] == seq0 + 1 and list(seqs) == [seq0 + 2, seq0 + 3, seq0 + 4]
    assert (await head(store))[0] == seq0 + 4
    await verified(store)


async def test_bulk_append_inserts_sealed_rows_after_what_was_pending(store: Store) -> None:
    """A broadcast's chunk: its events are hashed from the values given and inserted
    sealed; an event committed unsealed before goes first, keys seen before (or twice in
    the batch) are left out without a hole, and what is stored verifies."""
    [known] = await append(store, 1, dedupe_key=uid("known"))
    [known_row] = await rows(store, [known])
    seq0, _ = await head(store)
    at = datetime(2026, 11, 24, 12, 0, 0, 123456, tzinfo=UTC)
    fresh = [uid("bulk") for _ in range(3)]
    batch = [
        {
            "at": at, "kind": "sent", "actor": "system", "channel": "email", "reason": "",
            "detail": {"broadcast": "b", "gen": 1, "note": "Zürich"}, "dedupe_key": key,
            "customer_external_id": uid("cust"), "message_id": f"m-{key}", "workflow_id": "wf",
        }
        for key in [fresh[0], known_row["dedupe_key"], fresh[1], fresh[0], fresh[2]]
    ]  # fmt: skip
    async with store.transaction() as session:
        await session.execute(events.insert().values(at=at, kind="sent", actor="import"))
        assert await session.run_sync(chain.append_sealed, batch) == 3
    async with store.session() as session:
        stored = {
            r.dedupe_key: r._asdict()
            for r in await session.execute(select(events).where(events.c.dedupe_key.in_(fresh)))
        }
    first = stored[fresh[0]]
    assert first["seq"] == seq0 + 2  # after the event inserted unsealed in the transaction
    assert [stored[k]["seq"] for k in fresh] == [seq0 + 2, seq0 + 3, seq0 + 4]
    for key in fresh:  # the hash made from the values given is the stored row's
        row = stored[key]
        assert row["hash"] == row_hash(row["prev_hash"], row)
    assert stored[fresh[1]]["prev_hash"] == first["hash"]
    assert await head(store) == (seq0 + 4, stored[fresh[2]]["hash"])
    assert len(stored) == 3
    await verified(store)


async def test_a_rolled_back_bulk_append_leaves_the_chain_as_it_was(store: Store) -> None:
    before = await head(store)
    row = {
        "at": datetime.now(UTC), "kind": "sent", "actor": "system", "channel": None,
        "reason": "", "detail": {}, "dedupe_key": uid("bulk"), "customer_external_id": None,
        "message_id": None, "workflow_id": None,
    }  # fmt: skip
    with pytest.raises(RuntimeError):
        async with store.transaction() as session:
            await session.run_sync(chain.append_sealed, [row])
            raise RuntimeError("rolled back")
    assert await head(store) == before
    async with store.session() as session:
        found = select(func.count()).where(events.c.dedupe_key == row["dedupe_key"])
        assert await session.scalar(found) == 0
    await verified(store)


async def test_seal_pending_seals_in_the_transaction(store: Store) -> None:
    async with store.transaction() as session:
        event = await repo.append_audit(session, kind=AuditKind.SENT)
        assert event is not None
        assert await chain.seal_pending(session) >= 1
        seq = await session.scalar(select(AuditEvent.seq).where(AuditEvent.id == event.id))
        assert seq is not None
        assert chain.PENDING not in session.info  # the commit has nothing left to do
    assert (await head(store))[0] == seq
    await verified(store)


async def test_concurrent_transactions_make_one_gap_free_chain(store: Store) -> None:
    seq0, _ = await head(store)

    async def writer(n: int) -> list[int]:
        ids: list[int] = []
        async with store.transaction() as session:
            for i in range(n):
                event = await repo.append_audit(session, kind=AuditKind.SENT, reason=f"w{i}")
                assert event is not None
                ids.append(event.id)
                await asyncio.sleep(0.005)  # let the other transactions interleave
        return ids

    batches = await asyncio.gather(*(writer(5) for _ in range(8)))
    seqs = {}
    for batch in batches:
        found = [r["seq"] for r in await rows(store, batch)]
        assert found == list(range(found[0], found[0] + len(batch)))  # one run per commit
        seqs.update(dict.fromkeys(found))
    assert sorted(seqs) == list(range(seq0 + 1, seq0 + 41))
    assert (await head(store))[0] == seq0 + 40
    await verified(store)


async def test_events_written_outside_clarion_are_sealed_by_the_next_commit(
    store: Store,
) -> None:
    # An event inserted directly (or before the chain existed) waits unsealed.
    async with store.transaction() as session:
        found = await session.execute(
            events.insert()
            .values(
                at=datetime.now(UTC) - timedelta(minutes=5),
                kind="sent",
                actor="import",
                reason="legacy",
                detail={},
            )
            .returning(events.c.id)
        )
        legacy = found.scalar_one()
    result = await verified(store)
    assert result.unsealed >= 1 and "not sealed" in result.warnings[0]
    [ours] = await append(store, 1)
    old, new = await rows(store, [legacy, ours])
    assert old["seq"] is not None and new["seq"] == old["seq"] + 1
    result = await verified(store)
    assert result.unsealed == 0 and not result.warnings


async def test_verify_reads_the_chain_a_page_at_a_time(store: Store) -> None:
    await append(store, 12)
    result = await verified(store, page=5)
    seq, digest = await head(store)
    assert (result.count, result.head_seq, result.head_hash) == (seq, seq, digest)


# ------------------------------------------------------------------ tampering


async def test_a_changed_event_is_named(store: Store) -> None:
    ids = await append(store, 3)
    target = (await rows(store, ids))[1]
    async with changed(store, ids[1], reason="nothing to see here"):
        result = await chain.verify(store)
        assert result.problem is not None and result.problem.kind == "changed"
        assert (result.problem.seq, result.problem.id) == (target["seq"], ids[1])
        assert f"seq {target['seq']} (id {ids[1]}) was changed" in result.problem.message
        assert result.count == target["seq"] - 1
    await verified(store)


async def test_a_changed_and_rehashed_event_breaks_the_next_link(store: Store) -> None:
    ids = await append(store, 3)
    target = (await rows(store, ids))[1]
    forged = row_hash(target["prev_hash"], target | {"reason": "forged"})
    async with changed(store, ids[1], reason="forged", hash=forged):
        result = await chain.verify(store)
        assert result.problem is not None and result.problem.kind == "broken_link"
        assert result.problem.seq == target["seq"] + 1 and result.problem.id == ids[2]
        assert f"does not follow seq {target['seq']}" in result.problem.message
    await verified(store)


async def test_a_deleted_event_is_a_gap(store: Store) -> None:
    ids = await append(store, 3)
    target = (await rows(store, ids))[1]
    async with deleted(store, ids[1]):
        result = await chain.verify(store)
        assert result.problem is not None and result.problem.kind == "missing"
        assert result.problem.seq == target["seq"]
        assert f"seq {target['seq']} missing" in result.problem.message
    await verified(store)


async def test_deleting_the_last_events_is_seen_through_the_head(store: Store) -> None:
    ids = await append(store, 2)
    seq, _ = await head(store)
    async with deleted(store, ids[-1]):
        result = await chain.verify(store)
        assert result.problem is not None and result.problem.kind == "missing"
        assert result.problem.seq == seq
        assert f"its head is at seq {seq}" in result.problem.message
    await verified(store)


async def test_an_event_sealed_behind_the_heads_back_is_reported(store: Store) -> None:
    await append(store, 1)
    seq, digest = await head(store)
    forged: dict[str, Any] = {
        "seq": seq + 1,
        "prev_hash": digest,
        "at": datetime.now(UTC),
        "kind": "sent",
        "actor": "system",
        "channel": None,
        "reason": "inserted",
        "detail": {},
        "dedupe_key": None,
        "customer_external_id": None,
        "message_id": None,
        "workflow_id": None,
    }
    forged["hash"] = row_hash(digest, forged)
    async with store.transaction() as session:
        found = await session.execute(events.insert().values(**forged).returning(events.c.id))
        forged_id = found.scalar_one()
    try:
        result = await chain.verify(store)
        assert result.problem is not None and result.problem.kind == "beyond_head"
        assert result.problem.seq == seq + 1
    finally:
        async with store.transaction() as session:
            await session.execute(delete(events).where(events.c.id == forged_id))
    await verified(store)


async def test_anchors_recorded_earlier_must_still_be_there(store: Store) -> None:
    [event_id] = await append(store, 1)
    [row] = await rows(store, [event_id])
    await verified(store, anchors={row["seq"]: row["hash"]})
    wrong = await chain.verify(store, anchors={row["seq"]: "0" * 64})
    assert wrong.problem is not None and wrong.problem.kind == "anchor"
    assert wrong.problem.seq == row["seq"]
    seq, _ = await head(store)
    later = await chain.verify(store, anchors={seq + 10: "0" * 64})
    assert later.problem is not None and later.problem.kind == "anchor"


# ------------------------------------------------------------------ erasure


async def test_pseudonymising_a_customer_keeps_the_chain_verified(store: Store) -> None:
    customer = uid("erase")
    workflow = f"message:welcome-{customer}"
    ids = []
    for n in range(2):
        message = f"welcome-{customer}-{n}"
        for step in ("requested", "sent"):
            ids += await append(
                store,
                1,
                customer=customer,
                message_id=message,
                workflow_id=workflow,
                dedupe_key=f"{message}:{step}",
            )
        ids += await append(store, 1)  # someone else's event in between
    erased = [r for r in await rows(store, ids) if r["customer_external_id"] == customer]
    async with store.transaction() as session:
        for r in erased:
            await session.execute(
                update(events)
                .where(events.c.id == r["id"])
                .values(
                    **{
                        k: pseudonymise(r[k])
                        for k in ("customer_external_id", "message_id", "workflow_id", "dedupe_key")
                    }
                )
            )
    after = await rows(store, [r["id"] for r in erased])
    assert len(after) == 4 and all(customer not in json.dumps(r, default=str) for r in after)
    await verified(store)


# ------------------------------------------------------------------ export


def recompute(lines: list[Mapping[str, Any]]) -> None:
    """Check an export with nothing but the recipe of docs/compliance.md."""

    def ref(value: str | None) -> str | None:
        if value is None:
            return None
        if value.startswith("erased:"):
            return value[len("erased:") :]
        return hashlib.sha256(("clarion:" + value).encode("utf-8")).hexdigest()

    prev = lines[0]["prev_hash"]
    for n, line in enumerate(lines):
        assert line["seq"] == lines[0]["seq"] + n and line["prev_hash"] == prev
        content = {k: line[k] for k in ("seq", "prev_hash", "at", "kind", "actor", "channel")}
        content |= {"reason": line["reason"], "detail": line["detail"]}
        for k in ("customer_external_id", "message_id", "workflow_id", "dedupe_key"):
            content[k] = ref(line[k])
        text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        digest = hashlib.sha256(prev.encode("ascii") + text.encode("utf-8")).hexdigest()
        assert digest == line["hash"], line["seq"]
        prev = digest


async def test_an_export_verifies_with_the_documented_recipe(store: Store) -> None:
    since = datetime.now(UTC)
    await asyncio.sleep(0.01)
    ids = await append(store, 3, message_id=uid("m"), workflow_id=uid("wf"))
    ids += await append(store, 2, customer=pseudonymise(uid("cust")))
    lines = [
        json.loads(json.dumps(r, ensure_ascii=False))
        async for r in chain.export(store, since=since, page=2)
    ]
    assert [line["seq"] for line in lines] == [r["seq"] for r in await rows(store, ids)]
    assert list(lines[0]) == list(chain.EXPORT_FIELDS)
    assert lines[0]["at"].endswith("Z") and lines[0]["detail"] == {"i": 0, "note": "Zürich"}
    recompute(lines)
    until = datetime.fromisoformat(lines[2]["at"]) + timedelta(microseconds=1)
    first = [r async for r in chain.export(store, since=since, until=until)]
    assert [r["seq"] for r in first] == [line["seq"] for line in lines[:3]]
    assert [r async for r in chain.export(store, since=datetime.now(UTC))] == []


# ------------------------------------------------------------------ command line


def cli_settings(store: Store, tmp_path: Path) -> Settings:
    return Settings(_env_file=None, home=tmp_path / ".clarion", database_url=store.url)  # type: ignore[call-arg]


async def test_verify_from_the_command_line(store: Store, tmp_path: Path) -> None:
    settings = cli_settings(store, tmp_path)
    ids = await append(store, 2)
    ok = await run_cli(settings, "audit", "verify")
    seq, digest = await head(store)
    assert ok.code == 0, ok
    assert f"audit chain OK: {seq} events, head seq {seq} hash {digest}" in ok.stdout
    anchored = await run_cli(settings, "audit", "verify", "--anchor", f"{seq}:{digest}")
    assert anchored.code == 0, anchored
    bad_anchor = await run_cli(settings, "audit", "verify", "--anchor", "12:abc")
    assert (
        bad_anchor.code == 2 and "--anchor" in bad_anchor.stderr and "'12:abc'" in bad_anchor.stderr
    )

    target = (await rows(store, ids))[0]
    async with changed(store, ids[0], reason="edited"):
        broken = await run_cli(settings, "audit", "verify")
        assert broken.code == 1, broken
        assert f"seq {target['seq']} (id {ids[0]}) was changed" in broken.stderr
        as_json = await run_cli(settings, "audit", "verify", "--json")
        assert as_json.code == 1
        report = json.loads(as_json.stdout)
        assert report["ok"] is False and report["problem"]["kind"] == "changed"
        assert report["problem"]["seq"] == target["seq"] and report["problem"]["id"] == ids[0]
    again = json.loads((await run_cli(settings, "audit", "verify", "--json")).stdout)
    assert again["ok"] is True and again["head"] == {"seq": seq, "hash": digest}


async def test_export_from_the_command_line(store: Store, tmp_path: Path) -> None:
    settings = cli_settings(store, tmp_path)
    since = datetime.now(UTC).isoformat()
    await asyncio.sleep(0.01)
    ids = await append(store, 3)
    seqs = [r["seq"] for r in await rows(store, ids)]

    out = tmp_path / "audit.jsonl"
    written = await run_cli(settings, "audit", "export", "--since", since, "--output", str(out))
    assert written.code == 0, written
    assert "3 audit events exported" in written.stderr
    lines = [json.loads(line) for line in out.read_text("utf-8").splitlines()]
    assert [line["seq"] for line in lines] == seqs
    recompute(lines)

    as_csv = await run_cli(settings, "audit", "export", "--since", since, "--format", "csv")
    assert as_csv.code == 0, as_csv
    table = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [int(r["seq"]) for r in table] == seqs
    assert list(table[0]) == list(chain.EXPORT_FIELDS)
    assert json.loads(table[0]["detail"]) == lines[0]["detail"]
    assert [r["hash"] for r in table] == [line["hash"] for line in lines]

    for args, option, value in (
        (("--since", "last tuesday"), "--since", "'last tuesday'"),
        (("--since", since, "--until", "2001-02-30"), "--until", "'2001-02-30'"),
        (("--since", since, "--until", "2001-01-01"), "--until", "'2001-01-01'"),
        (("--since", since, "--format", "xml"), "--format", "'xml'"),
    ):
        bad = await run_cli(settings, "audit", "export", *args)
        assert bad.code == 2, bad
        assert option in bad.stderr and value in bad.stderr, bad.stderr


async def test_db_upgrade_seals_the_events_written_before_the_chain(tmp_path: Path) -> None:
    from sqlalchemy import text

    from clarion.store.db import migrate

    old = Store(f"sqlite+aiosqlite:///{tmp_path / 'old.db'}")
    try:
        await migrate(old.engine, "0004")
        async with old.engine.begin() as conn:
            for n in range(3):
                await conn.execute(
                    text(
                        "INSERT INTO audit_events (at, kind, customer_external_id, actor, "
                        "reason, detail) VALUES (:at, 'sent', :c, 'system', '', '{}')"
                    ),
                    {"at": f"2026-01-0{n + 1} 09:00:00.000000", "c": f"cust-{n}"},
                )
    finally:
        await old.close()
    settings = Settings(_env_file=None, home=tmp_path, database_url=old.url)  # type: ignore[call-arg]
    upgraded = await run_cli(settings, "db", "upgrade")
    assert upgraded.code == 0, upgraded
    assert "3 earlier audit events sealed" in upgraded.stderr
    checked = await run_cli(settings, "audit", "verify", "--json")
    assert checked.code == 0, checked
    report = json.loads(checked.stdout)
    assert report["count"] == 3 and report["unsealed"] == 0
    exported = await run_cli(settings, "audit", "export", "--since", "2026-01-02")
    lines = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [(line["seq"], line["at"]) for line in lines] == [
        (2, "2026-01-02T09:00:00.000000Z"),
        (3, "2026-01-03T09:00:00.000000Z"),
    ]
    recompute(lines)
