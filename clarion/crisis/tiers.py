"""Tier configuration: a YAML file, so that priorities are configuration, not code.

tiers:
  - name: life-critical
    segment: "'medical-device' in tags"
    channels: [sms, email]
  - name: everyone
    segment: "true"
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from clarion.crisis.models import DEFAULT_TIERS, Tier
from clarion.errors import ClarionError


class TierConfigError(ClarionError):
    pass


def _problem(index: int, error: Any) -> str:
    loc = ".".join(str(p) for p in error["loc"])
    return f"tiers.{index}.{loc}: {str(error['msg']).removeprefix('Value error, ')}"


def load_tiers(path: Path | None) -> list[Tier]:
    """The tiers in ``path``, or the single default tier (everyone, email then SMS)."""
    if path is None:
        return list(DEFAULT_TIERS)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise TierConfigError(f"{path}: {exc}") from exc
    items = raw.get("tiers") if isinstance(raw, dict) else None
    if not isinstance(items, list) or not items:
        raise TierConfigError(f"{path}: expected `tiers:` with a list of tiers")
    tiers = []
    for i, item in enumerate(items):
        try:
            tiers.append(Tier.model_validate(item))
        except ValidationError as exc:
            problems = "; ".join(_problem(i, e) for e in exc.errors())
            raise TierConfigError(f"{path}: {problems}") from exc
    names = [t.name for t in tiers]
    if len(set(names)) != len(names):
        raise TierConfigError(f"{path}: tier names must be distinct: {names}")
    return tiers
