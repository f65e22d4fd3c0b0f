"""No personal data in what Temporal stores: the raw histories, fetched from the server as
it keeps them (protobuf, nothing decoded), never contain a customer's email address, phone
number, name or the text of a message sent to them, while the same histories decoded with
Clarion's converter still read back, so the data is there, encrypted. Decrypted, the
payloads carry ids, not contact data or message texts."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator

import pytest
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload, WorkflowExecution
from temporalio.api.history.v1 import History, HistoryEvent
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryRequest
from temporalio.client import Client

from clarion.journeys.models import JourneyRunStatus, journey_workflow_id
from clarion.models import Channel, DeliveryOutcome, OutcomeStatus
from clarion.temporal import ENCRYPTED_ENCODING, KEY_ID_METADATA
from tests.conftest import (
    TEST_PAYLOAD_KEYS,
    Stack,
    add_customer,
    encrypting_converter,
    unique_phone,
)


async def raw_history(client: Client, workflow_id: str) -> History:
    """The history exactly as the server returns it, all pages."""
    history = History()
    token = b""
    while True:
        page = await client.workflow_service.get_workflow_execution_history(
            GetWorkflowExecutionHistoryRequest(
                namespace=client.namespace,
                execution=WorkflowExecution(workflow_id=workflow_id),
                next_page_token=token,
            )
        )
        history.events.extend(page.history.events)
        token = page.next_page_token
        if not token:
            return history


def payloads_in(message: Message, path: str = "") -> Iterator[tuple[str, Payload]]:
    """Every Payload anywhere in ``message``, with where it sits."""
    if isinstance(message, Payload):
        yield path, message
        return
    for field, value in message.ListFields():
        if field.type != field.TYPE_MESSAGE:
            continue
        where = f"{path}.{field.name}"
        if isinstance(value, Message):
            yield from payloads_in(value, where)
        elif hasattr(value, "items"):  # a map
            for key, item in value.items():
                if isinstance(item, Message):
                    yield from payloads_in(item, f"{where}[{key}]")
        else:  # a repeated field
            for n, item in enumerate(value):
                yield from payloads_in(item, f"{where}[{n}]")


def sdk_metadata(event: HistoryEvent, path: str) -> bool:
    """Payloads the SDK writes for itself, unencoded by design: search attributes, the
    record of a local activity (not its result) and the id of a patch."""
    if ".search_attributes" in path:
        return True
    if not event.HasField("marker_recorded_event_attributes"):
        return False
    name = event.marker_recorded_event_attributes.marker_name
    details = ".marker_recorded_event_attributes.details"
    return (name == "core_local_activity" and path.startswith(f"{details}[data]")) or (
        name == "core_patch" and path.startswith(f"{details}[patch_data]")
    )


def child_workflow_ids(history: History) -> list[str]:
    return [
        e.start_child_workflow_execution_initiated_event_attributes.workflow_id
        for e in history.events
        if e.HasField("start_child_workflow_execution_initiated_event_attributes")
    ]


async def test_histories_hold_no_personal_data_only_encrypted_payloads(stack: Stack) -> None:
    tag = uuid.uuid4().hex[:10]
    first, last = f"Zelda{tag}", f"Quillfeather{tag}"
    phone = unique_phone()
    stack.twilio.invalid_numbers.add(phone)  # the SMS fails; Twilio's error quotes the number
    customer = await add_customer(stack.store, phone=phone, name=f"{first} {last}")
    assert customer.email
    ref = f"PII-{tag}"

    # One message (SMS refused -> email), and a journey with two messages of its own.
    message = await stack.clarion.send_message(
        customer_id=customer.external_id,
        template="test-notice",
        channels=["sms", "email"],
        context={"ref": ref},
    )
    outcome = await message.result()
    assert outcome.status is OutcomeStatus.DELIVERED and outcome.channel is Channel.EMAIL
    journey = await stack.clarion.start_journey("t-linear", customer.external_id)
    result = await asyncio.wait_for(journey.result(), 60)
    assert result.status is JourneyRunStatus.COMPLETED

    # What the customer received: the texts that must not be in Temporal.
    [mail] = stack.smtp.with_id(message.message_id)
    subject = str(mail.message["Subject"])
    assert subject == f"Notice {ref} for {first} {last}"
    body = f"Hello {first}, notice {ref}."
    secrets = {
        "email": customer.email,
        "phone": phone,
        "phone digits": phone.lstrip("+"),
        "first name": first,
        "last name": last,
        "subject": subject,
        "body": body,
        "template variable": ref,
    }

    journey_id = journey_workflow_id("t-linear", customer.external_id)
    histories = {message.workflow_id: await raw_history(stack.client, message.workflow_id)}
    histories[journey_id] = await raw_history(stack.client, journey_id)
    children = child_workflow_ids(histories[journey_id])
    assert len(children) == 2
    for child in children:
        histories[child] = await raw_history(stack.client, child)

    codec = encrypting_converter().payload_codec
    assert codec is not None
    test_key_id = TEST_PAYLOAD_KEYS.split(":")[0].encode()
    decoded_text = b""
    encoded_failures = 0
    for workflow_id, history in histories.items():
        raw = history.SerializeToString()
        for what, needle in secrets.items():
            assert needle.encode() not in raw, f"{what} {needle!r} in the history of {workflow_id}"

        # Every payload is encrypted, except what Temporal must read: search attributes
        # (ids: journey, version, step, customer id) and the SDK's own bookkeeping in
        # markers (a local activity's sequence number, type and times; a patch id).
        for n, event in enumerate(history.events):
            for path, payload in payloads_in(event):
                if sdk_metadata(event, path):
                    assert payload.metadata.get("encoding") == b"json/plain", path
                    continue
                where = (workflow_id, n, path)
                assert payload.metadata.get("encoding") == ENCRYPTED_ENCODING, where
                assert payload.metadata.get(KEY_ID_METADATA) == test_key_id, where
                [plain] = await codec.decode([payload])
                decoded_text += plain.SerializeToString()
        encoded_failures += sum(
            1
            for e in history.events
            if e.HasField("activity_task_failed_event_attributes")
            and e.activity_task_failed_event_attributes.failure.message == "Encoded failure"
        )

        if workflow_id == message.workflow_id:
            # The message's customer id travels only in payloads: absent from the raw
            # history, present once decoded. (A journey's messages name their parent,
            # whose workflow id has the customer id in it.)
            assert customer.external_id.encode() not in raw

    assert customer.external_id.encode() in decoded_text
    # Decrypted, the payloads still carry ids rather than contact data or texts: only the
    # provider's error quotes the number, and the template variables are the caller's.
    for what in ("email", "first name", "last name", "subject", "body"):
        assert secrets[what].encode() not in decoded_text, what
    # The refused SMS (once for the message, once for the journey's second send): its
    # failure message quoted the number, and it is encrypted like every payload.
    assert encoded_failures == 2
    assert phone.encode() in decoded_text

    # And the converter reads the history back: the outcome, with Twilio's error.
    [completed] = [
        e.workflow_execution_completed_event_attributes
        for e in histories[message.workflow_id].events
        if e.HasField("workflow_execution_completed_event_attributes")
    ]
    [read] = await encrypting_converter().decode(list(completed.result.payloads), [DeliveryOutcome])
    assert read == outcome and phone in json.dumps(read.model_dump(mode="json"))


# Processes, HTTP and the browser over a store: SQLite is enough (see conftest.py).
pytestmark = pytest.mark.sqlite_only
