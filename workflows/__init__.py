"""Deterministic orchestration only: no I/O, no clock, no randomness."""

from workflows.crisis import BroadcastShardWorkflow, CrisisBroadcastWorkflow
from workflows.deliver import DeliverMessageWorkflow
from workflows.journey import JourneyWorkflow

ALL_WORKFLOWS = [
    DeliverMessageWorkflow,
    JourneyWorkflow,
    CrisisBroadcastWorkflow,
    BroadcastShardWorkflow,
]

__all__ = [
    "ALL_WORKFLOWS",
    "BroadcastShardWorkflow",
    "CrisisBroadcastWorkflow",
    "DeliverMessageWorkflow",
    "JourneyWorkflow",
]
