"""The Python SDK: start and follow Clarion's durable processes from any service.

async with await ClarionClient.connect() as clarion:
    handle = await clarion.send_message(customer_id="c-42", template="order-shipped",
                                        channels=["sms", "email"], context={"order": "A-1"})
    outcome = await handle.result()
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from clarion.config import Settings, get_settings
from clarion.models import Channel, DeliverMessageInput, DeliveryOutcome, Purpose
from clarion.temporal import connect, workflow_id_for_message
from workflows.deliver import DeliverMessageWorkflow


class MessageHandle:
    """A message on its way; ``result()`` waits for its outcome."""

    def __init__(self, handle: WorkflowHandle[Any, DeliveryOutcome], message_id: str) -> None:
        self._handle = handle
        self.message_id = message_id
        self.workflow_id = handle.id

    async def result(self) -> DeliveryOutcome:
        return await self._handle.result()

    async def stage(self) -> str:
        return await self._handle.query(DeliverMessageWorkflow.stage)


class ClarionClient:
    def __init__(self, client: Client, settings: Settings) -> None:
        self.temporal = client
        self.settings = settings

    @classmethod
    async def connect(cls, settings: Settings | None = None) -> ClarionClient:
        settings = settings or get_settings()
        return cls(await connect(settings), settings)

    async def __aenter__(self) -> ClarionClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Nothing to release today; kept so callers can close symmetrically."""

    async def send_message(
        self,
        *,
        customer_id: str,
        template: str,
        purpose: Purpose | str | None = None,
        channels: Iterable[Channel | str] = (Channel.EMAIL,),
        context: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        template_version: int | None = None,
    ) -> MessageHandle:
        """Start delivering a message. The same ``message_id`` twice is one message:
        the second call returns the handle of the first."""
        request = DeliverMessageInput(
            message_id=message_id or str(uuid.uuid4()),
            customer_id=customer_id,
            template=template,
            purpose=Purpose(purpose) if purpose else None,
            channels=[Channel(c) for c in channels],
            context=dict(context or {}),
            template_version=template_version,
        )
        workflow_id = workflow_id_for_message(request.message_id)
        try:
            handle = await self.temporal.start_workflow(
                DeliverMessageWorkflow.run,
                request,
                id=workflow_id,
                task_queue=self.settings.task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            )
        except WorkflowAlreadyStartedError:
            handle = self.temporal.get_workflow_handle_for(DeliverMessageWorkflow.run, workflow_id)
        return MessageHandle(handle, request.message_id)

    def get_message(self, message_id: str) -> MessageHandle:
        handle = self.temporal.get_workflow_handle_for(
            DeliverMessageWorkflow.run, workflow_id_for_message(message_id)
        )
        return MessageHandle(handle, message_id)
