"""The operations console: sessions and CSRF over httpx, then the pages in headless
Chromium (Playwright) against the app served by uvicorn on loopback, over a real worker
and the dev server. The browser tests take screenshots; with CLARION_SCREENSHOTS=1 they
are saved under docs/images/ for docs/console.md (else in a temporary folder, so a test
run leaves the tracked images alone)."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from clarion.models import Channel, ConsentStatus, OutcomeStatus, Purpose
from clarion.store import journeys as journey_repo
from clarion.store import operators as operators_repo
from starters.api import create_app
from tests.conftest import ROOT, Stack, add_customer, operator_client, uid
from tests.integration.test_approvals import pending
from tests.support.processes import wait_until

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
IMAGES = ROOT / "docs" / "images"
SHOTS = Path(tempfile.gettempdir()) / "clarion-console-shots"
HAVE_CHROMIUM = CHROMIUM.exists()


async def token_for(stack: Stack, *roles: str) -> str:
    async with stack.store.transaction() as session:
        _, token = await operators_repo.add_operator(
            session, name=uid("console"), roles=list(roles), email=None
        )
    return token


# -- sessions and CSRF, without a browser


@pytest.fixture
async def http(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(stack.settings, temporal=stack.client, store=stack.store)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://clarion.test") as client:
        yield client


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


async def login_csrf(http: httpx.AsyncClient) -> str:
    """Open the login page (which sets its pre-session cookie) and read its CSRF token."""
    return csrf_of((await http.get("/console/login")).text)


async def test_sessions_csrf_and_roles(http: httpx.AsyncClient, stack: Stack) -> None:
    for path in ("/console/approvals", "/console/crisis", "/console/audit", "/console/customers"):
        response = await http.get(path)
        assert response.status_code == 303 and response.headers["location"].startswith(
            "/console/login"
        ), path
    viewer = await token_for(stack, "viewer")
    # The login form carries a token tied to a pre-session cookie: a form posted from
    # elsewhere (no cookie, or another form's token) is refused.
    blind = await http.post("/console/login", data={"token": viewer, "csrf": "0" * 64})
    assert blind.status_code == 403 and "clarion_console=" not in blind.headers.get(
        "set-cookie", ""
    )
    bad = await http.post(
        "/console/login", data={"token": "not-a-token", "csrf": await login_csrf(http)}
    )
    assert bad.status_code == 401 and "not an active operator" in bad.text
    http.cookies.set("clarion_console", "dG9rZW4.forged", path="/console")
    assert (await http.get("/console/approvals")).status_code == 303
    http.cookies.clear()

    login = await http.post(
        "/console/login",
        data={"token": viewer, "next": "/console/audit?kind=sent", "csrf": await login_csrf(http)},
    )
    assert login.status_code == 303 and login.headers["location"] == "/console/audit?kind=sent"
    cookie = login.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and viewer not in cookie
    page = await http.get("/console/approvals")
    assert page.status_code == 200 and "Approvals queue" in page.text
    csrf = csrf_of(page.text)
    # Roles: a viewer may look, not launch or decide.
    assert (await http.get("/console/crisis")).status_code == 403
    launch = await http.post(
        "/console/crisis",
        data={"csrf": csrf, "title": "t", "template": "crisis-outage", "customers": "c"},
    )
    assert launch.status_code == 403
    decide = await http.post("/console/approvals/x/approve", data={"csrf": csrf})
    assert decide.status_code == 403 and "needs the role" in decide.text
    # CSRF: a form without the session's token is refused, logout included.
    other = await http.post("/console/logout", data={"csrf": "0" * 64})
    assert other.status_code == 403 and "CSRF" in other.text
    out = await http.post("/console/logout", data={"csrf": csrf})
    assert out.status_code == 303
    assert (await http.get("/console/approvals")).status_code == 303
    # An open redirect is not followed after login.
    away = await http.post(
        "/console/login",
        data={"token": viewer, "next": "https://evil.test/", "csrf": await login_csrf(http)},
    )
    assert away.headers["location"] == "/console/approvals"


# -- in the browser


@pytest.fixture
async def console_url(stack: Stack) -> AsyncIterator[str]:
    app = create_app(stack.settings, temporal=stack.client, store=stack.store)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    for _ in range(100):
        if server.started:
            break
        await asyncio.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if not HAVE_CHROMIUM:
        pytest.skip("/usr/bin/chromium is missing (apt-get install -y chromium chromium-driver)")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            await chromium.close()


async def logged_in(browser: Any, base: str, token: str, path: str = "/console/approvals") -> Any:
    """A fresh browser context logged in with ``token``, on ``path``."""
    context = await browser.new_context(viewport={"width": 1200, "height": 900})
    page = await context.new_page()
    await page.goto(base + path)
    assert "/console/login" in page.url
    await page.get_by_label("Operator token").fill(token)
    await page.get_by_role("button", name="Log in").click()
    await page.wait_for_url(re.compile(re.escape(base + path.split("?")[0])))
    return page


async def shoot(page: Any, name: str) -> None:
    folder = IMAGES if os.environ.get("CLARION_SCREENSHOTS") == "1" else SHOTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"console-{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 1000, path


async def test_approve_in_the_browser_and_a_viewer_gets_403(
    stack: Stack, console_url: str, browser: Any
) -> None:
    requester = await operator_client(stack, "operator")
    customer = await add_customer(stack.store, name="Ada Console")
    handle = await requester.send_message(
        customer_id=customer.external_id, template="test-billing", context={"invoice": "I-77"}
    )
    await pending(stack, handle.message_id)

    login_page = await (await browser.new_context()).new_page()
    await login_page.goto(console_url + "/console/login")
    await shoot(login_page, "login")

    approver = await token_for(stack, "approver")
    page = await logged_in(browser, console_url, approver)
    card = page.locator(f'section[data-request="{handle.message_id}"]')
    await card.get_by_text("Your invoice I-77").wait_for()
    await card.get_by_label("Reason (required to reject)").fill("amount checked")
    await shoot(page, "approvals")

    # A viewer sees the queue, has no buttons, and a forged decision is refused with 403.
    viewer = await logged_in(browser, console_url, await token_for(stack, "viewer"))
    viewer_card = viewer.locator(f'section[data-request="{handle.message_id}"]')
    await viewer_card.get_by_text("Your roles do not allow").wait_for()
    async with viewer.expect_response(lambda r: r.url.endswith("/approve")) as answer:
        await viewer.evaluate(
            """(id) => {
                const form = document.createElement("form");
                form.method = "post";
                form.action = "/console/approvals/" + encodeURIComponent(id) + "/approve";
                const csrf = document.querySelector('input[name="csrf"]').cloneNode();
                form.appendChild(csrf);
                document.body.appendChild(form);
                form.submit();
            }""",
            handle.message_id,
        )
    assert (await answer.value).status == 403
    await viewer.get_by_role("heading", name="Not allowed").wait_for()
    await shoot(viewer, "forbidden")

    await card.get_by_role("button", name="Approve").click()
    await page.get_by_role("status").get_by_text(f"{handle.message_id}: approved").wait_for()
    outcome = await asyncio.wait_for(handle.result(), 30)
    assert outcome.status is OutcomeStatus.DELIVERED
    view = await stack.clarion.approval(handle.message_id)
    assert [(d.approved, d.reason) for d in view.decisions] == [(True, "amount checked")]


async def test_the_requester_cannot_approve_their_own_message(
    stack: Stack, console_url: str, browser: Any
) -> None:
    token = await token_for(stack, "operator", "approver")
    async with stack.store.session() as session:
        me = await operators_repo.authenticate(session, token)
    assert me is not None
    from pydantic import SecretStr

    from starters.sdk import ClarionClient

    settings = stack.settings.model_copy(update={"operator_token": SecretStr(token)})
    requester = ClarionClient(stack.client, settings, store=stack.store)
    customer = await add_customer(stack.store)
    handle = await requester.send_message(
        customer_id=customer.external_id, template="test-billing", context={"invoice": "I-78"}
    )
    await pending(stack, handle.message_id)
    page = await logged_in(browser, console_url, token)
    card = page.locator(f'section[data-request="{handle.message_id}"]')
    await card.get_by_role("button", name="Approve").click()
    alert = page.get_by_role("alert")
    await alert.wait_for()
    assert "four-eyes" in (await alert.text_content() or "")
    # A rejection needs a reason, and the four-eyes rule holds for it too.
    card = page.locator(f'section[data-request="{handle.message_id}"]')
    await card.get_by_role("button", name="Reject").click()
    await page.get_by_role("alert").get_by_text("needs a reason").wait_for()
    card = page.locator(f'section[data-request="{handle.message_id}"]')
    await card.get_by_label("Reason (required to reject)").fill("wrong amount")
    await card.get_by_role("button", name="Reject").click()
    await page.get_by_role("alert").get_by_text("four-eyes").wait_for()
    assert (await stack.clarion.approval(handle.message_id)).status == "pending"
    assert await handle.stage() == "awaiting_approval"


async def test_launch_a_broadcast_and_watch_it_finish(
    stack: Stack, console_url: str, browser: Any
) -> None:
    customers = [(await add_customer(stack.store)).external_id for _ in range(3)]
    page = await logged_in(browser, console_url, await token_for(stack, "incident_manager"))
    await page.goto(console_url + "/console/crisis")
    await page.get_by_label("Title").fill("Network outage")
    await page.get_by_label("Template").fill("crisis-outage")
    await page.get_by_label("Customer ids").fill("\n".join(customers))
    await shoot(page, "crisis")
    await page.get_by_role("button", name="Launch broadcast").click()
    await page.wait_for_url(re.compile(r"/console/crisis/[^/]+$"))
    broadcast_id = page.url.rsplit("/", 1)[1]
    # The page polls its JSON endpoint and reaches 100% without a reload.
    await page.locator("#percent").filter(has_text="100%").wait_for(timeout=60_000)
    await page.locator("#done").filter(has_text="3").wait_for()
    await shoot(page, "broadcast")
    progress = await stack.clarion.broadcast(broadcast_id).progress()
    assert progress.total == 3 and progress.done == 3


async def test_customer_timeline_and_audit_search(
    stack: Stack, console_url: str, browser: Any
) -> None:
    sender = await operator_client(stack, "operator")
    customer = await add_customer(
        stack.store,
        name="Grace Timeline",
        consents=[(Channel.EMAIL, Purpose.MARKETING, ConsentStatus.GRANTED)],
    )
    handle = await sender.send_message(
        customer_id=customer.external_id, template="test-notice", context={"ref": "T-1"}
    )
    assert (await asyncio.wait_for(handle.result(), 30)).status is OutcomeStatus.DELIVERED
    await sender.start_journey("t-send-wait", customer.external_id)

    async def journey_recorded() -> bool:
        async with stack.store.session() as session:
            runs = await journey_repo.runs_for_customer(
                session, customer_external_id=customer.external_id
            )
        return bool(runs)

    await wait_until(journey_recorded, what="the journey run")

    page = await logged_in(
        browser, console_url, await token_for(stack, "viewer"), "/console/customers"
    )
    await page.get_by_label("Customer id").fill(customer.external_id)
    await page.get_by_role("button", name="Show timeline").click()
    await page.wait_for_url(re.compile(re.escape(f"/console/customers/{customer.external_id}")))
    timeline = page.locator("#timeline")
    for kind in ("requested", "sent", "delivered"):
        await timeline.get_by_role("cell", name=kind, exact=True).first.wait_for()
    await page.locator("#journeys").get_by_role("cell", name="t-send-wait").wait_for()
    await page.locator("#consent").get_by_role("cell", name="granted").wait_for()
    await shoot(page, "customer")

    await page.get_by_role("link", name=handle.message_id).first.click()
    await page.wait_for_url(re.compile(r"/console/audit\?message_id="))
    assert await page.get_by_label("Message id").input_value() == handle.message_id
    await page.get_by_role("cell", name="delivered", exact=True).first.wait_for()
    await shoot(page, "audit")
    # Keyboard: the skip link is the first stop and moves focus to the main landmark.
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.textContent") == "Skip to main content"


# Processes, HTTP and the browser over a store: SQLite is enough (see conftest.py).
pytestmark = pytest.mark.sqlite_only
