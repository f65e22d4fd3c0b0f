"""Deterministic orchestration only: no I/O, no clock, no randomness."""

from workflows.approval import ApprovalGateWorkflow
from workflows.crisis import BroadcastShardWorkflow, CrisisBroadcastWorkflow
from workflows.deliver import DeliverMessageWorkflow
from workflows.erasure import ErasureWorkflow
from workflows.incident import IncidentWorkflow
from workflows.journey import JourneyWorkflow
from workflows.retention import RetentionWorkflow

ALL_WORKFLOWS = [
    DeliverMessageWorkflow,
    JourneyWorkflow,
    CrisisBroadcastWorkflow,
    BroadcastShardWorkflow,
    ApprovalGateWorkflow,
    ErasureWorkflow,
    RetentionWorkflow,
    IncidentWorkflow,
]

__all__ = [
    "ALL_WORKFLOWS",
    "ApprovalGateWorkflow",
    "BroadcastShardWorkflow",
    "CrisisBroadcastWorkflow",
    "DeliverMessageWorkflow",
    "ErasureWorkflow",
    "IncidentWorkflow",
    "JourneyWorkflow",
    "RetentionWorkflow",
]
