"""Deterministic orchestration only: no I/O, no clock, no randomness."""

from workflows.deliver import DeliverMessageWorkflow

ALL_WORKFLOWS = [DeliverMessageWorkflow]

__all__ = ["ALL_WORKFLOWS", "DeliverMessageWorkflow"]
