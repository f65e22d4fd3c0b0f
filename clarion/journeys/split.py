"""A/B/n assignment: deterministic per customer, proportional to the weights."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from clarion.journeys.definition import SplitVariant


def split_point(journey: str, step: str, customer_id: str) -> float:
    """A number in [0, 1) fixed for this customer at this split."""
    digest = hashlib.sha256(f"{journey}\x1f{step}\x1f{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_variant(
    variants: Sequence[SplitVariant], *, journey: str, step: str, customer_id: str
) -> SplitVariant:
    point = split_point(journey, step, customer_id)
    total = sum(v.weight for v in variants)
    edge = 0.0
    for variant in variants:
        edge += variant.weight / total
        if point < edge:
            return variant
    return variants[-1]
