"""The audit trail's hash chain in the store: sealing, verifying, exporting.

Appending an event only inserts its row; the row is *sealed* - given the next ``seq``, the
previous event's hash and its own (see clarion/audit.py) - by the same transaction, just
before it commits:

1. lock the chain's head (``audit_chain``, one row): ``SELECT ... FOR UPDATE`` on
   PostgreSQL, a write on SQLite (which has one writer at a time anyway);
2. take every row not sealed yet, by id: the transaction's own, and any row committed
   unsealed (written before the chain existed, or by a tool outside Clarion);
3. number and hash them after the head, and move the head.

So events are sealed one transaction at a time, in commit order, and an insert that is
skipped (a dedupe key seen before, ``ON CONFLICT DO NOTHING``) or rolled back never leaves
a hole in the chain. The lock is held from the seal to the commit only.

A transaction that appends marks its session (:func:`mark_pending`; ``repo.append_audit``
does); the store's sessions seal marked transactions on commit (:func:`seal_on_commit`).
Bulk writers (a broadcast's chunk) insert their rows sealed instead (:func:`append_sealed`):
the same steps, with the rows hashed from the values given before they are inserted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import ColumnElement, Table, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

from clarion.audit import GENESIS, canonical_json, format_at, row_hash
from clarion.store.bulk import insert_rows_sync
from clarion.store.tables import AuditChain, AuditEvent

if TYPE_CHECKING:
    from clarion.store.db import Store

PENDING = "audit_pending"
"""Key in ``session.info``: the transaction appended audit events that are not sealed."""

HEAD_ID = 1
SEAL_PAGE = 1000
VERIFY_PAGE = 2000
EXPORT_PAGE = 1000
UNSEALED_GRACE = timedelta(minutes=1)

events = cast(Table, AuditEvent.__table__)
chain = cast(Table, AuditChain.__table__)

# The columns the hash covers, and the ones export adds.
CONTENT = (
    events.c.seq,
    events.c.prev_hash,
    events.c.at,
    events.c.kind,
    events.c.actor,
    events.c.channel,
    events.c.reason,
    events.c.detail,
    events.c.dedupe_key,
    events.c.customer_external_id,
    events.c.message_id,
    events.c.workflow_id,
)
EXPORT_FIELDS = (
    "seq",
    "at",
    "kind",
    "actor",
    "customer_external_id",
    "message_id",
    "workflow_id",
    "channel",
    "reason",
    "detail",
    "dedupe_key",
    "prev_hash",
    "hash",
)


class AuditChainError(RuntimeError):
    """The chain cannot be extended (its head is missing)."""


def mark_pending(session: AsyncSession | Session) -> None:
    """Note that ``session``'s transaction appended audit events: they are sealed when it
    commits."""
    session.info[PENDING] = True


# ------------------------------------------------------------------ sealing


def _lock_head(session: Session) -> tuple[int, str]:
    """Lock the head for the rest of the transaction and read it. An empty chain without
    a head gets one; a chain with events but no head is refused (it was tampered with)."""
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        # The first write of a transaction takes SQLite's single write lock.
        session.execute(update(chain).where(chain.c.id == HEAD_ID).values(seq=chain.c.seq))
    query = select(chain.c.seq, chain.c.hash).where(chain.c.id == HEAD_ID)
    if dialect != "sqlite":
        query = query.with_for_update()
    head = session.execute(query).first()
    if head is not None:
        return int(head.seq), str(head.hash)
    if session.execute(select(events.c.id).where(events.c.seq.is_not(None)).limit(1)).first():
        raise AuditChainError(
            "the audit chain's head (table audit_chain) is missing while events are sealed: "
            "nothing more can be sealed; `clarion audit verify` reports the chain's state"
        )
    session.execute(chain.insert().values(id=HEAD_ID, seq=0, hash=GENESIS))
    return int(session.execute(query).one().seq), GENESIS


def seal(session: Session) -> int:
    """Seal every audit event not sealed yet, in this transaction; returns how many.

    Call it last before the commit: the chain's head stays locked until then."""
    session.flush()
    session.info.pop(PENDING, None)
    seq, prev = _lock_head(session)
    seq, prev, sealed = _seal_unsealed(session, seq, prev)
    if sealed:
        session.execute(update(chain).where(chain.c.id == HEAD_ID).values(seq=seq, hash=prev))
    return sealed


def _seal_unsealed(session: Session, seq: int, prev: str) -> tuple[int, str, int]:
    """Number and hash the unsealed events after ``(seq, prev)``, the head locked by the
    caller; returns the new head and how many were sealed (the caller moves the head)."""
    sealed = 0
    stamp = (
        update(events)
        .where(events.c.id == bindparam("_id"))
        .values(seq=bindparam("_seq"), prev_hash=bindparam("_prev"), hash=bindparam("_hash"))
    )
    while True:
        rows = session.execute(
            select(events.c.id, *CONTENT)
            .where(events.c.seq.is_(None))
            .order_by(events.c.id)
            .limit(SEAL_PAGE)
        ).all()
        if not rows:
            break
        params: list[dict[str, Any]] = []
        for row in rows:
            seq += 1
            content = {**row._asdict(), "seq": seq, "prev_hash": prev}
            digest = row_hash(prev, content)
            params.append({"_id": row.id, "_seq": seq, "_prev": prev, "_hash": digest})
            prev = digest
        session.execute(stamp, params)
        sealed += len(rows)
        if len(rows) < SEAL_PAGE:
            break
    return seq, prev, sealed


def append_sealed(session: Session, rows: list[dict[str, Any]]) -> int:
    """Insert audit events sealed already, in this transaction; returns how many.

    For bulk writers (a broadcast's chunk of recipients): the rows are numbered and
    hashed from the values given, before they are inserted, so they are not read back
    and updated at commit as :func:`seal` does. Each row has the audit columns by name
    (``at``, ``kind``, ``actor``, ``channel``, ``reason``, ``detail``, ``dedupe_key``,
    ``customer_external_id``, ``message_id``, ``workflow_id``), with values as the store
    gives them back: an aware ``at`` (microseconds are kept), a JSON ``detail``.

    1. the head is locked, and events left unsealed before are sealed first;
    2. rows whose ``dedupe_key`` is in the trail already (a retried chunk writes again),
       or repeats one earlier in ``rows``, are left out;
    3. the rest follow the head in the order given, and the head moves.

    The head stays locked until the commit. The insert is a plain one: should another
    transaction commit one of the keys in between, the insert fails and the transaction
    is rolled back whole - a key is never skipped after it was given a number."""
    session.flush()
    seq, prev = _lock_head(session)
    seq, prev, _ = _seal_unsealed(session, seq, prev)
    keys = [row["dedupe_key"] for row in rows if row.get("dedupe_key")]
    seen: set[str] = set()
    for page in range(0, len(keys), SEAL_PAGE):
        seen.update(
            session.scalars(
                select(events.c.dedupe_key).where(
                    events.c.dedupe_key.in_(keys[page : page + SEAL_PAGE])
                )
            )
        )
    fresh: list[dict[str, Any]] = []
    details: dict[int, str] = {}  # rows often share one detail object: written once
    for row in rows:
        key = row.get("dedupe_key")
        if key:
            if key in seen:
                continue
            seen.add(key)
        seq += 1
        content = {**row, "seq": seq, "prev_hash": prev}
        detail = details.get(id(row["detail"]))
        if detail is None:
            detail = details[id(row["detail"])] = canonical_json(row["detail"])
        content["hash"] = prev = row_hash(prev, content, detail=detail)
        fresh.append(content)
    # The driver's executemany on the session's connection (not the ORM's bulk insert).
    insert_rows_sync(session.connection(), events, fresh)
    session.execute(update(chain).where(chain.c.id == HEAD_ID).values(seq=seq, hash=prev))
    return len(fresh)


def seal_on_commit(session: Session) -> None:
    """``before_commit`` hook of the store's sessions: seal what the transaction appended."""
    if session.info.get(PENDING):
        seal(session)


def forget_on_end(session: Session, transaction: SessionTransaction) -> None:
    """``after_transaction_end`` hook: once the outermost transaction is over (a
    rollback leaves nothing to seal), the session starts unmarked."""
    if transaction.parent is None:
        session.info.pop(PENDING, None)


async def seal_pending(session: AsyncSession) -> int:
    """Seal, in ``session``'s transaction, every audit event not sealed yet (see
    :func:`seal`); returns how many."""
    return await session.run_sync(seal)


async def seal_all(store: Store) -> int:
    """Seal the events left unsealed (those written before the chain existed), in a
    transaction of its own."""
    async with store.transaction() as session:
        return await seal_pending(session)


# ------------------------------------------------------------------ verifying


@dataclass(frozen=True, slots=True)
class Problem:
    """Where the chain stops being trustworthy. ``kind``: ``changed`` (an event's content
    does not match its hash), ``missing`` (events deleted), ``broken_link`` (an event does
    not follow the one before: replaced, inserted or reordered), ``head`` (the head does
    not match the chain), ``beyond_head`` (sealed events the head does not cover),
    ``anchor`` (a hash recorded earlier is not in the chain any more)."""

    kind: str
    message: str
    seq: int | None = None
    id: int | None = None


@dataclass(slots=True)
class Verification:
    """What :func:`verify` found. ``count`` events were checked and found intact."""

    count: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS
    problem: Problem | None = None
    unsealed: int = 0
    oldest_unsealed_at: datetime | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem is None

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "count": self.count,
            "head": {"seq": self.head_seq, "hash": self.head_hash},
            "problem": None
            if self.problem is None
            else {
                "kind": self.problem.kind,
                "message": self.problem.message,
                "seq": self.problem.seq,
                "id": self.problem.id,
            },
            "unsealed": self.unsealed,
            "oldest_unsealed_at": (
                format_at(self.oldest_unsealed_at) if self.oldest_unsealed_at else None
            ),
            "warnings": self.warnings,
        }


def _check(row: Mapping[str, Any], expected_seq: int, prev: str) -> Problem | None:
    """The first problem of one event, read in seq order after an event hashed ``prev``."""
    seq, id_ = int(row["seq"]), int(row["id"])
    if seq != expected_seq:
        missing = (
            f"seq {expected_seq}" if seq == expected_seq + 1 else f"seq {expected_seq} to {seq - 1}"
        )
        return Problem(
            "missing", f"{missing} missing: deleted before seq {seq} (id {id_})", expected_seq
        )
    if row["hash"] != row_hash(row["prev_hash"] or "", row):
        return Problem(
            "changed",
            f"seq {seq} (id {id_}) was changed: its content does not match its hash",
            seq,
            id_,
        )
    if row["prev_hash"] != prev:
        before = f"seq {seq - 1}" if seq > 1 else "the start of the chain"
        return Problem(
            "broken_link",
            f"seq {seq} (id {id_}) does not follow {before}: "
            f"{before} was changed and rehashed, or events were inserted or reordered",
            seq,
            id_,
        )
    return None


async def verify(
    store: Store,
    *,
    anchors: Mapping[int, str] | None = None,
    page: int = VERIFY_PAGE,
    now: datetime | None = None,
) -> Verification:
    """Walk the chain by seq, a page at a time, and recompute every hash.

    ``anchors`` are ``{seq: hash}`` pairs recorded earlier (from a previous verify or
    export, kept outside the store): each must still be in the chain. Events sealed while
    the walk runs are left for the next one."""
    anchors = dict(anchors or {})
    result = Verification()
    async with store.session() as session:
        head = (
            await session.execute(select(chain.c.seq, chain.c.hash).where(chain.c.id == HEAD_ID))
        ).first()
        await _unsealed(session, result, now or datetime.now(UTC))
        if head is None:
            result.problem = Problem("head", "the chain's head (table audit_chain) is missing")
            return result
        result.head_seq, result.head_hash = int(head.seq), str(head.hash)
        expected, prev = 1, GENESIS
        while expected <= result.head_seq:
            rows = (
                await session.execute(
                    select(events.c.id, events.c.hash, *CONTENT)
                    .where(events.c.seq >= expected, events.c.seq <= result.head_seq)
                    .order_by(events.c.seq)
                    .limit(page)
                )
            ).all()
            for found in rows:
                row = found._asdict()
                problem = _check(row, expected, prev)
                seq = int(row["seq"])
                if problem is None and seq in anchors and anchors[seq] != row["hash"]:
                    problem = Problem(
                        "anchor",
                        f"seq {seq} (id {row['id']}) is not the event recorded with hash "
                        f"{anchors[seq]}",
                        seq,
                        row["id"],
                    )
                if problem is not None:
                    result.problem = problem
                    return result
                result.count += 1
                expected, prev = seq + 1, str(row["hash"])
            if len(rows) < page:
                break
        last = expected - 1
        if last < result.head_seq:
            result.problem = Problem(
                "missing",
                f"the chain ends at seq {last} but its head is at seq {result.head_seq}: "
                f"the last {result.head_seq - last} event(s) were deleted",
                last + 1,
            )
        elif prev != result.head_hash:
            result.problem = Problem(
                "head",
                f"the head's hash does not match seq {last}: the event was changed and "
                "rehashed, or the head was altered",
                last,
            )
        elif late := [s for s in anchors if s > result.head_seq]:
            result.problem = Problem(
                "anchor",
                f"seq {min(late)} was recorded but the chain ends at seq {result.head_seq}",
                min(late),
            )
        if result.problem is not None:
            return result
        # Rows sealed outside the head: checked after the head was read again, so events
        # sealed meanwhile (which move the head first) do not count.
        top = await session.scalar(select(func.max(events.c.seq)))
        current = await session.scalar(select(chain.c.seq).where(chain.c.id == HEAD_ID))
        if top is not None and current is not None and top > current:
            result.problem = Problem(
                "beyond_head",
                f"events up to seq {top} are sealed but the head is at seq {current}: "
                "they were written outside the chain",
                int(current) + 1,
            )
    return result


async def _unsealed(session: AsyncSession, result: Verification, now: datetime) -> None:
    count, oldest = (
        await session.execute(
            select(func.count(), func.min(events.c.at)).where(events.c.seq.is_(None))
        )
    ).one()
    result.unsealed = int(count or 0)
    result.oldest_unsealed_at = oldest
    if oldest is not None and now - oldest > UNSEALED_GRACE:
        result.warnings.append(
            f"{result.unsealed} event(s) not sealed, the oldest from {format_at(oldest)}: "
            "the chain does not cover them yet (written before it existed, or not by Clarion)"
        )


# ------------------------------------------------------------------ exporting


def export_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """An event as ``clarion audit export`` writes it (``at`` as the chain hashes it)."""
    return {name: format_at(row[name]) if name == "at" else row[name] for name in EXPORT_FIELDS}


async def export(
    store: Store,
    *,
    since: datetime,
    until: datetime | None = None,
    page: int = EXPORT_PAGE,
) -> AsyncIterator[dict[str, Any]]:
    """The sealed events from the first one at or after ``since`` to the last one before
    ``until``, in seq order, as dicts of :data:`EXPORT_FIELDS`, a page at a time.

    The export is one unbroken stretch of the chain, so it can be verified on its own:
    an event sealed inside it whose ``at`` is a moment outside the window (a transaction
    that committed late) is part of it too."""
    async with store.session() as session:
        lo = await session.scalar(
            select(func.min(events.c.seq)).where(events.c.seq.is_not(None), events.c.at >= since)
        )
        window: list[ColumnElement[bool]] = [events.c.seq.is_not(None)]
        if until is not None:
            window.append(events.c.at < until)
        hi = await session.scalar(select(func.max(events.c.seq)).where(*window))
        if lo is None or hi is None or lo > hi:
            return
        seq = int(lo)
        while seq <= hi:
            rows = (
                await session.execute(
                    select(events.c.hash, *CONTENT)
                    .where(events.c.seq >= seq, events.c.seq <= hi)
                    .order_by(events.c.seq)
                    .limit(page)
                )
            ).all()
            for row in rows:
                yield export_row(row._asdict())
            if len(rows) < page:
                break
            seq = int(rows[-1].seq) + 1
