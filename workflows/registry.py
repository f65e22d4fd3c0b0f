"""Every workflow a Clarion worker runs.

Kept out of ``workflows/__init__.py`` on purpose: the sandbox imports a workflow's package
afresh for every new workflow instance, so the package itself imports nothing.
"""

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
