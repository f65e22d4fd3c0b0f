"""Processes that host Clarion's workflows and activities."""

from workers.main import build_worker, run_worker

__all__ = ["build_worker", "run_worker"]
