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


def canonical(row: Mapping[str, Any]) -> bytes:
    """The bytes an event's hash covers.

    ``row`` has the audit columns by name (``seq``, ``prev_hash``, ``at``, ``kind``,
    ``actor``, ``channel``, ``reason``, ``detail``, ``dedupe_key``,
    ``customer_external_id``, ``message_id``, ``workflow_id``): a row of the store or a
    line of ``clarion audit export --format jsonl``. Other keys are ignored."""
    content: dict[str, Any] = {
        "seq": int(row["seq"]),
        "prev_hash": row["prev_hash"],
        "at": format_at(row["at"]),
        "detail": row["detail"],
    }
    for name in PLAIN_FIELDS:
        content[name] = row[name]
    for name in REF_FIELDS:
        content[name] = ref_of_stored(row[name])
    return canonical_json(content).encode("utf-8")


def row_hash(prev: str, row: Mapping[str, Any]) -> str:
    """The hash of ``row`` following an event whose hash is ``prev``."""
    return hashlib.sha256(prev.encode("ascii") + canonical(row)).hexdigest()
