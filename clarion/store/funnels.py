"""Journey funnels and A/B results, from the store's journey runs and steps.

For one journey (one version, or every version): how many customers entered each step,
how runs ended (completed, exited on which event, converted on the goal), the median
time from each step to the next, and for every split step the A/B comparison of its
variants on conversion (clarion.policy.abtest). SQL aggregates do the counting; only
the per-step durations are read row by row to take their median.
"""

from __future__ import annotations

from collections import defaultdict
from statistics import median
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.errors import NotFound
from clarion.policy.abtest import VariantCounts, compare
from clarion.store.tables import JourneyRun, JourneyStepRecord


async def journey_funnel(
    session: AsyncSession,
    *,
    journey: str,
    version: int | None = None,
    alpha: float = 0.05,
    min_per_variant: int = 100,
) -> dict[str, Any]:
    runs_filter = [JourneyRun.journey == journey]
    if version is not None:
        runs_filter.append(JourneyRun.version == version)
    outcomes = (
        await session.execute(
            select(JourneyRun.status, JourneyRun.reason, func.count())
            .where(*runs_filter)
            .group_by(JourneyRun.status, JourneyRun.reason)
        )
    ).all()
    if not outcomes:
        raise NotFound("journey runs", f"{journey}" + (f" v{version}" if version else ""))
    by_status: dict[str, int] = defaultdict(int)
    exits: dict[str, int] = defaultdict(int)
    goals: dict[str, int] = defaultdict(int)
    for status, reason, count in outcomes:
        by_status[status] += int(count)
        if status == "exited":
            exits[(reason or "").removeprefix("exit_on event ") or "(unknown)"] += int(count)
        if status == "converted":
            goals[(reason or "").removeprefix("goal event ") or "(goal)"] += int(count)
    entered = sum(by_status.values())

    reached = (
        await session.execute(
            select(
                JourneyStepRecord.step,
                func.count(func.distinct(JourneyStepRecord.run_id)),
                func.min(JourneyStepRecord.seq),
            )
            .join(JourneyRun, JourneyRun.id == JourneyStepRecord.run_id)
            .where(*runs_filter)
            .group_by(JourneyStepRecord.step)
        )
    ).all()
    steps = sorted(reached, key=lambda r: (r[2], r[0]))

    # Time spent in each step (entered -> left), for the median.
    spent: dict[str, list[float]] = defaultdict(list)
    rows = await session.execute(
        select(JourneyStepRecord.step, JourneyStepRecord.entered_at, JourneyStepRecord.left_at)
        .join(JourneyRun, JourneyRun.id == JourneyStepRecord.run_id)
        .where(*runs_filter, JourneyStepRecord.left_at.is_not(None))
    )
    for step, entered_at, left_at in rows:
        if left_at is not None:
            spent[step].append((left_at - entered_at).total_seconds())

    # A/B: per split step and variant, runs and conversions.
    variants = (
        await session.execute(
            select(
                JourneyStepRecord.step,
                JourneyStepRecord.variant,
                func.count(func.distinct(JourneyRun.id)),
                func.count(func.distinct(JourneyRun.id)).filter(JourneyRun.status == "converted"),
            )
            .join(JourneyRun, JourneyRun.id == JourneyStepRecord.run_id)
            .where(*runs_filter, JourneyStepRecord.variant.is_not(None))
            .group_by(JourneyStepRecord.step, JourneyStepRecord.variant)
        )
    ).all()
    splits: dict[str, list[VariantCounts]] = defaultdict(list)
    for step, variant, customers, converted in variants:
        splits[step].append(
            VariantCounts(name=str(variant), customers=int(customers), converted=int(converted))
        )
    ab = []
    for step, counts in sorted(splits.items()):
        counts.sort(key=lambda v: v.name)
        control = counts[0]
        comparisons = []
        for other in counts[1:]:
            result = compare(control, other, alpha=alpha, min_per_variant=min_per_variant)
            comparisons.append(
                result.model_dump(mode="json", exclude={"control", "variant"})
                | {"control": control.name, "variant": other.name}
            )
        ab.append(
            {
                "step": step,
                "variants": [
                    {
                        "variant": v.name,
                        "customers": v.customers,
                        "converted": v.converted,
                        "conversion_rate": round(v.rate, 6),
                    }
                    for v in counts
                ],
                "comparisons": comparisons,
            }
        )

    return {
        "journey": journey,
        "version": version,
        "entered": entered,
        "by_status": dict(by_status),
        "converted": by_status.get("converted", 0),
        "conversion_rate": round(by_status.get("converted", 0) / entered, 6) if entered else None,
        "exits_by_event": dict(exits),
        "goals": dict(goals),
        "steps": [
            {
                "step": step,
                "customers": int(count),
                "share_of_entered": round(int(count) / entered, 6) if entered else None,
                "median_time_in_step_s": (
                    round(median(spent[step]), 3) if spent.get(step) else None
                ),
            }
            for step, count, _ in steps
        ],
        "ab_tests": ab,
    }
