"""The operations console: server-rendered pages over the same SDK the API uses.

An operator logs in by pasting their API token; the console keeps it in a signed,
HttpOnly, SameSite=Strict cookie and acts as that operator through ``ClarionClient``, so
roles, four-eyes and every other rule apply exactly as in the API. Every POST form
carries a CSRF token derived from the session.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import SecretStr

from clarion.crisis.models import BroadcastState, Severity
from clarion.errors import ClarionError, NotFound
from clarion.policy.approval import Role
from clarion.store import journeys as journey_repo
from clarion.store import operators as operators_repo
from clarion.store import repo
from clarion.store.operators import OperatorInfo
from starters.sdk import ApprovalRefused, ClarionClient, NotAuthorised

router = APIRouter(prefix="/console", include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))

COOKIE = "clarion_console"
LOGIN_COOKIE = "clarion_console_login"
SESSION_MAX_AGE_S = 12 * 3600
# Without a configured console_secret, sessions are signed with a key of this process:
# they end when it restarts, and are not shared between processes.
_PROCESS_SECRET = secrets.token_bytes(32)
# A broadcast in these states has reached everyone it will (100% even with no audience).
FINISHED = frozenset(
    {
        BroadcastState.ACTIVE,
        BroadcastState.RESOLVED,
        BroadcastState.CANCELLED,
        BroadcastState.REJECTED,
    }
)
# Who may decide on an approval request: any role an approval ladder can name.
DECIDERS = (Role.APPROVER, Role.COMPLIANCE, Role.INCIDENT_MANAGER)


def _secret(request: Request) -> bytes:
    configured: SecretStr = request.app.state.settings.console_secret
    value = configured.get_secret_value()
    return hashlib.sha256(value.encode("utf-8")).digest() if value else _PROCESS_SECRET


def _sign(secret: bytes, purpose: str, value: str) -> str:
    return hmac.new(secret, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()


def session_cookie(secret: bytes, token: str) -> str:
    """The cookie value for ``token``: the token (base64) and its HMAC."""
    encoded = base64.urlsafe_b64encode(token.encode("utf-8")).decode("ascii")
    return f"{encoded}.{_sign(secret, 'session', encoded)}"


def token_from_cookie(secret: bytes, cookie: str | None) -> str | None:
    """The token in a cookie whose signature holds, else None."""
    if not cookie or "." not in cookie:
        return None
    encoded, _, signature = cookie.rpartition(".")
    if not hmac.compare_digest(signature, _sign(secret, "session", encoded)):
        return None
    try:
        return base64.urlsafe_b64decode(encoded.encode("ascii")).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None


@dataclass
class Console:
    """The logged-in operator, an SDK client acting as them, and the session's CSRF token."""

    operator: OperatorInfo
    clarion: ClarionClient
    csrf: str


async def _login_for(request: Request) -> Console | None:
    secret = _secret(request)
    cookie = request.cookies.get(COOKIE)
    token = token_from_cookie(secret, cookie)
    if token is None or cookie is None:
        return None
    state = request.app.state
    async with state.store.session() as session:
        operator = await operators_repo.authenticate(session, token)
    if operator is None:
        return None
    settings = state.settings.model_copy(update={"operator_token": SecretStr(token)})
    return Console(
        operator=operator,
        clarion=ClarionClient(state.temporal, settings, store=state.store),
        csrf=_sign(secret, "csrf", cookie),
    )


def _to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/console/login?next={quote(target, safe='')}", status_code=303)


def _page(
    request: Request,
    name: str,
    console: Console | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    values = {"me": console.operator if console else None, "csrf": console.csrf if console else ""}
    return templates.TemplateResponse(request, name, {**values, **context}, status_code=status_code)


def _forbidden(request: Request, console: Console, message: str) -> HTMLResponse:
    return _page(request, "forbidden.html", console, status_code=403, message=message)


async def _who(request: Request, *roles: Role) -> Console | Response:
    """The logged-in operator holding one of ``roles`` (any role when none); otherwise the
    response to send instead: a redirect to login, or 403."""
    console = await _login_for(request)
    if console is None:
        return _to_login(request)
    if roles and not console.operator.has(*roles):
        wanted = " or ".join(r.value for r in roles)
        return _forbidden(
            request, console, f"operator {console.operator.name!r} needs the role {wanted}"
        )
    return console


async def _form(request: Request) -> dict[str, str]:
    body = (await request.body()).decode("utf-8", errors="replace")
    return {k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()}


async def _posted(request: Request, *roles: Role) -> tuple[Console, dict[str, str]] | Response:
    """A POST from a logged-in operator with ``roles`` and a valid CSRF token."""
    who = await _who(request, *roles)
    if isinstance(who, Response):
        return who
    form = await _form(request)
    if not hmac.compare_digest(form.get("csrf", ""), who.csrf):
        return _forbidden(request, who, "the form's CSRF token does not match the session")
    return who, form


def _safe_next(target: str | None) -> str:
    if target and target.startswith("/console") and not target.startswith("//"):
        return target
    return "/console/approvals"


# -- login


def _login_form(
    request: Request, target: str, error: str | None = None, status_code: int = 200
) -> HTMLResponse:
    """The login page, with a fresh pre-session nonce (a cookie) and the CSRF token tied
    to it, so a login form posted from elsewhere is refused."""
    nonce = secrets.token_hex(16)
    response = _page(
        request,
        "login.html",
        None,
        status_code=status_code,
        next=target,
        error=error,
        login_csrf=_sign(_secret(request), "login", nonce),
    )
    response.set_cookie(
        LOGIN_COOKIE,
        nonce,
        max_age=3600,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/console",
    )
    return response


@router.get("/login")
async def login_page(request: Request, next: str | None = None) -> HTMLResponse:
    return _login_form(request, _safe_next(next))


@router.post("/login", response_model=None)
async def login(request: Request) -> Response:
    form = await _form(request)
    token = form.get("token", "").strip()
    target = _safe_next(form.get("next"))
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    expected = _sign(_secret(request), "login", nonce)
    if not nonce or not hmac.compare_digest(form.get("csrf", ""), expected):
        return _login_form(
            request, target, "The login form expired; please log in again.", status_code=403
        )
    operator = None
    if token:
        async with request.app.state.store.session() as session:
            operator = await operators_repo.authenticate(session, token)
    if operator is None:
        return _login_form(
            request, target, "That token is not an active operator's token.", status_code=401
        )
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        session_cookie(_secret(request), token),
        max_age=SESSION_MAX_AGE_S,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/console",
    )
    response.delete_cookie(LOGIN_COOKIE, path="/console")
    return response


@router.post("/logout", response_model=None)
async def logout(request: Request) -> Response:
    posted = await _posted(request)
    if isinstance(posted, Response):
        return posted
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/console")
    return response


@router.get("", response_model=None)
async def home(request: Request) -> Response:
    return RedirectResponse("/console/approvals", status_code=303)


# -- approvals


@router.get("/approvals", response_model=None)
async def approvals_page(request: Request) -> Response:
    who = await _who(request)
    if isinstance(who, Response):
        return who
    return await _approvals(request, who)


async def _approvals(
    request: Request,
    console: Console,
    *,
    notice: str | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    pending = await console.clarion.approvals(status="pending")
    return _page(
        request,
        "approvals.html",
        console,
        status_code=status_code,
        requests=pending,
        may_decide=console.operator.has(*DECIDERS),
        notice=notice,
        error=error,
    )


async def _decide(request: Request, request_id: str, *, approve: bool) -> Response:
    posted = await _posted(request, *DECIDERS)
    if isinstance(posted, Response):
        return posted
    console, form = posted
    reason = form.get("reason", "").strip()
    try:
        if approve:
            state = await console.clarion.approve(request_id, reason=reason)
        else:
            if not reason:
                raise ApprovalRefused("a rejection needs a reason")
            state = await console.clarion.reject(request_id, reason=reason)
    except NotAuthorised as exc:
        return _forbidden(request, console, str(exc))
    except (ApprovalRefused, NotFound, ClarionError) as exc:
        return await _approvals(
            request, console, error=f"{request_id}: refused: {exc}", status_code=409
        )
    return await _approvals(request, console, notice=f"{request_id}: {state}")


@router.post("/approvals/{request_id}/approve", response_model=None)
async def approve(request: Request, request_id: str) -> Response:
    return await _decide(request, request_id, approve=True)


@router.post("/approvals/{request_id}/reject", response_model=None)
async def reject(request: Request, request_id: str) -> Response:
    return await _decide(request, request_id, approve=False)


# -- crisis


@router.get("/crisis", response_model=None)
async def crisis_page(request: Request) -> Response:
    who = await _who(request, Role.INCIDENT_MANAGER)
    if isinstance(who, Response):
        return who
    return _crisis_form(request, who, {}, None)


def _crisis_form(
    request: Request, console: Console, form: dict[str, str], error: str | None, status: int = 200
) -> HTMLResponse:
    return _page(
        request,
        "crisis.html",
        console,
        status_code=status,
        form=form,
        error=error,
        severities=[s.value for s in Severity],
    )


@router.post("/crisis", response_model=None)
async def launch(request: Request) -> Response:
    posted = await _posted(request, Role.INCIDENT_MANAGER)
    if isinstance(posted, Response):
        return posted
    console, form = posted
    segment = form.get("segment", "").strip() or None
    customers = [c for c in re.split(r"[\s,]+", form.get("customers", "")) if c] or None
    title = form.get("title", "").strip()
    template = form.get("template", "").strip()
    if not title or not template:
        return _crisis_form(request, console, form, "A title and a template are needed.", 422)
    if (segment is None) == (customers is None):
        return _crisis_form(
            request, console, form, "Give either a segment or customer ids (not both).", 422
        )
    try:
        handle = await console.clarion.launch_broadcast(
            title=title,
            template=template,
            segment=segment,
            customers=customers,
            severity=form.get("severity") or Severity.MAJOR,
        )
    except NotAuthorised as exc:
        return _forbidden(request, console, str(exc))
    except (ClarionError, ValueError) as exc:
        return _crisis_form(request, console, form, str(exc), 422)
    return RedirectResponse(f"/console/crisis/{quote(handle.broadcast_id)}", status_code=303)


@router.get("/crisis/{broadcast_id}", response_model=None)
async def broadcast_page(request: Request, broadcast_id: str) -> Response:
    who = await _who(request)
    if isinstance(who, Response):
        return who
    progress = await _progress(who, broadcast_id)
    return _page(request, "broadcast.html", who, broadcast_id=broadcast_id, progress=progress)


@router.get("/crisis/{broadcast_id}/progress.json", response_model=None)
async def broadcast_progress(request: Request, broadcast_id: str) -> Response:
    console = await _login_for(request)
    if console is None:
        return JSONResponse({"error": "unauthorised"}, status_code=401)
    progress = await _progress(console, broadcast_id)
    if progress is None:
        return JSONResponse({"error": "not_found"}, status_code=404)
    return JSONResponse(progress)


async def _progress(console: Console, broadcast_id: str) -> dict[str, Any] | None:
    from temporalio.service import RPCError

    try:
        progress = await console.clarion.broadcast(broadcast_id).progress()
    except RPCError:
        return None
    data = progress.model_dump(mode="json")
    data["percent"] = round(100 * progress.done / progress.total) if progress.total else 0
    if progress.total == 0 and progress.state in FINISHED:
        data["percent"] = 100
    return data


# -- customers


@router.get("/customers", response_model=None)
async def customers_page(request: Request, customer_id: str | None = None) -> Response:
    who = await _who(request)
    if isinstance(who, Response):
        return who
    if customer_id and customer_id.strip():
        return RedirectResponse(
            f"/console/customers/{quote(customer_id.strip(), safe='')}", status_code=303
        )
    return _page(request, "customer_search.html", who, error=None)


@router.get("/customers/{customer_id}", response_model=None)
async def customer_page(request: Request, customer_id: str) -> Response:
    who = await _who(request)
    if isinstance(who, Response):
        return who
    store = who.clarion.store
    async with store.session() as session:
        try:
            customer = await repo.require_customer(session, external_id=customer_id)
        except NotFound as exc:
            return _page(request, "customer_search.html", who, status_code=404, error=str(exc))
        facts = await repo.consent_facts(session, customer=customer)
        events = await repo.audit_events(session, customer_external_id=customer_id, limit=200)
        runs = await journey_repo.runs_for_customer(session, customer_external_id=customer_id)
    return _page(
        request,
        "customer.html",
        who,
        customer_id=customer_id,
        consent=facts,
        runs=runs,
        events=events,
    )


# -- audit


@router.get("/audit", response_model=None)
async def audit_page(
    request: Request,
    customer_id: str = "",
    message_id: str = "",
    kind: str = "",
) -> Response:
    who = await _who(request)
    if isinstance(who, Response):
        return who
    searched = bool(customer_id or message_id or kind)
    events: Sequence[Any] = []
    if searched:
        async with who.clarion.store.session() as session:
            events = await repo.audit_events(
                session,
                customer_external_id=customer_id.strip() or None,
                message_id=message_id.strip() or None,
                kind=kind.strip() or None,
                limit=500,
            )
    return _page(
        request,
        "audit.html",
        who,
        query={"customer_id": customer_id, "message_id": message_id, "kind": kind},
        searched=searched,
        events=events,
    )
