"""Clarion's HTTP API (FastAPI): what the SDK does, for services in any language.

Every ``/v1`` endpoint needs an operator token (``Authorization: Bearer <token>``, from
``clarion operators add``) and checks the operator's role; the work itself goes through
the Python SDK acting as that operator, so the API and the SDK apply the same rules.
Errors are JSON: ``{"error": kind, "message": ..., "field": ..., "value": ...}``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from clarion.config import Settings
from clarion.crisis.models import Severity
from clarion.errors import ClarionError, NotFound, ValidationFailed
from clarion.models import Channel, ConsentStatus, Purpose
from clarion.policy.alerts import KEY_PATTERN
from clarion.policy.approval import Role
from clarion.policy.timing import parse_duration
from clarion.store import Store, repo
from clarion.store import journeys as journey_repo
from clarion.store import operators as operators_repo
from clarion.store.operators import OperatorInfo
from starters.api import webhooks
from starters.api.console import router as console_router
from starters.sdk import ApprovalRefused, ClarionClient, JourneyRefused, NotAuthorised

API_VERSION = "1"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SendMessageBody(_Body):
    customer_id: str = Field(min_length=1, max_length=200)
    template: str = Field(min_length=1, max_length=200)
    channels: list[Channel] = Field(default_factory=lambda: [Channel.EMAIL], min_length=1)
    purpose: Purpose | None = None
    context: dict[str, Any] = Field(default_factory=dict)
    message_id: str | None = Field(default=None, min_length=1, max_length=200)
    template_version: int | None = Field(default=None, ge=1)
    acknowledge_within: str | None = None


class MessageAccepted(BaseModel):
    message_id: str
    workflow_id: str


class MessageState(BaseModel):
    message_id: str
    stage: str
    outcome: dict[str, Any] | None = None


class AcknowledgeBody(_Body):
    by: str = Field(default="customer", min_length=1, max_length=100)
    channel: Channel | None = None


class StartJourneyBody(_Body):
    customer_id: str = Field(min_length=1, max_length=200)
    context: dict[str, Any] = Field(default_factory=dict)
    version: int | None = Field(default=None, ge=1)


class JourneyStarted(BaseModel):
    journey: str
    customer_id: str
    workflow_id: str


class EventBody(_Body):
    customer_id: str = Field(min_length=1, max_length=200)
    event: str = Field(min_length=1, max_length=100)
    data: dict[str, Any] = Field(default_factory=dict)
    event_id: str | None = Field(default=None, min_length=1, max_length=200)


class EventResult(BaseModel):
    event_id: str
    delivered: list[str]
    started: list[str]
    skipped: dict[str, str]


class ConsentBody(_Body):
    channel: Channel
    purpose: Purpose
    status: ConsentStatus
    source: str = Field(default="api", min_length=1, max_length=64)
    jurisdiction: str | None = Field(default=None, min_length=1, max_length=16)


class ErasureBody(_Body):
    reference: str = Field(default="", max_length=200)
    request_id: str | None = Field(default=None, min_length=1, max_length=200)
    sweep_after: str = Field(default="5m", description="When the second pass runs")

    @field_validator("sweep_after")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value


class ErasureAccepted(BaseModel):
    request_id: str
    workflow_id: str


class DecisionBody(_Body):
    reason: str = Field(default="", max_length=2000)


class RejectBody(_Body):
    reason: str = Field(min_length=1, max_length=2000, pattern=r"\S", description="Why")


class LaunchBody(_Body):
    title: str = Field(min_length=1, max_length=300)
    template: str = Field(min_length=1, max_length=200)
    segment: str | None = Field(default=None, min_length=1, max_length=2000)
    customers: list[str] | None = Field(default=None, min_length=1, max_length=100_000)
    incident_id: str | None = Field(default=None, min_length=1, max_length=100)
    severity: Severity = Severity.MAJOR
    broadcast_id: str | None = Field(default=None, min_length=1, max_length=100)


class FollowUpBody(_Body):
    template: str = Field(min_length=1, max_length=200)


class BroadcastLaunched(BaseModel):
    broadcast_id: str


class AlertBody(_Body):
    source: str = Field(min_length=1, max_length=100, description="The system that alerts")
    key: str = Field(
        pattern=KEY_PATTERN, description="What is alerting: one incident per key at a time"
    )
    severity: Literal["critical", "major", "minor", "resolved", "ok"] = Field(
        description="resolved (or ok) reports a recovery"
    )
    summary: str = Field(default="", max_length=300)
    affects: str | None = Field(
        default=None, min_length=1, max_length=2000, description="The affected customers"
    )
    type: str = Field(default="", max_length=64, description="The alert type in the rules")


class AlertTaken(BaseModel):
    key: str
    workflow_id: str | None = Field(description="The incident's workflow; null: no open incident")
    note: str = ""


class Problem(BaseModel):
    error: str
    message: str
    field: str | None = None
    value: Any = None


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "The request cannot be carried out as asked"},
    401: {"model": Problem, "description": "No token, or not an active operator's token"},
    403: {"model": Problem, "description": "The operator lacks the role"},
    404: {"model": Problem, "description": "No such thing"},
    409: {"model": Problem, "description": "Refused: the state does not allow it"},
    422: {"model": Problem, "description": "A field is missing or invalid"},
}


def _problem(status: int, error: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(
        status_code=status,
        content=Problem(error=error, message=message, **extra).model_dump(mode="json"),
    )


def create_app(
    settings: Settings, *, temporal: Client | None = None, store: Store | None = None
) -> FastAPI:
    """The API. With ``temporal`` and ``store`` given it uses them (tests, ``clarion dev``);
    without, it connects at startup and closes at shutdown."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        opened: list[Any] = []
        if app.state.store is None:
            app.state.store = Store(settings.database_url)
            opened.append(app.state.store)
            if settings.auto_migrate:
                await app.state.store.migrate()
        if app.state.temporal is None:
            from clarion.temporal import connect

            app.state.temporal = await connect(settings)
        try:
            yield
        finally:
            for thing in opened:
                await thing.close()

    app = FastAPI(
        title="Clarion",
        version=API_VERSION,
        summary="Durable customer communications: messages, journeys, broadcasts, approvals.",
        lifespan=lifespan,
        responses=ERRORS,
    )
    app.state.settings = settings
    app.state.temporal = temporal
    app.state.store = store
    _install_errors(app)
    _install_routes(app)
    app.include_router(webhooks.router)
    app.include_router(console_router)
    return app


def _field_problem(first: Mapping[str, Any]) -> JSONResponse:
    """A 422 naming the field and the value of a pydantic error."""
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
    field = ".".join(loc) or None
    value = first.get("input")
    message = str(first["msg"]).removeprefix("Value error, ")
    return _problem(
        422,
        "invalid_field",
        f"{field or 'body'}: {message}",
        field=field,
        value=value if isinstance(value, str | int | float | bool) or value is None else None,
    )


def _simple(status: int, kind: str) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        return _problem(status, kind, str(exc))

    return handler


# Clarion's errors as problems (the most specific class of an error decides).
SIMPLE_ERRORS: list[tuple[type[Exception], int, str]] = [
    (NotFound, 404, "not_found"),
    (NotAuthorised, 403, "forbidden"),
    (ApprovalRefused, 409, "refused"),
    (JourneyRefused, 409, "refused"),
    (ClarionError, 400, "bad_request"),
]


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        if first.get("type") == "json_invalid":
            return _problem(422, "invalid_json", f"the body is not valid JSON: {first['msg']}")
        return _field_problem(first)

    @app.exception_handler(ValidationError)
    async def _model(request: Request, exc: ValidationError) -> JSONResponse:
        # A value the SDK's own models refuse (e.g. a channel listed twice).
        return _field_problem(exc.errors()[0])

    @app.exception_handler(ValidationFailed)
    async def _validation(request: Request, exc: ValidationFailed) -> JSONResponse:
        value = exc.value if isinstance(exc.value, str | int | float | bool) else str(exc.value)
        return _problem(422, "invalid_field", str(exc), field=exc.field, value=value)

    for error, status, kind in SIMPLE_ERRORS:
        app.add_exception_handler(error, _simple(status, kind))

    @app.exception_handler(WorkflowAlreadyStartedError)
    async def _exists(request: Request, exc: WorkflowAlreadyStartedError) -> JSONResponse:
        # E.g. a broadcast id that is taken: the running one is left alone.
        return _problem(409, "conflict", f"{exc.workflow_id} exists already: choose another id")

    @app.exception_handler(WorkflowUpdateFailedError)
    async def _update_refused(request: Request, exc: WorkflowUpdateFailedError) -> JSONResponse:
        # The workflow's validator refused (e.g. a follow-up before the broadcast dispatches).
        why = str(getattr(exc.cause, "message", exc.cause))
        return _problem(409, "refused", why)

    @app.exception_handler(RPCError)
    async def _rpc(request: Request, exc: RPCError) -> JSONResponse:
        if exc.status is RPCStatusCode.NOT_FOUND:
            return _problem(404, "not_found", str(exc))
        if exc.status is RPCStatusCode.INVALID_ARGUMENT:
            return _problem(400, "bad_request", f"Temporal refused the request: {exc}")
        return _problem(503, "temporal_unavailable", f"Temporal: {exc}")


# Ids in paths: the store and Temporal keep at most 200 characters.
PathId = Annotated[str, PathParam(min_length=1, max_length=200)]


class Caller:
    """The operator behind a request, and an SDK client acting as them."""

    def __init__(self, operator: OperatorInfo, clarion: ClarionClient) -> None:
        self.operator = operator
        self.clarion = clarion


async def _caller(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Caller:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _Unauthorised("send Authorization: Bearer <operator token>")
    state = request.app.state
    async with state.store.session() as session:
        operator = await operators_repo.authenticate(session, token.strip())
    if operator is None:
        raise _Unauthorised("the token is not an active operator's")
    settings = state.settings.model_copy(update={"operator_token": SecretStr(token.strip())})
    return Caller(operator, ClarionClient(state.temporal, settings, store=state.store))


class _Unauthorised(Exception):
    pass


def require(*roles: Role) -> Callable[..., Awaitable[Caller]]:
    """A dependency: the caller, who must hold one of ``roles`` (any role when none)."""

    async def check(caller: Annotated[Caller, Depends(_caller)]) -> Caller:
        if roles and not caller.operator.has(*roles):
            wanted = " or ".join(r.value for r in roles)
            raise NotAuthorised(f"operator {caller.operator.name!r} needs the role {wanted}")
        return caller

    return check


Viewer = Annotated[Caller, Depends(require())]
Operator = Annotated[Caller, Depends(require(Role.OPERATOR))]
Approver = Annotated[Caller, Depends(require())]  # the approval gate checks the level's roles
IncidentManager = Annotated[Caller, Depends(require(Role.INCIDENT_MANAGER))]
Compliance = Annotated[Caller, Depends(require(Role.COMPLIANCE))]
AlertSource = Annotated[Caller, Depends(require(Role.OPERATOR, Role.INCIDENT_MANAGER))]


def _install_routes(app: FastAPI) -> None:
    @app.exception_handler(_Unauthorised)
    async def _unauthorised(request: Request, exc: _Unauthorised) -> JSONResponse:
        response = _problem(401, "unauthorised", str(exc))
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.get("/health", tags=["service"])
    async def health() -> dict[str, str]:
        """Liveness: the API answers (no token needed)."""
        return {"status": "ok"}

    @app.get("/v1/me", tags=["service"])
    async def me(caller: Viewer) -> dict[str, Any]:
        """The operator the token belongs to."""
        return {"name": caller.operator.name, "roles": caller.operator.roles}

    # -- messages

    @app.post("/v1/messages", status_code=202, tags=["messages"])
    async def send_message(body: SendMessageBody, caller: Operator) -> MessageAccepted:
        """Send one message; the same ``message_id`` twice is one message."""
        handle = await caller.clarion.send_message(
            customer_id=body.customer_id,
            template=body.template,
            purpose=body.purpose,
            channels=body.channels,
            context=body.context,
            message_id=body.message_id,
            template_version=body.template_version,
            acknowledge_within=body.acknowledge_within,
        )
        return MessageAccepted(message_id=handle.message_id, workflow_id=handle.workflow_id)

    @app.get("/v1/messages/{message_id}", tags=["messages"])
    async def get_message(message_id: PathId, caller: Viewer) -> MessageState:
        """Where a message is (stage) and, once done, its outcome."""
        handle = caller.clarion.get_message(message_id)
        stage = await handle.stage()
        outcome = await handle.outcome()
        return MessageState(
            message_id=message_id,
            stage=stage,
            outcome=outcome.model_dump(mode="json") if outcome is not None else None,
        )

    @app.post("/v1/messages/{message_id}/acknowledge", status_code=204, tags=["messages"])
    async def acknowledge_message(
        message_id: PathId, body: AcknowledgeBody, caller: Operator
    ) -> None:
        """The recipient confirmed: a message sent with ``acknowledge_within`` stops escalating."""
        await caller.clarion.get_message(message_id).acknowledge(by=body.by, channel=body.channel)

    # -- journeys and events

    @app.post("/v1/journeys/{journey}/runs", status_code=201, tags=["journeys"])
    async def start_journey(
        journey: PathId, body: StartJourneyBody, caller: Operator
    ) -> JourneyStarted:
        """Start a journey for a customer (re-entry rules apply: 409 when refused)."""
        handle = await caller.clarion.start_journey(
            journey, body.customer_id, context=body.context, version=body.version
        )
        return JourneyStarted(journey=journey, customer_id=body.customer_id, workflow_id=handle.id)

    @app.get("/v1/journeys/{journey}/runs/{customer_id}", tags=["journeys"])
    async def journey_status(
        journey: PathId, customer_id: PathId, caller: Viewer
    ) -> dict[str, Any]:
        """A customer's run of a journey: status, current step, history."""
        status = await caller.clarion.journey_status(journey, customer_id)
        return status.model_dump(mode="json")

    @app.post("/v1/events", tags=["journeys"])
    async def send_event(body: EventBody, caller: Operator) -> EventResult:
        """An event about a customer: delivered to their running journeys, and starts the
        journeys it triggers. The same ``event_id`` twice counts once."""
        result = await caller.clarion.send_event(
            body.customer_id, body.event, body.data, event_id=body.event_id
        )
        return EventResult(**asdict(result))

    # -- customers, consent, erasure

    @app.get("/v1/customers/{customer_id}/timeline", tags=["customers"])
    async def timeline(
        customer_id: PathId,
        caller: Viewer,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> dict[str, Any]:
        """A customer's messages and decisions (audit events), consent ledger and journeys."""
        store = caller.clarion.store
        async with store.session() as session:
            customer = await repo.require_customer(session, external_id=customer_id)
            facts = await repo.consent_facts(session, customer=customer)
            events = await repo.audit_events(session, customer_external_id=customer_id, limit=limit)
            runs = await journey_repo.runs_for_customer(session, customer_external_id=customer_id)
        return {
            "customer_id": customer_id,
            "consent": [f.model_dump(mode="json") for f in facts],
            "journeys": [
                {
                    "journey": r.journey,
                    "version": r.version,
                    "status": r.status,
                    "current_step": r.current_step,
                    "started_at": r.started_at.isoformat(),
                    "ended_at": r.ended_at.isoformat() if r.ended_at else None,
                }
                for r in runs
            ],
            "events": [
                {
                    "at": e.at.isoformat(),
                    "kind": e.kind,
                    "message_id": e.message_id,
                    "channel": e.channel,
                    "actor": e.actor,
                    "reason": e.reason,
                    "detail": e.detail,
                }
                for e in events
            ],
        }

    @app.post("/v1/customers/{customer_id}/consent", status_code=201, tags=["customers"])
    async def record_consent(
        customer_id: PathId, body: ConsentBody, caller: Operator
    ) -> dict[str, Any]:
        """Append to the consent ledger (an opt-in or an opt-out), audited."""
        async with caller.clarion.store.transaction() as session:
            customer = await repo.require_customer(session, external_id=customer_id)
            record = await repo.change_consent(
                session,
                customer=customer,
                channel=body.channel,
                purpose=body.purpose,
                status=body.status,
                source=body.source,
                actor=caller.operator.name,
                jurisdiction=body.jurisdiction,
            )
            return {
                "customer_id": customer_id,
                "channel": record.channel,
                "purpose": record.purpose,
                "status": record.status,
                "source": record.source,
                "jurisdiction": record.jurisdiction,
                "recorded_at": record.recorded_at.isoformat(),
            }

    @app.post("/v1/customers/{customer_id}/erasure", status_code=202, tags=["customers"])
    async def request_erasure(
        customer_id: PathId, body: ErasureBody, caller: Compliance
    ) -> ErasureAccepted:
        """Forget a customer (right to be forgotten); follow it at /v1/erasures/{id}."""
        handle = await caller.clarion.erase_customer(
            customer_id,
            reference=body.reference,
            request_id=body.request_id,
            sweep_after=body.sweep_after,
        )
        return ErasureAccepted(request_id=handle.request_id, workflow_id=handle.workflow_id)

    @app.get("/v1/erasures/{request_id}", tags=["customers"])
    async def erasure(request_id: PathId, caller: Compliance) -> dict[str, Any]:
        """An erasure's status, and its receipt once done."""
        return await caller.clarion.erasure_record(request_id)

    # -- approvals

    @app.get("/v1/approvals", tags=["approvals"])
    async def approvals(
        caller: Viewer,
        status: Annotated[
            Literal["pending", "approved", "rejected", "expired", "cancelled", "all"], Query()
        ] = "pending",
    ) -> list[dict[str, Any]]:
        """Approval requests, oldest first (pending ones by default)."""
        found = await caller.clarion.approvals(status=None if status == "all" else status)
        return [r.as_json() for r in found]

    @app.get("/v1/approvals/{request_id}", tags=["approvals"])
    async def approval(request_id: PathId, caller: Viewer) -> dict[str, Any]:
        """One request with its preview and decisions."""
        return (await caller.clarion.approval(request_id)).as_json()

    @app.post("/v1/approvals/{request_id}/approve", tags=["approvals"])
    async def approve(request_id: PathId, body: DecisionBody, caller: Approver) -> dict[str, str]:
        """Approve (the gate checks the role, four-eyes and the state: 409 when refused)."""
        state = await caller.clarion.approve(request_id, reason=body.reason)
        return {"request_id": request_id, "state": state}

    @app.post("/v1/approvals/{request_id}/reject", tags=["approvals"])
    async def reject(request_id: PathId, body: RejectBody, caller: Approver) -> dict[str, str]:
        """Reject, with a reason."""
        state = await caller.clarion.reject(request_id, reason=body.reason)
        return {"request_id": request_id, "state": state}

    # -- crisis broadcasts

    @app.post("/v1/broadcasts", status_code=202, tags=["broadcasts"])
    async def launch(body: LaunchBody, caller: IncidentManager) -> BroadcastLaunched:
        """Launch a crisis broadcast to a segment or a list of customers (not both)."""
        handle = await caller.clarion.launch_broadcast(
            title=body.title,
            template=body.template,
            segment=body.segment,
            customers=body.customers,
            incident_id=body.incident_id,
            severity=body.severity,
            broadcast_id=body.broadcast_id,
        )
        return BroadcastLaunched(broadcast_id=handle.broadcast_id)

    @app.get("/v1/broadcasts/{broadcast_id}", tags=["broadcasts"])
    async def broadcast_progress(broadcast_id: PathId, caller: Viewer) -> dict[str, Any]:
        """Live progress: counts by tier, channel and status, rate and ETA."""
        progress = await caller.clarion.broadcast(broadcast_id).progress()
        return progress.model_dump(mode="json")

    @app.post("/v1/broadcasts/{broadcast_id}/updates", tags=["broadcasts"])
    async def broadcast_update(
        broadcast_id: PathId, body: FollowUpBody, caller: IncidentManager
    ) -> dict[str, Any]:
        """Send a follow-up update to everyone reached so far; returns its generation."""
        gen = await caller.clarion.broadcast(broadcast_id).update(body.template)
        return {"broadcast_id": broadcast_id, "generation": gen}

    @app.post("/v1/broadcasts/{broadcast_id}/resolution", tags=["broadcasts"])
    async def broadcast_resolve(
        broadcast_id: PathId, body: FollowUpBody, caller: IncidentManager
    ) -> dict[str, Any]:
        """Resolve the incident: a last message, then the broadcast ends."""
        gen = await caller.clarion.broadcast(broadcast_id).resolve(body.template)
        return {"broadcast_id": broadcast_id, "generation": gen}

    # -- alerts and incidents

    @app.post("/v1/alerts", status_code=202, tags=["alerts"])
    async def ingest_alert(body: AlertBody, caller: AlertSource) -> AlertTaken:
        """Take an alert: a firing one opens or joins the incident of its key (debounced,
        then proposed to the incident managers); resolved reports a recovery."""
        receipt = await caller.clarion.ingest_alert(
            source=body.source,
            key=body.key,
            severity=body.severity,
            summary=body.summary,
            affects=body.affects,
            alert_type=body.type,
        )
        return AlertTaken(key=receipt.key, workflow_id=receipt.workflow_id, note=receipt.note)

    @app.get("/v1/incidents", tags=["alerts"])
    async def incidents(
        caller: Viewer,
        key: Annotated[str | None, Query(max_length=100)] = None,
        status: Annotated[str | None, Query(max_length=32)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        """Incidents opened by alerts, newest first, with the time from alert to launch."""
        return await caller.clarion.incidents(key=key, status=status, limit=limit)

    @app.get("/v1/incidents/{incident_id}", tags=["alerts"])
    async def incident(incident_id: PathId, caller: Viewer) -> dict[str, Any]:
        """One incident: status, proposal, approvers and times."""
        return await caller.clarion.incident(incident_id)

    # -- audit

    @app.get("/v1/audit", tags=["audit"])
    async def audit(
        caller: Viewer,
        customer_id: str | None = None,
        message_id: str | None = None,
        kind: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> list[dict[str, Any]]:
        """Audit events, oldest first, filtered by customer, message or kind."""
        async with caller.clarion.store.session() as session:
            events = await repo.audit_events(
                session,
                customer_external_id=customer_id,
                message_id=message_id,
                kind=kind,
                limit=limit,
            )
        return [
            {
                "seq": getattr(e, "seq", None),
                "at": e.at.isoformat(),
                "kind": e.kind,
                "customer_id": e.customer_external_id,
                "message_id": e.message_id,
                "workflow_id": e.workflow_id,
                "channel": e.channel,
                "actor": e.actor,
                "reason": e.reason,
                "detail": e.detail,
            }
            for e in events
        ]
