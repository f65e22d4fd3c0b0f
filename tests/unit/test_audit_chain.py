"""The audit chain's hash recipe (clarion/audit.py): pure functions, fixed vectors."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clarion.audit import (
    GENESIS,
    PLAIN_FIELDS,
    REF_FIELDS,
    canonical,
    canonical_json,
    format_at,
    pseudonymise,
    ref,
    ref_of_stored,
    row_hash,
)


def event(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "seq": 1,
        "prev_hash": GENESIS,
        "at": datetime(2026, 3, 1, 12, 0, 0, 5, tzinfo=UTC),
        "kind": "sent",
        "actor": "system",
        "channel": "sms",
        "reason": "",
        "detail": {"tier": 0, "broadcast": "b-1", "note": "Zürich"},
        "dedupe_key": "crisis-b-1-g1-cust-7:sent",
        "customer_external_id": "cust-7",
        "message_id": "crisis-b-1-g1-cust-7",
        "workflow_id": "broadcast-b-1",
    }
    return row | changes


def test_ref_is_a_prefixed_sha256() -> None:
    assert ref("cust-7") == hashlib.sha256(b"clarion:cust-7").hexdigest()
    assert ref("cust-7") == "01fda736c70c6827f26b4882feb61e8b4979de6a72225484dc22a6253585932c"


def test_pseudonymise_keeps_the_digest_and_is_idempotent() -> None:
    erased = pseudonymise("cust-7")
    assert erased == "erased:" + ref("cust-7") and "cust-7" not in erased
    assert pseudonymise(erased) == erased
    assert ref_of_stored(erased) == ref_of_stored("cust-7") == ref("cust-7")
    assert ref_of_stored(None) is None


def test_canonical_is_sorted_compact_utf8_with_digests() -> None:
    text = canonical(event()).decode("utf-8")
    assert text == (
        '{"actor":"system","at":"2026-03-01T12:00:00.000005Z","channel":"sms",'
        f'"customer_external_id":"{ref("cust-7")}",'
        f'"dedupe_key":"{ref("crisis-b-1-g1-cust-7:sent")}",'
        '"detail":{"broadcast":"b-1","note":"Zürich","tier":0},"kind":"sent",'
        f'"message_id":"{ref("crisis-b-1-g1-cust-7")}","prev_hash":"{GENESIS}",'
        f'"reason":"","seq":1,"workflow_id":"{ref("broadcast-b-1")}"}}'
    )
    assert "cust-7" not in text


def test_row_hash_is_a_fixed_vector() -> None:
    # Changing this value breaks every chain already written: the recipe is frozen.
    expected = "468b12795ee277bf8c58687e51b40fde5035965c66abdd1172f6e4788eff61aa"
    assert row_hash(GENESIS, event()) == expected
    assert hashlib.sha256(GENESIS.encode() + canonical(event())).hexdigest() == expected


@pytest.mark.parametrize(
    "change",
    [
        {"seq": 2},
        {"prev_hash": "1" * 64},
        {"at": datetime(2026, 3, 1, 12, 0, 0, 6, tzinfo=UTC)},
        {"kind": "suppressed"},
        {"actor": "someone"},
        {"channel": None},
        {"reason": "opted_out"},
        {"detail": {"tier": 1, "broadcast": "b-1", "note": "Zürich"}},
        {"dedupe_key": None},
        {"customer_external_id": "cust-8"},
        {"message_id": "m-2"},
        {"workflow_id": None},
    ],
)
def test_every_field_counts(change: dict[str, Any]) -> None:
    assert row_hash(GENESIS, event(**change)) != row_hash(GENESIS, event())


def test_pseudonymised_identifiers_keep_the_hash() -> None:
    original = row_hash(GENESIS, event())
    erased = event(
        customer_external_id=pseudonymise("cust-7"),
        message_id=pseudonymise("crisis-b-1-g1-cust-7"),
        workflow_id=pseudonymise("broadcast-b-1"),
        dedupe_key=pseudonymise("crisis-b-1-g1-cust-7:sent"),
    )
    assert row_hash(GENESIS, erased) == original


def test_the_previous_hash_counts() -> None:
    assert row_hash("f" * 64, event(prev_hash="f" * 64)) != row_hash(GENESIS, event())


def test_detail_key_order_does_not_matter() -> None:
    shuffled = event(detail={"note": "Zürich", "broadcast": "b-1", "tier": 0})
    assert canonical(shuffled) == canonical(event())


def test_timestamps_are_utc_microseconds_and_exports_read_back() -> None:
    paris = timezone(timedelta(hours=1))
    at = datetime(2026, 3, 1, 13, 0, 0, 5, tzinfo=paris)
    assert format_at(at) == "2026-03-01T12:00:00.000005Z"
    assert format_at("2026-03-01T12:00:00.000005Z") == "2026-03-01T12:00:00.000005Z"
    assert format_at(datetime(2026, 3, 1, tzinfo=UTC)) == "2026-03-01T00:00:00.000000Z"
    assert canonical(event(at="2026-03-01T12:00:00.000005Z")) == canonical(event())
    with pytest.raises(ValueError):
        format_at(datetime(2026, 3, 1, 12, 0))


def _as_defined(row: dict[str, Any]) -> bytes:
    """canonical() by its definition: canonical_json of the content object."""
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


_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=30)
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    seq=st.integers(min_value=1, max_value=10**12),
    at=st.datetimes(
        min_value=datetime(2000, 1, 1),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5))]),
    ),
    plain=st.fixed_dictionaries({name: st.none() | _text for name in PLAIN_FIELDS}),
    refs=st.fixed_dictionaries(
        {name: st.none() | _text | _text.map(pseudonymise) for name in REF_FIELDS}
    ),
    detail=st.dictionaries(_text, _json_values, max_size=4),
    as_string=st.booleans(),
)
def test_canonical_writes_out_the_json_object_it_is_defined_as(
    seq: int,
    at: datetime,
    plain: dict[str, Any],
    refs: dict[str, Any],
    detail: dict[str, Any],
    as_string: bool,
) -> None:
    row = {
        "seq": seq,
        "prev_hash": GENESIS,
        "at": format_at(at) if as_string else at,
        "detail": detail,
        **plain,
        **refs,
    }
    expected = _as_defined(row)
    assert canonical(row) == expected
    assert canonical(row, detail=canonical_json(detail)) == expected
    assert row_hash(GENESIS, row) == hashlib.sha256(GENESIS.encode() + expected).hexdigest()
