"""Temporal client factory and data converter: the only Temporal import outside workflows/."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter

from clarion.config import Settings

DATA_CONVERTER: DataConverter = pydantic_data_converter


def workflow_id_for_message(message_id: str) -> str:
    return f"message:{message_id}"


async def connect(settings: Settings) -> Client:
    """A client for the configured server and namespace, with Clarion's data converter."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=DATA_CONVERTER,
    )
