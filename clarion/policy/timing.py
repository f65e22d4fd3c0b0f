"""Timing rules for journey wait steps.

Durations are written in a compact form (``"30s"``, ``"15m"``, ``"2h"``, ``"3d"``,
``"1w"``, combined largest unit first: ``"1d12h"``, ``"1h 30m"``), as ISO-8601
durations without months or years (``"P3D"``, ``"PT2H30M"``, ``"P1W"``) or as a plain
number of seconds (``45``, ``"45"``, ``1.5``). A duration must be positive and at most
3660 days. Months and years are refused: their length depends on the calendar.

Times of day are wall-clock times in the customer's IANA time zone (``"09:00"``).
The next instant at which a zone's clock reads a time of day follows two rules:

- a time that does not exist on a day (a spring-forward gap, e.g. 02:30 on the day
  Europe/Paris jumps from 02:00 to 03:00) maps to the first valid instant after the
  gap, i.e. the moment of the jump (03:00 local);
- a time that occurs twice on a day (a fall-back overlap) maps to its first
  occurrence (``fold=0``) only: once that has passed, the next candidate is the
  following day, so a daily send never fires twice in one night.

Every function is pure: the current time is an argument (an aware datetime), and
results are aware UTC datetimes. Zone rules come from ``zoneinfo`` (system database
or the ``tzdata`` package).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MAX_DURATION = timedelta(days=3660)

DURATION_FORMS = (
    'a positive number of seconds (45, "45") or a compact duration such as "30s", "15m", '
    '"2h", "3d", "1w", "1d12h", "1h 30m" (units w, d, h, m, s, largest first, each once), '
    'or an ISO-8601 duration such as "P3D", "PT2H30M", "P1W" (no months or years), '
    "of at most 3660 days"
)

TIME_OF_DAY_FORMS = (
    'HH:MM or HH:MM:SS on a 24-hour clock, e.g. "09:00", "9:00", "21:30", "07:05:30"'
)

_UNIT_SECONDS = {"w": 604_800, "d": 86_400, "h": 3_600, "m": 60, "s": 1}
_UNIT_ORDER = "wdhms"
_MICROS = 1_000_000

_NUMBER = re.compile(r"(\d+)(?:\.(\d+))?")
_COMPACT = re.compile(r"(?:\d+(?:\.\d+)?\s*[A-Za-z]+\s*)+")
_COMPACT_PART = re.compile(r"(\d+)(?:\.(\d+))?\s*([A-Za-z]+)")
_ISO = re.compile(
    r"P(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?"
    r"(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+)(?:[.,](?P<frac>\d+))?S)?)?"
)
_ISO_CALENDAR = re.compile(r"P[^T]*[YM]")
_TIME_OF_DAY = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?")


class DurationError(ValueError):
    """A duration that cannot be parsed, or is not positive, or is too long."""


class TimeOfDayError(ValueError):
    """A time of day that cannot be parsed."""


# -- durations


def _duration_error(text: object, problem: str) -> DurationError:
    return DurationError(f"invalid duration {text!r}: {problem}; expected {DURATION_FORMS}")


def _micros(whole: str, fraction: str | None, text: object) -> int:
    """Seconds written as digits (and optional fraction digits) -> microseconds."""
    if fraction is None:
        return int(whole) * _MICROS
    if len(fraction) > 6:
        raise _duration_error(text, "more than 6 decimal places (finer than a microsecond)")
    return int(whole) * _MICROS + int(fraction.ljust(6, "0"))


def _checked(total_micros: int, text: object) -> timedelta:
    if total_micros <= 0:
        raise _duration_error(text, "a duration must be positive")
    if total_micros > MAX_DURATION // timedelta(microseconds=1):
        raise _duration_error(text, "longer than 3660 days")
    return timedelta(microseconds=total_micros)


def _parse_number(value: int | float, text: object) -> timedelta:
    if isinstance(value, bool):
        raise _duration_error(text, "a boolean is not a duration")
    if isinstance(value, float) and not math.isfinite(value):
        raise _duration_error(text, "not a finite number")
    if value < 0:
        raise _duration_error(text, "negative")
    if value > MAX_DURATION.total_seconds():
        raise _duration_error(text, "longer than 3660 days")
    if isinstance(value, int):
        return _checked(value * _MICROS, text)
    return _checked(round(value * _MICROS), text)


def _parse_iso(text: str) -> timedelta:
    if _ISO_CALENDAR.match(text):
        raise _duration_error(text, "months and years are ambiguous, use days or weeks")
    match = _ISO.fullmatch(text)
    if match is None or text in ("P", "PT") or text.endswith("T"):
        raise _duration_error(text, "not a valid ISO-8601 duration")
    total = 0
    for unit in "wdhm":
        digits = match.group(unit)
        if digits is not None:
            total += int(digits) * _UNIT_SECONDS[unit] * _MICROS
    if match.group("s") is not None:
        total += _micros(match.group("s"), match.group("frac"), text)
    return _checked(total, text)


def _parse_compact(text: str) -> timedelta:
    if not _COMPACT.fullmatch(text):
        raise _duration_error(text, "not a number of seconds nor a compact duration")
    total = 0
    previous = -1
    for whole, fraction, unit in _COMPACT_PART.findall(text):
        if unit not in _UNIT_SECONDS:
            raise _duration_error(text, f"unknown unit {unit!r}")
        rank = _UNIT_ORDER.index(unit)
        if rank == previous:
            raise _duration_error(text, f"unit {unit!r} is repeated")
        if rank < previous:
            raise _duration_error(text, "units out of order (largest first: w, d, h, m, s)")
        previous = rank
        if fraction and unit != "s":
            raise _duration_error(text, "only seconds may have a fraction")
        total += _micros(whole, fraction or None, text) * _UNIT_SECONDS[unit]
    return _checked(total, text)


def parse_duration(text: str | int | float) -> timedelta:
    """A duration written as seconds, in compact form or in ISO-8601 -> a timedelta.

    Raises DurationError (a ValueError) naming the value when it is empty, garbled,
    not positive, uses unknown, repeated or out-of-order units, or exceeds 3660 days.
    """
    if isinstance(text, int | float):
        return _parse_number(text, text)
    if not isinstance(text, str):
        raise _duration_error(text, f"a {type(text).__name__} is not a duration")
    stripped = text.strip()
    if not stripped:
        raise _duration_error(text, "empty")
    if stripped.startswith("-"):
        raise _duration_error(text, "negative; a duration must be positive")
    number = _NUMBER.fullmatch(stripped)
    if number is not None:
        return _checked(_micros(number.group(1), number.group(2), text), text)
    if stripped.startswith("P"):
        return _parse_iso(stripped)
    return _parse_compact(stripped)


def format_duration(td: timedelta) -> str:
    """The compact form of a duration: ``"1d12h"``, ``"45s"``, ``"1m30.5s"``.

    Days, hours, minutes and seconds, largest first, zero parts left out (weeks are
    written as days: ``"14d"``). ``parse_duration(format_duration(td)) == td`` for
    every positive duration of at most 3660 days. Zero is ``"0s"``; negative
    durations raise ValueError.
    """
    if td < timedelta(0):
        raise ValueError(f"cannot format negative duration {td!r}")
    if td == timedelta(0):
        return "0s"
    days = td.days
    hours, rest = divmod(td.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [
        f"{days}d" if days else "",
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
    ]
    if td.microseconds:
        fraction = f"{td.microseconds:06d}".rstrip("0")
        parts.append(f"{seconds}.{fraction}s")
    elif seconds:
        parts.append(f"{seconds}s")
    return "".join(parts)


# -- times of day


def parse_time_of_day(text: str) -> time:
    """``"09:00"``, ``"9:00"``, ``"21:30"``, ``"07:05:30"`` -> a naive ``time``.

    Raises TimeOfDayError (a ValueError) naming the value for anything else,
    including ``"24:00"``, ``"9am"`` and ``""``.
    """
    match = _TIME_OF_DAY.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise TimeOfDayError(f"invalid time of day {text!r}: expected {TIME_OF_DAY_FORMS}")
    hour, minute = int(match.group(1)), int(match.group(2))
    second = int(match.group(3) or 0)
    if hour > 23 or minute > 59 or second > 59:
        raise TimeOfDayError(
            f"invalid time of day {text!r}: out of range; expected {TIME_OF_DAY_FORMS}"
        )
    return time(hour, minute, second)


def _load_zone(tz: str) -> ZoneInfo:
    """The IANA zone called ``tz``; ValueError naming it when there is no such zone."""
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, OSError, ValueError, TypeError) as exc:
        raise ValueError(
            f"unknown time zone {tz!r}: expected an IANA name such as 'Europe/Paris'"
        ) from exc


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be an aware datetime, got naive {now.isoformat()}")


def _wall(instant: datetime, zone: ZoneInfo) -> datetime:
    """The naive wall-clock reading of ``zone`` at ``instant``."""
    return instant.astimezone(zone).replace(tzinfo=None, fold=0)


def _instant_on(day: date, at: time, zone: ZoneInfo) -> datetime:
    """The UTC instant at which ``zone`` reads ``at`` on ``day`` (gap and fold rules above)."""
    wall = datetime.combine(day, at).replace(fold=0)
    first = wall.replace(tzinfo=zone).astimezone(UTC)  # fold=0: first occurrence
    if _wall(first, zone) == wall:
        return first
    # Spring-forward gap: ``wall`` is skipped. fold=1 reads it with the offset after
    # the jump and lands before the jump; fold=0 with the offset before and lands
    # after. The jump is the first instant between them whose wall clock reads at
    # or after ``wall``: find it by bisection over whole seconds.
    low = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    high = first
    low, high = min(low, high), max(low, high)
    low_s, high_s = math.floor(low.timestamp()), math.ceil(high.timestamp())
    while low_s < high_s:
        mid = (low_s + high_s) // 2
        if _wall(datetime.fromtimestamp(mid, UTC), zone) >= wall:
            high_s = mid
        else:
            low_s = mid + 1
    return datetime.fromtimestamp(high_s, UTC)


def next_local_time(
    now: datetime, tz: str, at: time, *, not_before: timedelta = timedelta(0)
) -> datetime:
    """The first instant at or after ``now + not_before`` at which the wall clock in
    zone ``tz`` reads ``at``, as an aware UTC datetime.

    Nonexistent times (spring-forward gap) map to the end of the gap, ambiguous
    times (fall-back) to their first occurrence; see the module docstring.
    Raises ValueError when ``now`` is naive, ``at`` is aware, ``not_before`` is
    negative or ``tz`` is not a known IANA zone.
    """
    _require_aware(now)
    if at.tzinfo is not None:
        raise ValueError(f"at must be a naive time of day, got {at.isoformat()}")
    if not_before < timedelta(0):
        raise ValueError(f"not_before must not be negative, got {not_before!r}")
    zone = _load_zone(tz)
    earliest = now.astimezone(UTC) + not_before
    day = _wall(earliest, zone).date()
    for offset in range(4):
        candidate = _instant_on(day + timedelta(days=offset), at, zone)
        if candidate >= earliest:
            return candidate
    raise AssertionError(f"no {at} in {tz} within 4 days of {earliest}")  # pragma: no cover


def wait_until(now: datetime, *, duration: timedelta | None, at: time | None, tz: str) -> datetime:
    """The wake-up instant (aware UTC) of a journey wait step.

    - only ``duration``: ``now + duration``;
    - only ``at``: the next time the clock in ``tz`` reads ``at``;
    - both: the first ``at`` in ``tz`` once ``duration`` has passed
      ("after 1 day, at the next 09:00 local");
    - neither: ValueError.

    ``tz`` is only looked up when ``at`` is given. A negative duration or a naive
    ``now`` raises ValueError.
    """
    _require_aware(now)
    if duration is not None and duration < timedelta(0):
        raise ValueError(f"wait duration must not be negative, got {duration!r}")
    if at is not None:
        return next_local_time(now, tz, at, not_before=duration or timedelta(0))
    if duration is not None:
        return now.astimezone(UTC) + duration
    raise ValueError("a wait step needs a duration, a time of day (at), or both")
