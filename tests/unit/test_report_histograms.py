"""Delivery report histograms: percentiles from 2% log buckets stay within 1% of the
exact nearest-rank value; relative times and bad input name their field."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import pytest

from clarion.errors import ValidationFailed
from clarion.store.reports import (
    ZERO,
    bucket_of,
    bucket_value,
    merge_hist,
    percentile,
    resolve_time,
)


def exact(values: list[float], q: float) -> float:
    ranked = sorted(values)
    return ranked[max(1, math.ceil(q * len(ranked))) - 1]


def hist_of(values: list[float]) -> dict[str, int]:
    hist: dict[str, int] = {}
    for v in values:
        b = str(bucket_of(v))
        hist[b] = hist.get(b, 0) + 1
    return hist


@pytest.mark.parametrize("seed", range(5))
def test_percentiles_are_within_one_percent(seed: int) -> None:
    rng = random.Random(seed)
    values = [rng.lognormvariate(rng.uniform(-2, 6), rng.uniform(0.1, 2)) for _ in range(2_000)]
    hist = hist_of(values)
    for q in (0.5, 0.95, 0.99):
        got = percentile(hist, q)
        assert got is not None
        assert got == pytest.approx(exact(values, q), rel=0.0101)


def test_merged_histograms_equal_one_over_everything() -> None:
    rng = random.Random(7)
    parts = [[rng.expovariate(0.2) for _ in range(300)] for _ in range(4)]
    merged: dict[str, int] = {}
    for part in parts:
        merge_hist(merged, hist_of(part))
    everything = [v for part in parts for v in part]
    assert merged == hist_of(everything)
    assert percentile(merged, 0.95) == percentile(hist_of(everything), 0.95)


def test_tiny_and_negative_times_are_zero_and_empty_is_none() -> None:
    assert bucket_of(0.0) == bucket_of(-3.0) == bucket_of(0.0004) == ZERO
    assert bucket_value(ZERO) == 0.0
    assert percentile({}, 0.5) is None
    assert percentile({str(ZERO): 3, str(bucket_of(10.0)): 1}, 0.5) == 0.0
    for seconds in (0.001, 0.5, 1.0, 2.0, 59.9, 3_600.0, 86_400.0 * 3):
        assert bucket_value(bucket_of(seconds)) == pytest.approx(seconds, rel=0.01)


def test_resolve_time_reads_durations_and_iso_and_names_the_field() -> None:
    now = datetime(2026, 3, 10, 12, tzinfo=UTC)
    assert resolve_time("7d", "since", now) == now - timedelta(days=7)
    assert resolve_time("24h", "since", now) == now - timedelta(hours=24)
    assert resolve_time("2026-03-01", "until", now) == datetime(2026, 3, 1, tzinfo=UTC)
    with pytest.raises(ValidationFailed) as bad:
        resolve_time("last week", "until", now)
    assert (bad.value.field, bad.value.value) == ("until", "last week")
