"""Deterministic orchestration only: no I/O, no clock, no randomness."""

from workflows.deliver import DeliverMessageWorkflow
from workflows.journey import JourneyWorkflow

ALL_WORKFLOWS = [DeliverMessageWorkflow, JourneyWorkflow]

__all__ = ["ALL_WORKFLOWS", "DeliverMessageWorkflow", "JourneyWorkflow"]
