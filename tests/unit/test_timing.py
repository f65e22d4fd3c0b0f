"""Timing rules: durations, times of day, and the next local wall-clock instant."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta, timezone
from typing import Any

import pytest

from clarion.policy.timing import (
    DurationError,
    TimeOfDayError,
    format_duration,
    next_local_time,
    parse_duration,
    parse_time_of_day,
    wait_until,
)

S = timedelta(seconds=1)
M = timedelta(minutes=1)
H = timedelta(hours=1)
D = timedelta(days=1)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# -- parse_duration: accepted forms


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", 30 * S),
        ("15m", 15 * M),
        ("2h", 2 * H),
        ("3d", 3 * D),
        ("1w", 7 * D),
        ("1d12h", D + 12 * H),
        ("1h30m", H + 30 * M),
        ("90s", 90 * S),
        ("1d 12h", D + 12 * H),
        ("1h 30m", H + 30 * M),
        ("1 h 30 m", H + 30 * M),
        ("  2h  ", 2 * H),
        ("1w2d3h4m5s", 9 * D + 3 * H + 4 * M + 5 * S),
        ("0h30m", 30 * M),
        ("1.5s", timedelta(seconds=1.5)),
        ("1m30.25s", M + timedelta(seconds=30.25)),
        ("3660d", 3660 * D),
        ("45", 45 * S),
        (" 45 ", 45 * S),
        ("1.5", timedelta(seconds=1.5)),
        ("0.000001", timedelta(microseconds=1)),
        (45, 45 * S),
        (1.5, timedelta(seconds=1.5)),
        (3660 * 86400, 3660 * D),
        ("P3D", 3 * D),
        ("PT2H30M", 2 * H + 30 * M),
        ("P1W", 7 * D),
        ("P1DT12H", D + 12 * H),
        ("PT90S", 90 * S),
        ("PT15M", 15 * M),
        ("PT0.5S", timedelta(seconds=0.5)),
        ("PT1,5S", timedelta(seconds=1.5)),
        ("P3660D", 3660 * D),
    ],
)
def test_parse_duration_accepts(text: str | int | float, expected: timedelta) -> None:
    assert parse_duration(text) == expected


# -- parse_duration: refused forms


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("0s", "must be positive"),
        ("0", "must be positive"),
        ("0h0m", "must be positive"),
        ("PT0S", "must be positive"),
        (0, "must be positive"),
        (0.0, "must be positive"),
        ("-5", "negative"),
        ("-1h", "negative"),
        ("-P1D", "negative"),
        (-5, "negative"),
        (-0.5, "negative"),
        ("1x", "unknown unit 'x'"),
        ("3sec", "unknown unit 'sec'"),
        ("2hours", "unknown unit 'hours'"),
        ("1H", "unknown unit 'H'"),
        ("1h2h", "repeated"),
        ("1d 1d", "repeated"),
        ("30m1h", "out of order"),
        ("1s1m", "out of order"),
        ("1d1w", "out of order"),
        ("1.5h", "only seconds"),
        ("1.1234567s", "microsecond"),
        ("3661d", "3660 days"),
        ("3660d1s", "3660 days"),
        ("P3661D", "3660 days"),
        ("P523W", "3660 days"),
        (3660 * 86400 + 1, "3660 days"),
        (1e300, "3660 days"),
        ("99999999999999999999999d", "3660 days"),
        ("abc", "not a number"),
        ("h", "not a number"),
        ("1h2", "not a number"),
        ("+5", "not a number"),
        ("1,5h", "not a number"),
        ("P1M", "months and years"),
        ("P1Y", "months and years"),
        ("P1Y2DT3H", "months and years"),
        ("P", "ISO-8601"),
        ("PT", "ISO-8601"),
        ("P1DT", "ISO-8601"),
        ("PT1H1D", "ISO-8601"),
        ("P1D1W", "ISO-8601"),
        ("PT1.5H", "ISO-8601"),
        (True, "boolean"),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
    ],
)
def test_parse_duration_refuses(text: Any, problem: str) -> None:
    with pytest.raises(DurationError) as caught:
        parse_duration(text)
    message = str(caught.value)
    assert repr(text) in message
    assert problem in message
    assert "expected" in message
    assert '"1d12h"' in message and '"PT2H30M"' in message


def test_duration_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="'1h2h'"):
        parse_duration("1h2h")


def test_parse_duration_refuses_other_types() -> None:
    value: Any = None
    with pytest.raises(DurationError, match="NoneType"):
        parse_duration(value)


# -- format_duration


@pytest.mark.parametrize(
    ("td", "expected"),
    [
        (45 * S, "45s"),
        (D + 12 * H, "1d12h"),
        (90 * S, "1m30s"),
        (H + 5 * S, "1h5s"),
        (14 * D, "14d"),
        (2 * H, "2h"),
        (D + H + M + S, "1d1h1m1s"),
        (timedelta(seconds=1.5), "1.5s"),
        (M + timedelta(microseconds=250), "1m0.00025s"),
        (timedelta(0), "0s"),
    ],
)
def test_format_duration(td: timedelta, expected: str) -> None:
    assert format_duration(td) == expected


def test_format_duration_refuses_negative() -> None:
    with pytest.raises(ValueError, match="negative"):
        format_duration(-S)


@pytest.mark.parametrize(
    "seconds",
    [
        *range(1, 200_000, 997),
        59,
        60,
        61,
        3599,
        3600,
        3601,
        86_399,
        86_400,
        86_401,
        7 * 86_400,
        10 * 86_400 + 3 * 3600 + 7,
        3660 * 86_400 - 1,
        3660 * 86_400,
    ],
)
def test_format_parse_round_trip_whole_seconds(seconds: int) -> None:
    td = timedelta(seconds=seconds)
    text = format_duration(td)
    assert parse_duration(text) == td
    assert format_duration(parse_duration(text)) == text


@pytest.mark.parametrize("micros", [1, 500_000, 1_500_000, 61_000_001, 86_400_123_456])
def test_format_parse_round_trip_fractions(micros: int) -> None:
    td = timedelta(microseconds=micros)
    assert parse_duration(format_duration(td)) == td


# -- parse_time_of_day


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("09:00", time(9, 0)),
        ("9:00", time(9, 0)),
        ("21:30", time(21, 30)),
        ("07:05:30", time(7, 5, 30)),
        ("00:00", time(0, 0)),
        ("23:59:59", time(23, 59, 59)),
        (" 9:00 ", time(9, 0)),
    ],
)
def test_parse_time_of_day_accepts(text: str, expected: time) -> None:
    assert parse_time_of_day(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "24:00",
        "25:00",
        "9am",
        "9:00pm",
        "",
        "9",
        "9:5",
        "09:60",
        "09:00:60",
        "09.00",
        "-1:00",
        "123:00",
        "09:00:00:00",
        "09:00:5",
    ],
)
def test_parse_time_of_day_refuses(text: str) -> None:
    with pytest.raises(TimeOfDayError) as caught:
        parse_time_of_day(text)
    assert repr(text) in str(caught.value)
    assert "HH:MM" in str(caught.value)
    assert isinstance(caught.value, ValueError)


# -- next_local_time: zones and days


def test_tokyo_next_morning_example() -> None:
    # 20:00 UTC is 05:00 on the 11th in Tokyo (UTC+9): 09:00 is four hours later.
    result = next_local_time(utc(2026, 3, 10, 20, 0), "Asia/Tokyo", time(9, 0))
    assert result == utc(2026, 3, 11, 0, 0)
    assert result.tzinfo is UTC


def test_new_york_winter_and_summer() -> None:
    # EST (UTC-5) in January, EDT (UTC-4) in July.
    assert next_local_time(utc(2026, 1, 15, 12), "America/New_York", time(9)) == utc(
        2026, 1, 15, 14
    )
    assert next_local_time(utc(2026, 7, 1, 12), "America/New_York", time(9)) == utc(2026, 7, 1, 13)


def test_kolkata_half_hour_offset_same_day_later() -> None:
    # 04:00 UTC is 09:30 IST (UTC+5:30); 10:00 is still to come today.
    assert next_local_time(utc(2026, 5, 1, 4), "Asia/Kolkata", time(10)) == utc(2026, 5, 1, 4, 30)


def test_kolkata_passed_time_goes_to_next_day() -> None:
    # 09:00 IST has passed at 09:30 IST: tomorrow 09:00 IST is 03:30 UTC.
    assert next_local_time(utc(2026, 5, 1, 4), "Asia/Kolkata", time(9)) == utc(2026, 5, 2, 3, 30)


def test_chatham_quarter_hour_offset_across_utc_date() -> None:
    # Chatham is UTC+12:45 in June: 00:00 UTC on the 15th is 12:45 local on the 15th,
    # so the next 09:00 is on the 16th local, 20:15 UTC on the 15th.
    result = next_local_time(utc(2026, 6, 15, 0), "Pacific/Chatham", time(9))
    assert result == utc(2026, 6, 15, 20, 15)


def test_across_local_midnight() -> None:
    # 21:30 UTC is 23:30 in Paris (CEST, UTC+2): 00:15 is the next local day.
    result = next_local_time(utc(2026, 6, 15, 21, 30), "Europe/Paris", time(0, 15))
    assert result == utc(2026, 6, 15, 22, 15)


def test_exactly_now_is_returned() -> None:
    now = utc(2026, 6, 15, 7, 0)  # 09:00 in Paris
    assert next_local_time(now, "Europe/Paris", time(9)) == now


def test_just_after_goes_to_next_day() -> None:
    now = utc(2026, 6, 15, 7, 0) + timedelta(microseconds=1)
    assert next_local_time(now, "Europe/Paris", time(9)) == utc(2026, 6, 16, 7, 0)


def test_seconds_in_time_of_day() -> None:
    result = next_local_time(utc(2026, 6, 15, 0), "UTC", time(7, 5, 30))
    assert result == utc(2026, 6, 15, 7, 5, 30)


def test_now_in_another_offset_gives_utc() -> None:
    now = datetime(2026, 3, 11, 1, 0, tzinfo=timezone(timedelta(hours=5)))  # 20:00 UTC on the 10th
    result = next_local_time(now, "Asia/Tokyo", time(9))
    assert result == utc(2026, 3, 11, 0, 0)
    assert result.utcoffset() == timedelta(0)


def test_not_before_pushes_the_earliest_instant() -> None:
    now = utc(2026, 6, 15, 6, 0)  # 08:00 in Paris
    assert next_local_time(now, "Europe/Paris", time(9)) == utc(2026, 6, 15, 7)
    assert next_local_time(now, "Europe/Paris", time(9), not_before=H) == utc(2026, 6, 15, 7)
    later = next_local_time(now, "Europe/Paris", time(9), not_before=H + S)
    assert later == utc(2026, 6, 16, 7)


# -- next_local_time: daylight saving


def test_paris_spring_forward_gap_maps_to_end_of_gap() -> None:
    # 2026-03-29: at 01:00 UTC Paris jumps from 02:00 CET to 03:00 CEST; 02:30 does not
    # exist that day, so the first valid instant after the gap (03:00 CEST) is used.
    result = next_local_time(utc(2026, 3, 28, 12), "Europe/Paris", time(2, 30))
    assert result == utc(2026, 3, 29, 1, 0)


def test_paris_spring_forward_around_the_gap() -> None:
    now = utc(2026, 3, 28, 12)
    assert next_local_time(now, "Europe/Paris", time(1, 30)) == utc(2026, 3, 29, 0, 30)
    assert next_local_time(now, "Europe/Paris", time(3, 0)) == utc(2026, 3, 29, 1, 0)
    assert next_local_time(now, "Europe/Paris", time(3, 30)) == utc(2026, 3, 29, 1, 30)


def test_paris_spring_forward_gap_exactly_now_and_just_after() -> None:
    jump = utc(2026, 3, 29, 1, 0)
    assert next_local_time(jump, "Europe/Paris", time(2, 30)) == jump
    # Past the jump the next 02:30 is the following day, 02:30 CEST.
    assert next_local_time(jump + S, "Europe/Paris", time(2, 30)) == utc(2026, 3, 30, 0, 30)


def test_new_york_spring_forward_gap() -> None:
    # 2026-03-08: 02:00 EST -> 03:00 EDT at 07:00 UTC.
    result = next_local_time(utc(2026, 3, 7, 12), "America/New_York", time(2, 15))
    assert result == utc(2026, 3, 8, 7, 0)


def test_paris_fall_back_uses_first_occurrence() -> None:
    # 2026-10-25: at 01:00 UTC Paris goes back from 03:00 CEST to 02:00 CET; 02:30
    # happens at 00:30 UTC (CEST) and again at 01:30 UTC (CET). The first one is used.
    result = next_local_time(utc(2026, 10, 24, 12), "Europe/Paris", time(2, 30))
    assert result == utc(2026, 10, 25, 0, 30)


def test_paris_fall_back_second_occurrence_is_skipped() -> None:
    # At 02:45 CEST the first 02:30 has passed; the repeat at 02:30 CET does not count.
    result = next_local_time(utc(2026, 10, 25, 0, 45), "Europe/Paris", time(2, 30))
    assert result == utc(2026, 10, 26, 1, 30)


def test_paris_fall_back_unambiguous_time_after_the_overlap() -> None:
    result = next_local_time(utc(2026, 10, 24, 12), "Europe/Paris", time(9))
    assert result == utc(2026, 10, 25, 8, 0)  # 09:00 CET


def test_skipped_calendar_day_maps_to_the_jump() -> None:
    # Samoa skipped 2011-12-30 (UTC-10 -> UTC+14 at 10:00 UTC): there is no 09:00 that
    # day, so the first valid instant after the gap, 00:00 on the 31st, is used.
    result = next_local_time(utc(2011, 12, 29, 22), "Pacific/Apia", time(9))
    assert result == utc(2011, 12, 30, 10, 0)


# -- next_local_time: refusals


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        next_local_time(datetime(2026, 3, 10, 20, 0), "Asia/Tokyo", time(9))


@pytest.mark.parametrize("tz", ["Mars/Olympus_Mons", "Europe", "", "../etc/passwd", "Europe/"])
def test_unknown_zone_is_refused(tz: str) -> None:
    with pytest.raises(ValueError, match="unknown time zone") as caught:
        next_local_time(utc(2026, 3, 10, 20), tz, time(9))
    assert repr(tz) in str(caught.value)


def test_aware_time_of_day_is_refused() -> None:
    with pytest.raises(ValueError, match="naive time"):
        next_local_time(utc(2026, 3, 10, 20), "UTC", time(9, tzinfo=UTC))


def test_negative_not_before_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        next_local_time(utc(2026, 3, 10, 20), "UTC", time(9), not_before=-S)


# -- wait_until


def test_wait_until_duration_only() -> None:
    now = utc(2026, 6, 15, 6, 0)
    assert wait_until(now, duration=D, at=None, tz="Europe/Paris") == utc(2026, 6, 16, 6, 0)


def test_wait_until_duration_only_ignores_the_zone() -> None:
    now = utc(2026, 6, 15, 6, 0)
    assert wait_until(now, duration=H, at=None, tz="Not/A_Zone") == utc(2026, 6, 15, 7, 0)


def test_wait_until_duration_only_returns_utc() -> None:
    now = datetime(2026, 6, 15, 8, 0, tzinfo=timezone(timedelta(hours=2)))
    result = wait_until(now, duration=H, at=None, tz="UTC")
    assert result == utc(2026, 6, 15, 7, 0)
    assert result.tzinfo is UTC


def test_wait_until_at_only() -> None:
    now = utc(2026, 6, 15, 6, 0)  # 08:00 in Paris
    assert wait_until(now, duration=None, at=time(9), tz="Europe/Paris") == utc(2026, 6, 15, 7)


def test_wait_until_both_is_after_the_duration_at_the_next_local_time() -> None:
    now = utc(2026, 6, 15, 6, 0)  # 08:00 in Paris
    # After 1 day it is 08:00 on the 16th: the next 09:00 is that morning.
    assert wait_until(now, duration=D, at=time(9), tz="Europe/Paris") == utc(2026, 6, 16, 7)
    # After 1 day and 2 hours it is 10:00 on the 16th: the next 09:00 is the 17th.
    result = wait_until(now, duration=D + 2 * H, at=time(9), tz="Europe/Paris")
    assert result == utc(2026, 6, 17, 7)


def test_wait_until_both_lands_exactly_on_the_time() -> None:
    now = utc(2026, 6, 15, 7, 0)  # 09:00 in Paris
    assert wait_until(now, duration=D, at=time(9), tz="Europe/Paris") == utc(2026, 6, 16, 7)


def test_wait_until_neither_is_refused() -> None:
    with pytest.raises(ValueError, match="duration"):
        wait_until(utc(2026, 6, 15), duration=None, at=None, tz="UTC")


def test_wait_until_refuses_naive_now_and_negative_duration() -> None:
    with pytest.raises(ValueError, match="aware"):
        wait_until(datetime(2026, 6, 15), duration=H, at=None, tz="UTC")
    with pytest.raises(ValueError, match="negative"):
        wait_until(utc(2026, 6, 15), duration=-H, at=None, tz="UTC")


def test_wait_until_unknown_zone_with_at_is_refused() -> None:
    with pytest.raises(ValueError, match="Not/A_Zone"):
        wait_until(utc(2026, 6, 15), duration=None, at=time(9), tz="Not/A_Zone")
