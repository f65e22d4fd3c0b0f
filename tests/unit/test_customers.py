"""Customer import: CSV and JSONL parsing, validation with row, field and value."""

from __future__ import annotations

import json

import pytest

from clarion.customers import (
    CustomerRecord,
    ParsedImport,
    RowError,
    build_record,
    normalise_email,
    normalise_locale,
    normalise_phone,
    normalise_timezone,
    parse_csv,
    parse_jsonl,
)
from clarion.errors import ValidationFailed

HEADER = "id,name,email,phone,locale,timezone,plan,notes\n"


def errors_by_row(result: ParsedImport) -> dict[int, RowError]:
    return {e.row: e for e in result.errors}


# -- normalisers


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+1 415 555 2671", "+14155552671"),
        ("+1 (415) 555-2671", "+14155552671"),
        ("+447911123456", "+447911123456"),
        ("+44 7911 123456", "+447911123456"),
        ("  +33 6 12 34 56 78 ", "+33612345678"),
    ],
)
def test_normalise_phone_to_e164(raw: str, expected: str) -> None:
    assert normalise_phone(raw) == expected


def test_phone_without_plus_needs_a_default_region() -> None:
    with pytest.raises(ValidationFailed) as info:
        normalise_phone("07911 123456")
    assert info.value.field == "phone"
    assert info.value.value == "07911 123456"
    assert "write it as +<country code>" in info.value.problem


def test_phone_without_plus_with_default_region() -> None:
    assert normalise_phone("07911 123456", default_region="GB") == "+447911123456"
    assert normalise_phone("(415) 555-2671", default_region="US") == "+14155552671"


def test_plus_number_ignores_default_region() -> None:
    assert normalise_phone("+1 415 555 2671", default_region="GB") == "+14155552671"


@pytest.mark.parametrize("raw", ["+44 123", "+1 000 000 0000", "not a phone", "+999 1234567"])
def test_invalid_phone_is_refused(raw: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        normalise_phone(raw)
    assert info.value.field == "phone"
    assert info.value.value == raw


def test_normalise_email_lowercases_domain_only() -> None:
    assert normalise_email("  Jane.Doe+x@Example.COM ") == "Jane.Doe+x@example.com"


@pytest.mark.parametrize(
    "raw", ["jane", "jane@", "@example.com", "jane@example", "ja ne@example.com", "a@b@c.com"]
)
def test_invalid_email_is_refused(raw: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        normalise_email(raw)
    assert info.value.field == "email"
    assert info.value.problem == "not an email address"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("en", "en"), ("EN", "en"), ("pt_br", "pt-BR"), ("fr-ca", "fr-CA"), ("zh-Hant", "zh-Hant")],
)
def test_normalise_locale(raw: str, expected: str) -> None:
    assert normalise_locale(raw) == expected


@pytest.mark.parametrize("raw", ["english!", "e", "en-", "12"])
def test_invalid_locale_is_refused(raw: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        normalise_locale(raw)
    assert info.value.field == "locale"


@pytest.mark.parametrize("raw", ["Europe/Paris", "UTC", "America/New_York"])
def test_valid_timezone(raw: str) -> None:
    assert normalise_timezone(f" {raw} ") == raw


@pytest.mark.parametrize("raw", ["Mars/Olympus", "utc", "/etc/passwd", "../Europe/Paris"])
def test_invalid_timezone_is_refused(raw: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        normalise_timezone(raw)
    assert info.value.field == "timezone"
    assert info.value.value == raw


def test_timezone_that_names_a_region_directory_is_a_row_error() -> None:
    result = parse_csv("id,timezone\nc1,Europe\nc2,Europe/Paris\n")
    assert [(e.row, e.field, e.value) for e in result.errors] == [(2, "timezone", "Europe")]
    assert [r.external_id for _, r in result.records] == ["c2"]


# -- build_record


def test_build_record_defaults() -> None:
    record = build_record({"id": " c1 "}, {})
    assert record == CustomerRecord(
        external_id="c1",
        name="",
        email=None,
        phone=None,
        locale="en",
        timezone="",
        attributes={},
    )


def test_build_record_refuses_bad_id() -> None:
    with pytest.raises(ValidationFailed) as info:
        build_record({"id": "has space"}, {})
    assert (info.value.field, info.value.value) == ("id", "has space")


def test_build_record_refuses_non_string_email() -> None:
    with pytest.raises(ValidationFailed) as info:
        build_record({"id": "c1", "email": 5}, {})
    assert (info.value.field, info.value.value, info.value.problem) == (
        "email",
        5,
        "must be a string",
    )


# -- CSV


def test_csv_good_rows_with_attributes() -> None:
    text = (
        HEADER
        + "c1,Ann Lee,Ann@Example.COM,+1 415 555 2671,fr_ca,Europe/Paris,pro,\n"
        + "c2,Bob,,+447911123456,,,,likes cats\n"
    )
    result = parse_csv(text)
    assert result.errors == []
    assert result.records == [
        (
            2,
            CustomerRecord(
                external_id="c1",
                name="Ann Lee",
                email="Ann@example.com",
                phone="+14155552671",
                locale="fr-CA",
                timezone="Europe/Paris",
                attributes={"plan": "pro"},  # empty "notes" dropped
            ),
        ),
        (
            3,
            CustomerRecord(
                external_id="c2",
                name="Bob",
                email=None,
                phone="+447911123456",
                locale="en",
                timezone="",
                attributes={"notes": "likes cats"},
            ),
        ),
    ]


def test_csv_bad_rows_reported_with_line_field_value_and_good_rows_kept() -> None:
    text = (
        HEADER
        + "c1,Ann,ann@example.com,,,,,\n"  # line 2: good
        + "c2,Bob,not-an-email,,,,,\n"  # line 3
        + "c3,Cy,,+1 415 555 2671,,Mars/Base,,\n"  # line 4
        + "c4,Di,,,english!,,,\n"  # line 5
        + "c5,Ed,,12345,,,,\n"  # line 6
        + ",Fay,fay@example.com,,,,,\n"  # line 7: missing id
        + "c1,Gus,,,,,,\n"  # line 8: duplicate of line 2
        + "c6,Hal,,+447911123456,,,,\n"  # line 9: good
    )
    result = parse_csv(text)
    assert [(n, r.external_id) for n, r in result.records] == [(2, "c1"), (9, "c6")]
    assert [(e.row, e.field, e.value) for e in result.errors] == [
        (3, "email", "not-an-email"),
        (4, "timezone", "Mars/Base"),
        (5, "locale", "english!"),
        (6, "phone", "12345"),
        (7, "id", ""),
        (8, "id", "c1"),
    ]
    by_row = errors_by_row(result)
    assert by_row[7].problem == "required"
    assert by_row[8].problem == "duplicate of row 2"
    assert str(by_row[3]) == "row 3: email='not-an-email': not an email address"


def test_csv_row_numbers_are_file_lines_across_blank_lines() -> None:
    text = "id,email\n\nc1,bad\n\n\nc2,also-bad\n"
    result = parse_csv(text)
    assert [(e.row, e.value) for e in result.errors] == [(3, "bad"), (6, "also-bad")]


def test_csv_phone_without_plus_fails_without_region_and_parses_with_gb() -> None:
    text = "id,phone\nc1,07911 123456\n"
    without = parse_csv(text)
    assert without.records == []
    assert [(e.row, e.field, e.value) for e in without.errors] == [(2, "phone", "07911 123456")]
    with_region = parse_csv(text, default_region="GB")
    assert with_region.errors == []
    assert with_region.records[0][1].phone == "+447911123456"


def test_csv_missing_id_column() -> None:
    result = parse_csv("name,email\nAnn,ann@example.com\n")
    assert result.records == []
    assert result.errors == [RowError(1, "header", "name,email", "the column 'id' is required")]


def test_csv_empty_text_reports_missing_id_column() -> None:
    result = parse_csv("")
    assert result.records == []
    assert [(e.row, e.field) for e in result.errors] == [(1, "header")]


def test_csv_too_many_values_is_a_row_error() -> None:
    result = parse_csv("id,name\nc1,Ann,extra\nc2,Bob\n")
    assert [(e.row, e.field, e.value) for e in result.errors] == [(2, "row", ["extra"])]
    assert [r.external_id for _, r in result.records] == ["c2"]


def test_csv_fewer_values_than_columns_is_fine() -> None:
    result = parse_csv("id,name,email,plan\nc1,Ann\n")
    assert result.errors == []
    assert result.records[0][1] == CustomerRecord(external_id="c1", name="Ann", attributes={})


def test_csv_only_id_column() -> None:
    result = parse_csv("id\na\nb\n")
    assert [(n, r.external_id) for n, r in result.records] == [(2, "a"), (3, "b")]


def test_csv_quoted_values_with_commas() -> None:
    result = parse_csv('id,name,company\nc1,"Lee, Ann","ACME, Inc."\n')
    assert result.errors == []
    record = result.records[0][1]
    assert record.name == "Lee, Ann"
    assert record.attributes == {"company": "ACME, Inc."}


# -- JSONL


def jsonl(*rows: object) -> str:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n"


def test_jsonl_good_rows_keep_attributes() -> None:
    text = jsonl(
        {
            "id": "c1",
            "name": "Ann",
            "email": "ann@Example.com",
            "phone": "+1 415 555 2671",
            "locale": "en_GB",
            "timezone": "Europe/London",
            "attributes": {"plan": "pro", "seats": 3, "tags": ["a", "b"]},
        },
        {"id": "c2"},
    )
    result = parse_jsonl(text)
    assert result.errors == []
    assert result.records == [
        (
            1,
            CustomerRecord(
                external_id="c1",
                name="Ann",
                email="ann@example.com",
                phone="+14155552671",
                locale="en-GB",
                timezone="Europe/London",
                attributes={"plan": "pro", "seats": 3, "tags": ["a", "b"]},
            ),
        ),
        (2, CustomerRecord(external_id="c2")),
    ]


def test_jsonl_unknown_top_level_key_is_refused() -> None:
    result = parse_jsonl(jsonl({"id": "c1", "plan": "pro"}, {"id": "c2"}))
    assert [(e.row, e.field, e.value) for e in result.errors] == [(1, "plan", "pro")]
    assert "unknown key" in result.errors[0].problem
    assert [r.external_id for _, r in result.records] == ["c2"]


def test_jsonl_non_object_line() -> None:
    result = parse_jsonl(jsonl([1, 2], "42", {"id": "c3"}))
    assert [(e.row, e.field, e.problem) for e in result.errors] == [
        (1, "line", "not a JSON object"),
        (2, "line", "not a JSON object"),
    ]
    assert [(n, r.external_id) for n, r in result.records] == [(3, "c3")]


def test_jsonl_invalid_json_line() -> None:
    result = parse_jsonl(jsonl({"id": "c1"}, '{"id": "c2",', {"id": "c3"}))
    assert len(result.errors) == 1
    error = result.errors[0]
    assert (error.row, error.field, error.value) == (2, "line", '{"id": "c2",')
    assert error.problem.startswith("not JSON: ")
    assert [(n, r.external_id) for n, r in result.records] == [(1, "c1"), (3, "c3")]


def test_jsonl_blank_lines_skipped_but_counted() -> None:
    result = parse_jsonl('\n{"id": "c1"}\n   \n{"id": "c1"}\n')
    assert [(n, r.external_id) for n, r in result.records] == [(2, "c1")]
    assert [(e.row, e.field, e.problem) for e in result.errors] == [(4, "id", "duplicate of row 2")]


def test_jsonl_missing_id_and_bad_fields() -> None:
    result = parse_jsonl(
        jsonl(
            {"name": "no id"},
            {"id": "c2", "phone": 14155552671},
            {"id": "c3", "attributes": ["not", "an", "object"]},
            {"id": "c4", "timezone": "Nowhere/Land"},
            {"id": "c5", "phone": "07911 123456"},
        )
    )
    assert [(e.row, e.field) for e in result.errors] == [
        (1, "id"),
        (2, "phone"),
        (3, "attributes"),
        (4, "timezone"),
        (5, "phone"),
    ]
    assert result.errors[1].problem == "must be a string"
    assert result.records == []


def test_jsonl_default_region_applies() -> None:
    result = parse_jsonl(jsonl({"id": "c1", "phone": "07911 123456"}), default_region="GB")
    assert result.errors == []
    assert result.records[0][1].phone == "+447911123456"


def test_jsonl_null_fields_are_treated_as_absent() -> None:
    result = parse_jsonl(
        jsonl({"id": "c1", "email": None, "phone": None, "locale": None, "attributes": None})
    )
    assert result.errors == []
    assert result.records[0][1] == CustomerRecord(external_id="c1")
