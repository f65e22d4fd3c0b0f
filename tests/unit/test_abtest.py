"""A/B statistics against scipy on fixed data, and the always-valid test under peeking."""

from __future__ import annotations

import math
import random

import pytest

from clarion.policy.abtest import (
    VariantCounts,
    compare,
    difference_interval,
    msprt_p_value,
    two_proportion_z,
)

stats = pytest.importorskip("scipy.stats")
integrate = pytest.importorskip("scipy.integrate")

CASES = [
    (1000, 100, 1000, 130),
    (5000, 400, 5200, 380),
    (240, 30, 260, 52),
    (12000, 1500, 11800, 1530),
]


@pytest.mark.parametrize(("na", "ka", "nb", "kb"), CASES)
def test_z_test_matches_scipy_chi_square(na: int, ka: int, nb: int, kb: int) -> None:
    a, b = (
        VariantCounts(name="A", customers=na, converted=ka),
        VariantCounts(name="B", customers=nb, converted=kb),
    )
    result = two_proportion_z(a, b)
    assert result is not None
    z, p = result
    chi2, p_scipy, _, _ = stats.chi2_contingency([[ka, na - ka], [kb, nb - kb]], correction=False)
    assert p == pytest.approx(p_scipy, rel=1e-9)
    assert z * z == pytest.approx(chi2, rel=1e-9)
    assert math.copysign(1, z) == math.copysign(1, kb / nb - ka / na)


@pytest.mark.parametrize(("na", "ka", "nb", "kb"), CASES)
def test_interval_matches_scipy_normal(na: int, ka: int, nb: int, kb: int) -> None:
    a, b = (
        VariantCounts(name="A", customers=na, converted=ka),
        VariantCounts(name="B", customers=nb, converted=kb),
    )
    diff, low, high = difference_interval(a, b, 0.95)
    pa, pb = ka / na, kb / nb
    se = math.sqrt(pa * (1 - pa) / na + pb * (1 - pb) / nb)
    z = stats.norm.ppf(0.975)
    assert diff == pytest.approx(pb - pa)
    assert (low, high) == (pytest.approx(diff - z * se), pytest.approx(diff + z * se))


@pytest.mark.parametrize(("na", "ka", "nb", "kb"), CASES)
def test_msprt_closed_form_matches_numerical_integration(
    na: int, ka: int, nb: int, kb: int
) -> None:
    a, b = (
        VariantCounts(name="A", customers=na, converted=ka),
        VariantCounts(name="B", customers=nb, converted=kb),
    )
    tau = 0.1
    pa, pb = ka / na, kb / nb
    var, d = pa * (1 - pa) / na + pb * (1 - pb) / nb, pb - pa
    sd = math.sqrt(var)
    mixture, _ = integrate.quad(
        lambda t: stats.norm.pdf(d, t, sd) * stats.norm.pdf(t, 0, tau), -1, 1, points=[d, 0]
    )
    ratio = mixture / stats.norm.pdf(d, 0, sd)
    p = msprt_p_value(a, b, tau)
    assert p == pytest.approx(min(1.0, 1 / ratio), rel=1e-6)


def test_verdicts_say_plainly_when_the_sample_is_too_small() -> None:
    tiny = compare(
        VariantCounts(name="A", customers=40, converted=4),
        VariantCounts(name="B", customers=45, converted=20),
    )
    assert tiny.verdict == "too_small" and "too small to decide" in tiny.explanation
    clear = compare(
        VariantCounts(name="A", customers=4000, converted=400),
        VariantCounts(name="B", customers=4000, converted=560),
    )
    assert clear.verdict == "b_better" and clear.always_valid_p is not None
    assert clear.always_valid_p < 0.05 and clear.ci_low > 0
    worse = compare(
        VariantCounts(name="A", customers=4000, converted=560),
        VariantCounts(name="B", customers=4000, converted=400),
    )
    assert worse.verdict == "a_better"
    close = compare(
        VariantCounts(name="A", customers=1000, converted=100),
        VariantCounts(name="B", customers=1000, converted=108),
    )
    assert close.verdict == "no_difference_yet" and close.ci_low < 0 < close.ci_high
    # The fixed-horizon p-value is reported too, and is never larger than the always-valid one.
    assert close.p_value is not None and close.always_valid_p is not None
    assert close.p_value <= close.always_valid_p


def test_peeking_after_every_batch_keeps_the_false_positive_rate() -> None:
    """Under no true difference, checking after every batch of 100 customers: the naive
    z-test declares a winner far more often than 5%, the always-valid p-value does not."""
    rng = random.Random(7)
    runs, peeks, batch, rate = 300, 20, 100, 0.2
    naive = always = 0
    for _ in range(runs):
        ka = kb = na = nb = 0
        hit_naive = hit_always = False
        for _ in range(peeks):
            ka += sum(rng.random() < rate for _ in range(batch))
            kb += sum(rng.random() < rate for _ in range(batch))
            na += batch
            nb += batch
            a = VariantCounts(name="A", customers=na, converted=ka)
            b = VariantCounts(name="B", customers=nb, converted=kb)
            z = two_proportion_z(a, b)
            hit_naive = hit_naive or (z is not None and z[1] < 0.05)
            p = msprt_p_value(a, b)
            hit_always = hit_always or (p is not None and p < 0.05)
        naive += hit_naive
        always += hit_always
    assert naive / runs > 0.12  # peeking breaks the fixed-horizon test
    assert always / runs <= 0.05
