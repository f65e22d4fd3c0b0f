"""The audit trail's hash chain: pure functions, no I/O.

Every sealed audit event has a ``seq`` (1, 2, 3, ... without gaps), the hash of the event
before it (``prev_hash``; the first event follows :data:`GENESIS`) and its own ``hash``::

    hash = hex(SHA-256(UTF-8(prev_hash) || canonical(row)))

``canonical(row)`` is one JSON object (keys sorted, no spaces, UTF-8) of the event's
content. Fields that may identify a person - the customer id, the message id, the workflow
id and the dedupe key (message and workflow ids often embed a customer id) - enter it as a
digest, :func:`ref`, never as their value. Erasing a customer replaces those columns with
:func:`pseudonymise` of their value, whose digest is the same, so the chain still verifies
after an erasure. Changing this recipe breaks every chain already written: never do it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

GENESIS = "0" * 64
"""The ``prev_hash`` of the first event of a chain."""

ERASED = "erased:"
REF_PREFIX = "clarion:"

# Columns stored as their value and hashed as their digest (see ref_of_stored).
REF_FIELDS = ("customer_external_id", "message_id", "workflow_id", "dedupe_key")
# Columns hashed as they are.
PLAIN_FIELDS = ("kind", "actor", "channel", "reason")


def ref(value: str) -> str:
    """The digest that stands for an identifying value in the chain (hex SHA-256)."""
    return hashlib.sha256((REF_PREFIX + value).encode("utf-8")).hexdigest()


def pseudonymise(value: str) -> str:
    """What an erasure stores instead of ``value``: ``erased:`` and its digest.

    A value already pseudonymised is returned as it is, so erasing twice is harmless."""
    return value if value.startswith(ERASED) else ERASED + ref(value)


def ref_of_stored(value: str | None) -> str | None:
    """The digest of a stored column: ``ref(value)``, or the digest a pseudonymised value
    keeps. ``None`` stays ``None``."""
    if value is None:
        return None
    return value[len(ERASED) :] if value.startswith(ERASED) else ref(value)


def format_at(at: datetime | str) -> str:
    """A timestamp as the chain writes it: UTC, microseconds, ``Z`` (an ISO-8601 string
    is read first, so an exported value gives itself back)."""
    if isinstance(at, str):
        at = datetime.fromisoformat(at)
    if at.tzinfo is None:
        raise ValueError("audit timestamps are timezone-aware")
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_json(value: Any) -> str:
    """JSON with sorted keys, no spaces, and non-ASCII characters as they are."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# What json.dumps(..., ensure_ascii=False) writes for a str: the same function.
_encode_str = json.encoder.encode_basestring


def _json(value: Any) -> str:
    """``value`` as :func:`canonical_json` writes it (strings and None without its call)."""
    if value is None:
        return "null"
    if type(value) is str:
        return _encode_str(value)
    return canonical_json(value)


@lru_cache(maxsize=256)
def _cached_at(at: datetime | str) -> str:
    return format_at(at)


@lru_cache(maxsize=256)
def _cached_ref(value: str) -> str | None:
    return ref_of_stored(value)


def canonical(row: Mapping[str, Any], *, detail: str | None = None) -> bytes:
    """The bytes an event's hash covers.

    ``row`` has the audit columns by name (``seq``, ``prev_hash``, ``at``, ``kind``,
    ``actor``, ``channel``, ``reason``, ``detail``, ``dedupe_key``,
    ``customer_external_id``, ``message_id``, ``workflow_id``): a row of the store or a
    line of ``clarion audit export --format jsonl``. Other keys are ignored. ``detail``:
    the row's detail as :func:`canonical_json` writes it, when the caller has it already
    (rows that share one detail).

    It is ``canonical_json`` of the object ``{"seq": int(seq), "prev_hash": ..., "at":
    format_at(at), "detail": ..., kind, actor, channel and reason as they are, and
    ref_of_stored() of the four REF_FIELDS}``, written out in its sorted key order (a
    test holds the two equal): the same bytes in a third of the time, for writers that
    seal thousands of events."""
    at = row["at"]
    workflow_id = row["workflow_id"]
    return (
        f'{{"actor":{_json(row["actor"])},'
        f'"at":{_encode_str(_cached_at(at) if type(at) is datetime else format_at(at))},'
        f'"channel":{_json(row["channel"])},'
        f'"customer_external_id":{_json(ref_of_stored(row["customer_external_id"]))},'
        f'"dedupe_key":{_json(ref_of_stored(row["dedupe_key"]))},'
        f'"detail":{canonical_json(row["detail"]) if detail is None else detail},'
        f'"kind":{_json(row["kind"])},'
        f'"message_id":{_json(ref_of_stored(row["message_id"]))},'
        f'"prev_hash":{_json(row["prev_hash"])},'
        f'"reason":{_json(row["reason"])},'
        f'"seq":{int(row["seq"])},'
        f'"workflow_id":{_json(None if workflow_id is None else _cached_ref(workflow_id))}}}'
    ).encode()


def row_hash(prev: str, row: Mapping[str, Any], *, detail: str | None = None) -> str:
    """The hash of ``row`` following an event whose hash is ``prev`` (``detail``: see
    :func:`canonical`)."""
    return hashlib.sha256(prev.encode("ascii") + canonical(row, detail=detail)).hexdigest()
