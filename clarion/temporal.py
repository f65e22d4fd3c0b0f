"""Temporal client factory and data converter: the only Temporal import outside workflows/."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)

from clarion.codec import KeyRing, keyring_for
from clarion.config import Settings

ENCRYPTED_ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over each whole serialized payload (metadata included), sealed with
    the key ring's active key; ``encryption-key-id`` in the metadata names the key.

    Decoding opens with whichever configured key the payload names, and passes through
    payloads that are not encrypted (histories written before encryption)."""

    def __init__(self, keyring: KeyRing) -> None:
        self.keyring = keyring

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        encoded = []
        for payload in payloads:
            key_id, sealed = self.keyring.seal(payload.SerializeToString())
            encoded.append(
                Payload(
                    metadata={"encoding": ENCRYPTED_ENCODING, KEY_ID_METADATA: key_id.encode()},
                    data=sealed,
                )
            )
        return encoded

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        decoded = []
        for payload in payloads:
            if payload.metadata.get("encoding") != ENCRYPTED_ENCODING:
                decoded.append(payload)
                continue
            key_id = payload.metadata.get(KEY_ID_METADATA, b"").decode(errors="replace")
            decoded.append(Payload.FromString(self.keyring.open(key_id, payload.data)))
        return decoded


def data_converter_for(settings: Settings, *, keyring: KeyRing | None = None) -> DataConverter:
    """Clarion's data converter: pydantic payloads, encrypted with the settings' keys
    (``keyring`` overrides them), and failures whose message and stack trace travel as an
    encrypted payload too (provider errors may quote an address or a number)."""
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=EncryptionCodec(keyring or keyring_for(settings)),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


def workflow_id_for_message(message_id: str) -> str:
    return f"message:{message_id}"


async def connect(settings: Settings) -> Client:
    """A client for the configured server and namespace, with Clarion's data converter."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=data_converter_for(settings),
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
