"""Every side effect of Clarion's workflows: store reads and writes, channel sends, audit."""

from activities.broadcast import BroadcastActivities
from activities.deliver import DeliveryActivities
from activities.journeys import JourneyActivities

__all__ = ["BroadcastActivities", "DeliveryActivities", "JourneyActivities"]
