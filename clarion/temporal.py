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


async def ensure_search_attributes(client: Client, namespace: str) -> list[str]:
    """Register Clarion's search attributes in the namespace if missing; returns those added."""
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import (
        AddSearchAttributesRequest,
        ListSearchAttributesRequest,
    )

    from clarion.journeys.models import SEARCH_ATTRIBUTES

    kinds = {
        "keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
        "int": IndexedValueType.INDEXED_VALUE_TYPE_INT,
    }
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    missing = {
        name: kinds[kind]
        for name, kind in SEARCH_ATTRIBUTES.items()
        if name not in listed.custom_attributes
    }
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
        )
    return sorted(missing)
