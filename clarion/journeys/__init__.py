"""The journey definition language: schema, loader, validation, deterministic splits."""

from clarion.journeys.definition import JourneyDefinition, Step
from clarion.journeys.loader import JourneyError, json_schema, load_journey_dir, load_journey_file

__all__ = [
    "JourneyDefinition",
    "JourneyError",
    "Step",
    "json_schema",
    "load_journey_dir",
    "load_journey_file",
]
