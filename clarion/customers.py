"""Customer records and the import formats (CSV, JSONL): validation with row, field, value."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from pydantic import BaseModel, ConfigDict

from clarion.errors import ValidationFailed

CORE_COLUMNS = ("id", "name", "email", "phone", "locale", "timezone")
EMAIL_RE = re.compile(
    r"^[^@\s<>(),;:\"\[\]]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)
LOCALE_RE = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*$")
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}$")


class CustomerRecord(BaseModel):
    """A validated customer, ready for the store. ``email``/``phone`` None: not given."""

    model_config = ConfigDict(frozen=True)

    external_id: str
    name: str = ""
    email: str | None = None
    phone: str | None = None  # E.164
    locale: str = "en"
    timezone: str = ""  # IANA zone; empty: unknown (quiet hours use the conservative default)
    attributes: dict[str, Any] = {}


def normalise_email(value: str) -> str:
    value = value.strip()
    if len(value) > 320 or not EMAIL_RE.match(value):
        raise ValidationFailed("email", value, "not an email address")
    local, _, domain = value.rpartition("@")
    return f"{local}@{domain.lower()}"


def normalise_phone(value: str, default_region: str | None = None) -> str:
    """Parse and validate a phone number with phonenumbers; returns E.164."""
    raw = value.strip()
    try:
        number = phonenumbers.parse(raw, None if raw.startswith("+") else default_region)
    except phonenumbers.NumberParseException as exc:
        hint = "" if raw.startswith("+") or default_region else " (write it as +<country code>...)"
        raise ValidationFailed("phone", value, f"not a phone number{hint}: {exc}") from exc
    if not phonenumbers.is_valid_number(number):
        raise ValidationFailed("phone", value, "not a valid phone number for its country")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_locale(value: str) -> str:
    value = value.strip()
    if not LOCALE_RE.match(value):
        raise ValidationFailed("locale", value, "not a locale tag such as 'en' or 'pt-BR'")
    parts = value.replace("_", "-").split("-")
    return "-".join([parts[0].lower(), *[p.upper() if len(p) == 2 else p for p in parts[1:]]])


def normalise_timezone(value: str) -> str:
    value = value.strip()
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValidationFailed(
            "timezone", value, "not an IANA time zone such as 'Europe/Paris'"
        ) from exc
    return value


def build_record(
    data: dict[str, Any], attributes: dict[str, Any], *, default_region: str | None = None
) -> CustomerRecord:
    """Validate one row; raises ValidationFailed naming the first bad field."""
    ext_id = str(data.get("id") or "").strip()
    if not ext_id:
        raise ValidationFailed("id", data.get("id"), "required")
    if not ID_RE.match(ext_id):
        raise ValidationFailed("id", ext_id, "letters, digits and . _ : @ - only, at most 200")
    name = str(data.get("name") or "").strip()
    if len(name) > 300:
        raise ValidationFailed("name", name[:40] + "...", "longer than 300 characters")
    email = data.get("email")
    phone = data.get("phone")
    locale = data.get("locale")
    timezone = data.get("timezone")
    for key in ("email", "phone", "locale", "timezone"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise ValidationFailed(key, data[key], "must be a string")
    if not isinstance(attributes, dict):
        raise ValidationFailed("attributes", attributes, "must be an object")
    return CustomerRecord(
        external_id=ext_id,
        name=name,
        email=normalise_email(email) if email and email.strip() else None,
        phone=normalise_phone(phone, default_region) if phone and phone.strip() else None,
        locale=normalise_locale(locale) if locale and locale.strip() else "en",
        timezone=normalise_timezone(timezone) if timezone and timezone.strip() else "",
        attributes=attributes,
    )


@dataclass(frozen=True)
class RowError:
    row: int  # CSV: line number in the file (header is line 1); JSONL: line number
    field: str
    value: Any
    problem: str

    def __str__(self) -> str:
        return f"row {self.row}: {self.field}={self.value!r}: {self.problem}"


@dataclass
class ParsedImport:
    records: list[tuple[int, CustomerRecord]] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    seen: dict[str, int] = field(default_factory=dict)  # id -> row of its first appearance


def _add(result: ParsedImport, row: int, make: Any) -> None:
    try:
        record = make()
    except ValidationFailed as exc:
        result.errors.append(RowError(row, exc.field, exc.value, exc.problem))
        return
    first = result.seen.get(record.external_id)
    if first is not None:
        result.errors.append(RowError(row, "id", record.external_id, f"duplicate of row {first}"))
        return
    result.seen[record.external_id] = row
    result.records.append((row, record))


def parse_csv(text: str, *, default_region: str | None = None) -> ParsedImport:
    """CSV with a header: id, name, email, phone, locale, timezone; other columns are attributes."""
    result = ParsedImport()
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    if "id" not in header:
        result.errors.append(RowError(1, "header", ",".join(header), "the column 'id' is required"))
        return result
    for record in reader:
        row = reader.line_num
        if None in record:
            result.errors.append(
                RowError(row, "row", record[None], "more values than header columns")
            )
            continue
        core = {k: record.get(k) for k in CORE_COLUMNS}
        attributes = {
            k: v for k, v in record.items() if k not in CORE_COLUMNS and v not in ("", None)
        }
        _add(
            result,
            row,
            lambda core=core, attributes=attributes: build_record(
                core, attributes, default_region=default_region
            ),
        )
    return result


def parse_jsonl(text: str, *, default_region: str | None = None) -> ParsedImport:
    """One JSON object a line with the CSV's keys plus ``attributes`` (an object)."""
    result = ParsedImport()
    allowed = {*CORE_COLUMNS, "attributes"}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            result.errors.append(RowError(number, "line", line[:60], f"not JSON: {exc.msg}"))
            continue
        if not isinstance(data, dict):
            result.errors.append(RowError(number, "line", line[:60], "not a JSON object"))
            continue
        unknown = sorted(set(data) - allowed)
        if unknown:
            result.errors.append(
                RowError(
                    number, unknown[0], data[unknown[0]], "unknown key (put it under 'attributes')"
                )
            )
            continue
        _add(
            result,
            number,
            lambda data=data: build_record(
                data, data.get("attributes") or {}, default_region=default_region
            ),
        )
    return result
