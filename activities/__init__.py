"""Every side effect of Clarion's workflows: store reads and writes, channel sends, audit."""

from activities.deliver import DeliveryActivities

__all__ = ["DeliveryActivities"]
