"""A/B test statistics for journey splits: pure functions of the counts.

For two variants A (the first, the control) and B, each with ``n`` customers of whom
``k`` converted:

- the conversion rates and their difference ``B - A`` with a Wald confidence interval
  (unpooled standard error);
- a two-sided two-proportion z-test (pooled standard error) - the classic fixed-horizon
  test, valid when the sample size was fixed in advance and the result is looked at once;
- an always-valid p-value from the mixture sequential probability ratio test (mSPRT,
  normal mixture with variance ``tau**2`` over the difference; Johari, Pekelis and Walsh,
  "Always valid inference", 2017): it may be looked at after every new customer without
  inflating the false-positive rate, so it is the one Clarion decides on;
- a plain verdict: ``too_small`` while either variant has fewer than ``min_per_variant``
  customers or fewer than 5 conversions or non-conversions (the normal approximation
  does not hold yet), ``b_better`` / ``a_better`` when the always-valid p-value is below
  ``alpha``, else ``no_difference_yet``.

No clock, no I/O: the same counts give the same report.
"""

from __future__ import annotations

import math
from statistics import NormalDist

from pydantic import BaseModel, ConfigDict, Field

_NORMAL = NormalDist()


class VariantCounts(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    customers: int = Field(ge=0)
    converted: int = Field(ge=0)

    @property
    def rate(self) -> float:
        return self.converted / self.customers if self.customers else 0.0


class Comparison(BaseModel):
    model_config = ConfigDict(frozen=True)

    control: VariantCounts
    variant: VariantCounts
    difference: float  # variant rate - control rate
    ci_low: float
    ci_high: float
    confidence: float
    z: float | None
    p_value: float | None  # fixed-horizon two-proportion z-test, two-sided
    always_valid_p: float | None  # mSPRT: safe to peek
    verdict: str  # too_small / no_difference_yet / b_better / a_better
    explanation: str


def two_proportion_z(a: VariantCounts, b: VariantCounts) -> tuple[float, float] | None:
    """(z, two-sided p) of the pooled two-proportion z-test; None when undefined."""
    if a.customers == 0 or b.customers == 0:
        return None
    pooled = (a.converted + b.converted) / (a.customers + b.customers)
    se = math.sqrt(pooled * (1 - pooled) * (1 / a.customers + 1 / b.customers))
    if se == 0:
        return None
    z = (b.rate - a.rate) / se
    return z, 2 * _NORMAL.cdf(-abs(z))


def difference_interval(
    a: VariantCounts, b: VariantCounts, confidence: float = 0.95
) -> tuple[float, float, float]:
    """(difference, low, high): Wald interval of ``b.rate - a.rate``."""
    diff = b.rate - a.rate
    if a.customers == 0 or b.customers == 0:
        return diff, -1.0, 1.0
    se = math.sqrt(a.rate * (1 - a.rate) / a.customers + b.rate * (1 - b.rate) / b.customers)
    z = _NORMAL.inv_cdf(0.5 + confidence / 2)
    return diff, max(-1.0, diff - z * se), min(1.0, diff + z * se)


def msprt_p_value(a: VariantCounts, b: VariantCounts, tau: float = 0.1) -> float | None:
    """Always-valid p-value of "no difference" (mSPRT, normal mixture N(0, tau**2)).

    With V the variance of the observed difference, the mixture likelihood ratio is
    sqrt(V / (V + tau^2)) * exp(tau^2 * d^2 / (2 V (V + tau^2))), and p = min(1, 1/ratio).
    """
    if a.customers == 0 or b.customers == 0:
        return None
    var = a.rate * (1 - a.rate) / a.customers + b.rate * (1 - b.rate) / b.customers
    if var <= 0:
        return None
    diff = b.rate - a.rate
    t2 = tau * tau
    log_ratio = 0.5 * math.log(var / (var + t2)) + t2 * diff * diff / (2 * var * (var + t2))
    return min(1.0, math.exp(-log_ratio))


def compare(
    a: VariantCounts,
    b: VariantCounts,
    *,
    alpha: float = 0.05,
    min_per_variant: int = 100,
    tau: float = 0.1,
) -> Comparison:
    """The report for variant ``b`` against control ``a``."""
    diff, low, high = difference_interval(a, b, 1 - alpha)
    test = two_proportion_z(a, b)
    always = msprt_p_value(a, b, tau)
    small = [
        v.name
        for v in (a, b)
        if v.customers < min_per_variant or min(v.converted, v.customers - v.converted) < 5
    ]
    if small:
        verdict = "too_small"
        explanation = (
            f"too small to decide: {', '.join(small)} need at least {min_per_variant} customers "
            "and 5 conversions and 5 non-conversions each"
        )
    elif always is not None and always < alpha:
        verdict = "b_better" if diff > 0 else "a_better"
        better, worse = (b, a) if diff > 0 else (a, b)
        explanation = (
            f"{better.name} converts better than {worse.name}: {diff:+.1%} "
            f"({low:+.1%} to {high:+.1%}), always-valid p = {always:.3g}"
        )
    else:
        verdict = "no_difference_yet"
        explanation = (
            f"no difference shown yet: {diff:+.1%} ({low:+.1%} to {high:+.1%}), "
            f"always-valid p = {always if always is not None else 1:.3g}; keep collecting"
        )
    return Comparison(
        control=a,
        variant=b,
        difference=diff,
        ci_low=low,
        ci_high=high,
        confidence=1 - alpha,
        z=None if test is None else test[0],
        p_value=None if test is None else test[1],
        always_valid_p=always,
        verdict=verdict,
        explanation=explanation,
    )
