"""Every side effect of Clarion's workflows: store reads and writes, channel sends, audit."""

from activities.approvals import ApprovalActivities
from activities.broadcast import BroadcastActivities
from activities.deliver import DeliveryActivities
from activities.erasure import ErasureActivities
from activities.incidents import IncidentActivities
from activities.journeys import JourneyActivities
from activities.retention import RetentionActivities

__all__ = [
    "ApprovalActivities",
    "BroadcastActivities",
    "DeliveryActivities",
    "ErasureActivities",
    "IncidentActivities",
    "JourneyActivities",
    "RetentionActivities",
]
