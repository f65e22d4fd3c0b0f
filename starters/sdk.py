"""The Python SDK: start and follow Clarion's durable processes from any service.

async with await ClarionClient.connect() as clarion:
    handle = await clarion.send_message(customer_id="c-42", template="order-shipped",
                                        channels=["sms", "email"], context={"order": "A-1"})
    outcome = await handle.result()
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from pydantic import ValidationError as PydanticValidationError
from sqlalchemy import insert
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from clarion.config import Settings, get_settings
from clarion.crisis.models import (
    Audience,
    BroadcastInput,
    BroadcastProgress,
    FollowUp,
    Incident,
    Severity,
    Tier,
)
from clarion.crisis.tiers import load_tiers
from clarion.errors import ClarionError, NotFound, ValidationFailed
from clarion.expressions import ExpressionError
from clarion.incidents import Alert, IncidentInput, IncidentState, incident_workflow_id
from clarion.journeys.models import (
    JourneyEvent,
    JourneyInput,
    JourneyResult,
    JourneyStatus,
    journey_workflow_id,
)
from clarion.models import (
    Acknowledgement,
    AuditKind,
    Channel,
    DeliverMessageInput,
    DeliveryOutcome,
    ErasureInput,
    ErasureProgress,
    ErasureReceipt,
    OperatorDecision,
    Purpose,
)
from clarion.policy.alerts import AlertSeverity
from clarion.policy.approval import Role
from clarion.store import Store, repo
from clarion.store import approvals as approvals_repo
from clarion.store import broadcasts as broadcast_repo
from clarion.store import erasure as erasure_repo
from clarion.store import incidents as incidents_repo
from clarion.store import journeys as journey_repo
from clarion.store import operators as operators_repo
from clarion.store.approvals import RequestView
from clarion.store.operators import OperatorInfo
from clarion.store.segments import SegmentError, compile_segment
from clarion.store.tables import AudienceListEntry
from clarion.temporal import connect, workflow_id_for_message
from workflows.approval import NOT_OPEN_YET
from workflows.crisis import CrisisBroadcastWorkflow
from workflows.deliver import DeliverMessageWorkflow
from workflows.erasure import ErasureWorkflow, erasure_workflow_id
from workflows.incident import IncidentWorkflow
from workflows.journey import JourneyWorkflow


class ErasureHandle:
    """An erasure on its way; ``result()`` waits for the receipt."""

    def __init__(self, handle: WorkflowHandle[Any, ErasureReceipt], request_id: str) -> None:
        self._handle = handle
        self.request_id = request_id
        self.workflow_id = handle.id

    async def result(self) -> ErasureReceipt:
        return await self._handle.result()

    async def progress(self) -> ErasureProgress | None:
        return await self._handle.query(ErasureWorkflow.progress)


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

    async def outcome(self) -> DeliveryOutcome | None:
        """The outcome once the message is done, else None."""
        return await self._handle.query(DeliverMessageWorkflow.outcome)

    async def acknowledge(self, by: str = "customer", channel: Channel | str | None = None) -> None:
        """The recipient confirmed (a reply, a click, a call taken by an agent): a message
        sent with ``acknowledge_within`` stops escalating."""
        await self._handle.signal(
            DeliverMessageWorkflow.acknowledge,
            Acknowledgement(by=by, channel=Channel(channel) if channel else None),
        )


@dataclass(frozen=True)
class EventDelivery:
    """Where an event went: running journeys signalled, journeys it started, and why not."""

    event_id: str
    delivered: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


class JourneyRefused(ClarionError):
    """A journey that may not start for this customer now (re-entry rule, already in it)."""


class NotAuthorised(ClarionError):
    """No operator, or one without the needed role."""


class ApprovalRefused(ClarionError):
    """A decision the approval gate refused (the reason is the message)."""


class ClarionClient:
    def __init__(self, client: Client, settings: Settings, *, store: Store | None = None) -> None:
        self.temporal = client
        self.settings = settings
        self._store = store
        self._own_store = store is None

    @property
    def store(self) -> Store:
        """Clarion's store (journey definitions and runs), opened on first use."""
        if self._store is None:
            self._store = Store(self.settings.database_url)
        return self._store

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
        if self._store is not None and self._own_store:
            await self._store.close()
            self._store = None

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
        requested_by: str | None = None,
        acknowledge_within: str | None = None,
    ) -> MessageHandle:
        """Start delivering a message. The same ``message_id`` twice is one message:
        the second call returns the handle of the first. ``requested_by`` (default: the
        configured operator, else ``system``) is who asked, for approvals' four-eyes rule."""
        operator = await self.acting_as(Role.OPERATOR)
        if requested_by is None:
            requested_by = operator.name if operator else "system"
        request = DeliverMessageInput(
            requested_by=requested_by,
            acknowledge_within=acknowledge_within,
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

    # ----------------------------------------------------------------- operators

    async def operator(self) -> OperatorInfo | None:
        """The operator whose token is configured (CLARION_OPERATOR_TOKEN), or None when
        no token is set. A token that is not an active operator's is refused."""
        token = self.settings.operator_token.get_secret_value()
        if not token:
            return None
        async with self.store.session() as session:
            found = await operators_repo.authenticate(session, token)
        if found is None:
            raise NotAuthorised("CLARION_OPERATOR_TOKEN is not the token of an active operator")
        return found

    async def acting_as(self, *roles: Role) -> OperatorInfo | None:
        """The configured operator, checked for one of ``roles`` (admin always passes);
        None when no operator token is set: a service acting for itself."""
        found = await self.operator()
        if found is not None and not found.has(*roles):
            wanted = " or ".join(r.value for r in roles)
            raise NotAuthorised(f"operator {found.name!r} needs the role {wanted} for this")
        return found

    async def require_operator(self) -> OperatorInfo:
        found = await self.operator()
        if found is None:
            raise NotAuthorised(
                "this needs an operator: set CLARION_OPERATOR_TOKEN to your token "
                "(clarion operators add prints it)"
            )
        return found

    # ----------------------------------------------------------------- approvals

    async def approvals(self, *, status: str | None = "pending") -> list[RequestView]:
        """Approval requests (pending ones by default; None for all), oldest first."""
        async with self.store.session() as session:
            return await approvals_repo.list_requests(session, status=status)

    async def approval(self, request_id: str) -> RequestView:
        async with self.store.session() as session:
            return await approvals_repo.get_request(session, request_id)

    async def approve(self, request_id: str, *, reason: str = "") -> str:
        """Approve as the configured operator; ApprovalRefused says why it did not count."""
        return await self._decide(request_id, approved=True, reason=reason)

    async def reject(self, request_id: str, *, reason: str) -> str:
        return await self._decide(request_id, approved=False, reason=reason)

    async def _open_request(self, request_id: str) -> RequestView:
        """The request's row; while its gate is still writing it (a second after a message
        or broadcast started waiting), wait for it. A broadcast shows ``awaiting_approval``
        a moment before its gate starts: while the message or broadcast of that id runs,
        wait for the gate too. NotFound for an unknown request."""
        for _ in range(100):
            try:
                return await self.approval(request_id)
            except NotFound:
                gate = await self._describe(f"approval:{request_id}")
                if gate is None and not await self._subject_running(request_id):
                    raise NotFound("approval request", request_id) from None
            await asyncio.sleep(0.1)
        return await self.approval(request_id)

    async def _describe(self, workflow_id: str) -> WorkflowExecutionDescription | None:
        """The workflow's description, or None when there is no workflow of that id."""
        try:
            return await self.temporal.get_workflow_handle(workflow_id).describe()
        except RPCError as exc:
            if exc.status is RPCStatusCode.NOT_FOUND:
                return None
            raise

    async def _subject_running(self, request_id: str) -> bool:
        """Whether a message or broadcast with this id is running (its approval gate may be
        about to start)."""
        for workflow_id in (workflow_id_for_message(request_id), broadcast_workflow_id(request_id)):
            description = await self._describe(workflow_id)
            if description is not None and description.status is WorkflowExecutionStatus.RUNNING:
                return True
        return False

    async def _decide(self, request_id: str, *, approved: bool, reason: str) -> str:
        operator = await self.require_operator()
        request = await self._open_request(request_id)
        decision = OperatorDecision(operator=operator.name, approved=approved, reason=reason)
        handle = self.temporal.get_workflow_handle(request.workflow_id)
        refreshed = 0
        for _ in range(100):  # the store row can be seconds ahead of the gate opening
            try:
                return await handle.execute_update("decide", decision, result_type=str)
            except WorkflowUpdateFailedError as exc:
                why = str(exc.cause.message if hasattr(exc.cause, "message") else exc.cause)
            except RPCError as exc:
                if exc.status is not RPCStatusCode.NOT_FOUND:
                    raise
                why = f"the request is already {(await self.approval(request_id)).status}"
            if why.startswith("unknown operator") and refreshed < 100:
                # Added after the request opened: the gate reads its roster again (asked
                # again every 2 s, for up to 10 s, on a busy machine).
                if refreshed % 20 == 0:
                    await handle.signal("refresh_roster")
                refreshed += 1
            elif why != NOT_OPEN_YET:
                break
            await asyncio.sleep(0.1)
        # The gate's validator refused: nothing changed there; the audit trail keeps it.
        async with self.store.transaction() as session:
            await repo.append_audit(
                session,
                kind=AuditKind.APPROVAL_REFUSED,
                customer_external_id=request.customer_id,
                message_id=request.subject_id if request.subject_kind == "message" else None,
                workflow_id=request.workflow_id,
                actor=operator.name,
                reason=why,
                detail={"request": request_id, "approved": approved, "operator_reason": reason},
            )
        raise ApprovalRefused(why)

    def get_message(self, message_id: str) -> MessageHandle:
        handle: WorkflowHandle[Any, DeliveryOutcome] = self.temporal.get_workflow_handle(
            workflow_id_for_message(message_id), result_type=DeliveryOutcome
        )
        return MessageHandle(handle, message_id)

    async def broadcast_report(self, broadcast_id: str) -> dict[str, Any]:
        """The post-incident report of a broadcast (from the store; see docs/crisis.md)."""
        from clarion.store.incident_report import incident_report

        await self.acting_as(Role.VIEWER, Role.OPERATOR, Role.INCIDENT_MANAGER, Role.COMPLIANCE)
        async with self.store.session() as session:
            return await incident_report(session, broadcast_id=broadcast_id)

    async def delivery_report(
        self,
        since: datetime | str = "7d",
        until: datetime | str | None = None,
        by: Iterable[str] = ("template", "channel"),
        *,
        refresh: bool = True,
    ) -> list[dict[str, Any]]:
        """Delivery analytics (docs/measurement.md): the groups `clarion report
        deliveries --json` prints, with the prices of CLARION_PRICE_*. ``since`` and
        ``until``: datetimes, ISO-8601 text, or ``7d`` / ``24h`` ago; ``until`` None: now.
        ValidationFailed names a bad field (since, until, by)."""
        from clarion.store.reports import delivery_report, resolve_time

        await self.acting_as(Role.VIEWER, Role.OPERATOR, Role.INCIDENT_MANAGER, Role.COMPLIANCE)
        now = datetime.now(UTC)
        start = resolve_time(since, "since", now)
        end = now if until is None else resolve_time(until, "until", now)
        s = self.settings
        prices = {"email": s.price_email, "sms": s.price_sms, "voice": s.price_voice}
        async with self.store.session() as session:
            return await delivery_report(
                session, since=start, until=end, by=list(by), prices=prices, refresh=refresh
            )

    # ---------------------------------------------------------------- erasure

    async def erase_customer(
        self,
        customer_id: str,
        *,
        reference: str = "",
        request_id: str | None = None,
        sweep_after: str = "5m",
    ) -> ErasureHandle:
        """Start forgetting a customer (role compliance). The same ``request_id`` twice is
        one erasure. Returns at once; ``result()`` waits for the receipt."""
        operator = await self.acting_as(Role.COMPLIANCE)
        request = ErasureInput(
            request_id=request_id or str(uuid.uuid4()),
            customer_id=customer_id,
            reference=reference,
            requested_by=operator.name if operator else "system",
            sweep_after=sweep_after,
        )
        handle = await self.temporal.start_workflow(
            ErasureWorkflow.run,
            request,
            id=erasure_workflow_id(request.request_id),
            task_queue=self.settings.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        return ErasureHandle(handle, request.request_id)

    def get_erasure(self, request_id: str) -> ErasureHandle:
        handle: WorkflowHandle[Any, ErasureReceipt] = self.temporal.get_workflow_handle(
            erasure_workflow_id(request_id), result_type=ErasureReceipt
        )
        return ErasureHandle(handle, request_id)

    async def erasure_record(self, request_id: str) -> dict[str, Any]:
        """The tombstone of an erasure as the store keeps it (status and receipt)."""
        async with self.store.session() as session:
            row = await erasure_repo.get_request(session, request_id=request_id)
        if row is None:
            # Accepted, and its workflow has not written the tombstone yet?
            try:
                progress = await self.get_erasure(request_id).progress()
            except RPCError as exc:
                raise NotFound("erasure request", request_id) from exc
            return {
                "request_id": request_id,
                "status": "running",
                "progress": progress.model_dump(mode="json") if progress else None,
                "receipt": {},
            }
        return {
            "request_id": row.id,
            "customer_ref": row.customer_ref,
            "reference": row.reference,
            "requested_by": row.requested_by,
            "status": row.status,
            "requested_at": row.requested_at.isoformat(),
            "completed_at": row.completed_at.isoformat() if row.completed_at else None,
            "receipt": row.receipt,
        }

    # ---------------------------------------------------------------- journeys

    async def start_journey(
        self,
        journey: str,
        customer_id: str,
        *,
        context: Mapping[str, Any] | None = None,
        version: int | None = None,
    ) -> WorkflowHandle[Any, JourneyResult]:
        """Start ``journey`` for a customer (at most one run at a time; re-entry rules apply)."""
        await self.acting_as(Role.OPERATOR)
        async with self.store.session() as session:
            _, definition = await journey_repo.get_journey_version(
                session, name=journey, version=version
            )
            refusal = await journey_repo.reentry_refusal(
                session, definition=definition, customer_external_id=customer_id, now=_now()
            )
        if refusal:
            raise JourneyRefused(f"{customer_id} cannot enter {journey}: {refusal}")
        try:
            return await self.temporal.start_workflow(
                JourneyWorkflow.run,
                JourneyInput(
                    journey=journey,
                    customer_id=customer_id,
                    version=version,
                    context=dict(context or {}),
                ),
                id=journey_workflow_id(journey, customer_id),
                task_queue=self.settings.task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            )
        except WorkflowAlreadyStartedError as exc:
            raise JourneyRefused(f"{customer_id} is already in {journey}") from exc

    def journey_handle(self, journey: str, customer_id: str) -> WorkflowHandle[Any, JourneyResult]:
        return self.temporal.get_workflow_handle_for(
            JourneyWorkflow.run, journey_workflow_id(journey, customer_id)
        )

    async def journey_status(self, journey: str, customer_id: str) -> JourneyStatus:
        return await self.journey_handle(journey, customer_id).query(JourneyWorkflow.status)

    async def send_event(
        self,
        customer_id: str,
        event: str,
        data: Mapping[str, Any] | None = None,
        *,
        event_id: str | None = None,
    ) -> EventDelivery:
        """Deliver an event to every running journey of the customer, and start the journeys
        that it triggers. The same ``event_id`` twice is one event to a journey."""
        await self.acting_as(Role.OPERATOR)
        payload = JourneyEvent(
            event_id=event_id or str(uuid.uuid4()), name=event, data=dict(data or {}), at=_now()
        )
        result = EventDelivery(event_id=payload.event_id)
        async with self.store.session() as session:
            definitions = [d for _, d in await journey_repo.latest_definitions(session)]
        for definition in definitions:
            handle = self.journey_handle(definition.name, customer_id)
            try:
                await handle.signal(JourneyWorkflow.event, payload)
                result.delivered.append(definition.name)
                continue
            except RPCError as exc:
                if exc.status not in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
                    raise
            if event not in definition.entry.events:
                continue
            async with self.store.session() as session:
                refusal = await journey_repo.reentry_refusal(
                    session, definition=definition, customer_external_id=customer_id, now=_now()
                )
            if refusal:
                result.skipped[definition.name] = refusal
                continue
            await self.temporal.start_workflow(
                JourneyWorkflow.run,
                JourneyInput(journey=definition.name, customer_id=customer_id, trigger=payload),
                id=journey_workflow_id(definition.name, customer_id),
                task_queue=self.settings.task_queue,
                start_signal="event",
                start_signal_args=[payload],
            )
            result.started.append(definition.name)
        return result

    # ---------------------------------------------------------------- broadcasts

    async def launch_broadcast(
        self,
        *,
        title: str,
        template: str,
        segment: str | None = None,
        customers: Iterable[str] | None = None,
        incident_id: str | None = None,
        severity: Severity | str = Severity.MAJOR,
        tiers: list[Tier] | None = None,
        broadcast_id: str | None = None,
        batch_size: int = 5000,
        shard_size: int = 10_000,
        heartbeat_timeout_s: int = 30,
        max_parallel_shards: int = 4,
    ) -> BroadcastHandle:
        """Launch a crisis broadcast to a segment or to a list of customer ids (staged in
        the store, never carried in a payload); returns at once with a handle."""
        if (segment is None) == (customers is None):
            raise ValidationFailed(
                "audience", None, "give a segment or a list of customers, not both"
            )
        if segment is not None:
            try:
                compile_segment(segment, "sqlite")
            except (ExpressionError, SegmentError) as exc:
                raise ValidationFailed("segment", segment, str(exc)) from exc
        tiers = tiers or load_tiers(self.settings.crisis_tiers_file)
        for i, tier in enumerate(tiers):
            try:
                compile_segment(tier.segment, "sqlite")
            except (ExpressionError, SegmentError) as exc:
                raise ValidationFailed(f"tiers.{i}.segment", tier.segment, str(exc)) from exc
        operator = await self.acting_as(Role.INCIDENT_MANAGER)
        broadcast_id = broadcast_id or f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
        list_id = None
        if customers is not None:
            ids = sorted({c.strip() for c in customers if c.strip()})
            if not ids:
                raise ValidationFailed("customers", "", "the list is empty")
            list_id = broadcast_id
            async with self.store.transaction() as session:
                await session.execute(
                    insert(AudienceListEntry),
                    [{"list_id": list_id, "customer_external_id": c} for c in ids],
                )
        request = BroadcastInput(
            broadcast_id=broadcast_id,
            incident=Incident(
                id=incident_id or broadcast_id, title=title, severity=Severity(severity)
            ),
            template=template,
            audience=Audience(segment=segment, list_id=list_id),
            tiers=tiers,
            batch_size=batch_size,
            shard_size=shard_size,
            heartbeat_timeout_s=heartbeat_timeout_s,
            max_parallel_shards=max_parallel_shards,
            requested_by=operator.name if operator else "system",
        )
        handle = await self.temporal.start_workflow(
            CrisisBroadcastWorkflow.run,
            request,
            id=broadcast_workflow_id(broadcast_id),
            task_queue=self.settings.task_queue,
        )
        return BroadcastHandle(handle, broadcast_id, self)

    # ---------------------------------------------------------------- alerts

    async def ingest_alert(
        self,
        *,
        source: str,
        key: str,
        severity: str,
        summary: str = "",
        affects: str | None = None,
        alert_type: str = "",
    ) -> AlertReceipt:
        """Take an alert from an operations system (see docs/alerts.md). A firing alert
        goes to the IncidentWorkflow of its key, started by the first one; a recovery goes
        to the open incident of the key, if there is one. Returns at once."""
        alert = build_alert(
            source=source,
            key=key,
            severity=severity,
            summary=summary,
            affects=affects,
            alert_type=alert_type,
        )
        await self.acting_as(Role.OPERATOR, Role.INCIDENT_MANAGER)
        async with self.store.transaction() as session:
            await incidents_repo.record_alert(session, alert)
        workflow_id = incident_workflow_id(alert.key)
        if alert.severity is AlertSeverity.RESOLVED:
            try:
                await self.temporal.get_workflow_handle(workflow_id).signal("alert", alert)
            except RPCError as exc:
                if exc.status is not RPCStatusCode.NOT_FOUND:
                    raise
                return AlertReceipt(key=alert.key, workflow_id=None, note="no open incident")
            return AlertReceipt(key=alert.key, workflow_id=workflow_id)
        await self.temporal.start_workflow(
            IncidentWorkflow.run,
            IncidentInput(key=alert.key),
            id=workflow_id,
            task_queue=self.settings.task_queue,
            start_signal="alert",
            start_signal_args=[alert],
        )
        return AlertReceipt(key=alert.key, workflow_id=workflow_id)

    async def incident_state(self, key: str) -> IncidentState:
        """The live state of the key's incident (its latest one, open or ended)."""
        handle: WorkflowHandle[Any, IncidentState] = self.temporal.get_workflow_handle(
            incident_workflow_id(key), result_type=IncidentState
        )
        try:
            return await handle.query(IncidentWorkflow.state)
        except RPCError as exc:
            if exc.status is RPCStatusCode.NOT_FOUND:
                raise NotFound("incident for alert key", key) from None
            raise

    async def incidents(
        self, *, key: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Incidents from the store, newest first, with their alert-to-launch times."""
        await self.acting_as(Role.VIEWER, Role.OPERATOR, Role.INCIDENT_MANAGER, Role.COMPLIANCE)
        async with self.store.session() as session:
            return await incidents_repo.list_incidents(session, key=key, status=status, limit=limit)

    async def incident(self, incident_id: str) -> dict[str, Any]:
        await self.acting_as(Role.VIEWER, Role.OPERATOR, Role.INCIDENT_MANAGER, Role.COMPLIANCE)
        async with self.store.session() as session:
            return await incidents_repo.get_incident(session, incident_id)

    def broadcast(self, broadcast_id: str) -> BroadcastHandle:
        handle: WorkflowHandle[Any, BroadcastProgress] = self.temporal.get_workflow_handle(
            broadcast_workflow_id(broadcast_id), result_type=BroadcastProgress
        )
        return BroadcastHandle(handle, broadcast_id, self)


def _now() -> datetime:
    return datetime.now(UTC)


def build_alert(
    *,
    source: str,
    key: str,
    severity: str,
    summary: str = "",
    affects: str | None = None,
    alert_type: str = "",
) -> Alert:
    """An alert received now; ValidationFailed names the field and the value."""
    try:
        alert = Alert(
            source=source,
            key=key,
            severity=severity,
            summary=summary,
            affects=affects,
            type=alert_type,
            at=_now(),
        )
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "alert"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ValidationFailed(where, first.get("input"), message) from None
    if alert.affects is not None:
        try:
            compile_segment(alert.affects, "sqlite")
        except (ExpressionError, SegmentError) as exc:
            raise ValidationFailed("affects", alert.affects, str(exc)) from exc
    return alert


@dataclass
class AlertReceipt:
    """Where an alert went: the workflow of its key's incident (None: a recovery with no
    open incident)."""

    key: str
    workflow_id: str | None
    note: str = ""


class BroadcastHandle:
    """A running crisis broadcast."""

    def __init__(
        self,
        handle: WorkflowHandle[CrisisBroadcastWorkflow, BroadcastProgress],
        broadcast_id: str,
        clarion: ClarionClient,
    ) -> None:
        self._handle = handle
        self._clarion = clarion
        self._store = clarion.store
        self.broadcast_id = broadcast_id
        self.workflow_id = handle.id

    async def progress(self) -> BroadcastProgress:
        """The workflow's counts, with acknowledgements as recorded in the store now."""
        progress = await self._handle.query(CrisisBroadcastWorkflow.progress)
        async with self._store.session() as session:
            acks = await broadcast_repo.ack_counts(session, broadcast_id=self.broadcast_id)
        tiers = [
            t.model_copy(update={"acknowledged": acks.get(i, (0, 0))[0]})
            for i, t in enumerate(progress.tiers)
        ]
        acknowledged = sum(a for a, _ in acks.values())
        return progress.model_copy(update={"tiers": tiers, "acknowledged": acknowledged})

    async def acknowledge(self, customer_id: str) -> bool:
        """Record that the customer acknowledged (a reply, a click); True the first time."""
        async with self._store.transaction() as session:
            return await broadcast_repo.record_ack(
                session, broadcast_id=self.broadcast_id, customer_id=customer_id, at=_now()
            )

    async def approve(self, *, reason: str = "") -> str:
        """Approve a broadcast whose template is not a pre-approved crisis template, as the
        configured operator (the approval gate's rules apply; see docs/approvals.md)."""
        return await self._clarion.approve(self.broadcast_id, reason=reason)

    async def reject(self, *, reason: str) -> str:
        return await self._clarion.reject(self.broadcast_id, reason=reason)

    async def update(self, template: str) -> int:
        """Send ``template`` as a follow-up; returns the new message generation."""
        await self._clarion.acting_as(Role.INCIDENT_MANAGER)
        follow_up = FollowUp(template=template)
        return await self._handle.execute_update("follow_up", follow_up, result_type=int)

    async def resolve(self, template: str) -> int:
        await self._clarion.acting_as(Role.INCIDENT_MANAGER)
        resolution = FollowUp(template=template, kind="resolution")
        return await self._handle.execute_update("follow_up", resolution, result_type=int)

    async def cancel(self, reason: str = "cancelled") -> None:
        await self._clarion.acting_as(Role.INCIDENT_MANAGER)
        await self._handle.signal(CrisisBroadcastWorkflow.cancel, reason)

    async def result(self) -> BroadcastProgress:
        return await self._handle.result()


def broadcast_workflow_id(broadcast_id: str) -> str:
    return f"crisis:{broadcast_id}"
