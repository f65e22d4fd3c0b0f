"""Provider webhooks and the links customers click: no operator token, other proofs.

- ``POST /webhooks/twilio/status`` and ``POST /webhooks/twilio/inbound`` are called by
  Twilio and carry ``X-Twilio-Signature``, an HMAC of the public URL and the form fields
  under the account's auth token; a missing or wrong signature is refused (403) before
  anything is read or changed.
- ``/unsubscribe/{token}`` and ``/ack/{token}`` carry signed, expiring tokens (see
  clarion.unsubscribe and clarion.crisis.acks).

See docs/webhooks.md for pointing Twilio at them.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Annotated, Any
from xml.sax.saxutils import escape

from fastapi import APIRouter, Header, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import SecretStr
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from twilio.request_validator import RequestValidator

from clarion.config import Settings
from clarion.crisis.acks import AckTokenError, verify_ack_token
from clarion.errors import NotFound
from clarion.inbound import handle_inbound_sms
from clarion.models import ProviderFailure
from clarion.policy.keywords import KeywordAction
from clarion.status_callbacks import record_provider_status
from clarion.store import Store
from clarion.temporal import workflow_id_for_message
from clarion.unsubscribe import UnsubscribeTokenError, apply_unsubscribe, verify_unsubscribe_token
from starters.sdk import ClarionClient
from workflows.deliver import DeliverMessageWorkflow

router = APIRouter()

SMS_REPLY_EVENT = "sms_reply"
ONE_CLICK = "List-Unsubscribe=One-Click"
TWIML = "text/xml"


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def _service(request: Request) -> ClarionClient:
    """An SDK client acting as Clarion itself (webhooks have no operator)."""
    settings = _settings(request).model_copy(update={"operator_token": SecretStr("")})
    temporal: Client = request.app.state.temporal
    return ClarionClient(temporal, settings, store=_store(request))


def _now() -> datetime:
    return datetime.now(UTC)


def _problem(status: int, error: str, message: str) -> JSONResponse:
    """The API's JSON problem shape (see starters.api.app)."""
    body = {"error": error, "message": message, "field": None, "value": None}
    return JSONResponse(status_code=status, content=body)


def _refused(message: str) -> JSONResponse:
    return _problem(403, "forbidden", message)


def _bad(message: str) -> JSONResponse:
    return _problem(400, "bad_request", message)


def public_url(settings: Settings, request: Request) -> str:
    """The URL Twilio was given for this endpoint: what its signature covers. Behind a
    proxy the request's own host is not the public one, so it comes from the settings."""
    url = settings.public_base_url.rstrip("/") + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    return url


async def _signed_form(request: Request, signature: str | None) -> dict[str, str] | None:
    """The form fields of a request Twilio signed; None when the signature is missing or
    does not match (or no auth token is configured to check it with)."""
    settings = _settings(request)
    token = settings.twilio_auth_token.get_secret_value()
    if not token or not signature:
        return None
    form = {key: value for key, value in (await request.form()).items() if isinstance(value, str)}
    if not RequestValidator(token).validate(public_url(settings, request), form, signature):
        return None
    return form


Signature = Annotated[str | None, Header(alias="X-Twilio-Signature")]


@router.post(
    "/webhooks/twilio/status",
    status_code=204,
    tags=["webhooks"],
    summary="Twilio message status callback",
    responses={204: {"description": "Recorded (or a repeat, or an unknown message)"}},
)
async def twilio_status(request: Request, x_twilio_signature: Signature = None) -> Response:
    """Record a status Twilio reports for a sent SMS; undelivered and failed make a message
    that still waits for an acknowledgement move on to its next channel."""
    form = await _signed_form(request, x_twilio_signature)
    if form is None:
        return _refused("missing or invalid X-Twilio-Signature")
    sid, status = form.get("MessageSid", ""), form.get("MessageStatus", "")
    if not sid or not status:
        return _bad("MessageSid and MessageStatus are required")
    update = await record_provider_status(
        _store(request),
        provider="twilio",
        provider_message_id=sid,
        status=status,
        error_code=form.get("ErrorCode", ""),
    )
    # Only a DeliverMessage workflow falls back; journeys and broadcasts send otherwise.
    if (
        update is not None
        and update.failed
        and _is_message_workflow(update.workflow_id, update.message_id)
    ):
        temporal: Client = request.app.state.temporal
        handle = temporal.get_workflow_handle(update.workflow_id)
        try:
            await handle.signal(
                DeliverMessageWorkflow.provider_failed,
                ProviderFailure(
                    channel=update.channel,
                    provider_message_id=sid,
                    status=update.status,
                    error_code=update.error_code,
                ),
            )
        except RPCError as exc:  # the message is done: nothing left to fall back to
            if exc.status not in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
                raise
    return Response(status_code=204)


def _is_message_workflow(workflow_id: str, message_id: str) -> bool:
    return workflow_id == workflow_id_for_message(message_id)


def twiml(reply: str | None) -> Response:
    body = f"<Response><Message>{escape(reply)}</Message></Response>" if reply else "<Response/>"
    return Response(content=f'<?xml version="1.0" encoding="UTF-8"?>{body}', media_type=TWIML)


@router.post(
    "/webhooks/twilio/inbound",
    tags=["webhooks"],
    summary="Twilio inbound SMS",
    response_class=Response,
    responses={200: {"content": {TWIML: {}}, "description": "TwiML: the reply, if any"}},
)
async def twilio_inbound(request: Request, x_twilio_signature: Signature = None) -> Response:
    """STOP, START and HELP keywords; any other text acknowledges the crisis broadcasts
    that reached the number and becomes an ``sms_reply`` event for each customer with it."""
    form = await _signed_form(request, x_twilio_signature)
    if form is None:
        return _refused("missing or invalid X-Twilio-Signature")
    sender, body, sid = form.get("From", ""), form.get("Body", ""), form.get("MessageSid", "")
    if not sender or not sid:
        return _bad("From and MessageSid are required")
    result = await handle_inbound_sms(_store(request), _settings(request), sender, body)
    if result.action is KeywordAction.NONE and result.customers:
        clarion = _service(request)
        for customer_id in result.customers:
            await clarion.send_event(
                customer_id,
                SMS_REPLY_EVENT,
                {"body": body, "message_sid": sid},
                event_id=f"sms:{sid}",
            )
    return twiml(result.reply)


def _page(title: str, text: str, *, status: int = 200, form: str = "") -> HTMLResponse:
    return HTMLResponse(
        status_code=status,
        content=(
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title></head>"
            '<body style="font-family: sans-serif; max-width: 32rem; margin: 3rem auto">'
            f"<h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>{form}</body></html>"
        ),
    )


PAGES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/html": {}}, "description": "A page for the customer"},
    400: {"content": {"text/html": {}}, "description": "The link is invalid or expired"},
}


@router.get(
    "/unsubscribe/{token}",
    tags=["links"],
    summary="Unsubscribe confirmation page",
    response_class=HTMLResponse,
    responses=PAGES,
)
async def unsubscribe_page(request: Request, token: str) -> HTMLResponse:
    """Shows a button that unsubscribes; a GET changes nothing, since mail clients and
    scanners fetch links nobody clicked."""
    settings = _settings(request)
    try:
        verify_unsubscribe_token(settings.unsubscribe_secret.get_secret_value(), token, _now())
    except UnsubscribeTokenError as exc:
        return _page("Link not valid", f"This unsubscribe link cannot be used: {exc}.", status=400)
    button = (
        '<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>'
    )
    return _page("Unsubscribe", "Stop receiving these marketing emails?", form=button)


@router.post(
    "/unsubscribe/{token}",
    tags=["links"],
    summary="One-click unsubscribe (RFC 8058)",
    response_class=HTMLResponse,
    responses=PAGES,
)
async def unsubscribe(request: Request, token: str) -> HTMLResponse:
    """Records the opt-out; the body is ``List-Unsubscribe=One-Click``, as mailbox providers
    send it (and the confirmation page's button does)."""
    form = await request.form()
    if form.get("List-Unsubscribe") != "One-Click":
        return _page("Not unsubscribed", f"The request must carry {ONE_CLICK}.", status=400)
    try:
        await apply_unsubscribe(_store(request), _settings(request), token, _now())
    except UnsubscribeTokenError as exc:
        return _page("Link not valid", f"This unsubscribe link cannot be used: {exc}.", status=400)
    except NotFound:
        return _page("Link not valid", "This unsubscribe link is no longer valid.", status=400)
    return _page("Unsubscribed", "You will not receive these marketing emails any more.")


@router.get(
    "/ack/{token}",
    tags=["links"],
    summary="Acknowledgement page of a crisis message",
    response_class=HTMLResponse,
    responses=PAGES,
)
async def acknowledge_page(request: Request, token: str) -> HTMLResponse:
    """The signed link in crisis emails shows a button that acknowledges. A GET records
    nothing: mail scanners fetch every link, and an acknowledgement they made up would
    stop the escalation to a call for someone who never read the message."""
    secret = _settings(request).ack_secret.get_secret_value()
    try:
        verify_ack_token(secret, token, _now())
    except AckTokenError as exc:
        return _page("Link not valid", f"This link cannot be used: {exc}.", status=400)
    button = '<form method="post"><button type="submit">I received this message</button></form>'
    return _page("Please confirm", "Let us know that you received our message.", form=button)


@router.post(
    "/ack/{token}",
    tags=["links"],
    summary="Acknowledge a crisis message",
    response_class=HTMLResponse,
    responses=PAGES,
)
async def acknowledge(request: Request, token: str) -> HTMLResponse:
    """Records that the recipient got the message (a second time changes nothing)."""
    secret = _settings(request).ack_secret.get_secret_value()
    try:
        broadcast_id, customer_id = verify_ack_token(secret, token, _now())
    except AckTokenError as exc:
        return _page("Link not valid", f"This link cannot be used: {exc}.", status=400)
    await _service(request).broadcast(broadcast_id).acknowledge(customer_id)
    return _page("Thank you", "We have recorded that you received our message.")
