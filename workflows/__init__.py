"""Deterministic orchestration only: no I/O, no clock, no randomness."""

from workflows.approval import ApprovalGateWorkflow
from workflows.crisis import BroadcastShardWorkflow, CrisisBroadcastWorkflow
from workflows.deliver import DeliverMessageWorkflow
from workflows.erasure import ErasureWorkflow
from workflows.journey import JourneyWorkflow

ALL_WORKFLOWS = [
    DeliverMessageWorkflow,
    JourneyWorkflow,
    CrisisBroadcastWorkflow,
    BroadcastShardWorkflow,
    ApprovalGateWorkflow,
    ErasureWorkflow,
]

__all__ = [
    "ALL_WORKFLOWS",
    "ApprovalGateWorkflow",
    "BroadcastShardWorkflow",
    "CrisisBroadcastWorkflow",
    "DeliverMessageWorkflow",
    "ErasureWorkflow",
    "JourneyWorkflow",
]
