"""The worker hides its start-up objects from the garbage collector (in a child process:
freezing is for the whole interpreter)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import gc
import workers.main  # the worker's imports: what start-up leaves behind
before = len(gc.get_objects())
frozen = workers.main.freeze_startup_objects()
after = len(gc.get_objects())
garbage = []
garbage.append(garbage)  # a cycle made after the freeze is still collected
del garbage
collected = gc.collect()
print(frozen, before, after, collected)
"""


def test_start_up_objects_are_frozen_and_later_garbage_still_collected() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    frozen, before, after, collected = (int(v) for v in out)
    assert frozen > 50_000 and frozen >= before * 0.9  # what start-up made
    assert after < before / 10  # a full collection no longer walks them
    assert collected >= 1
