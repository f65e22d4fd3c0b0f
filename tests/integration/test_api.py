"""The HTTP API through httpx against the real app, a real worker and the dev server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from clarion.store import operators as operators_repo
from starters.api import create_app
from tests.conftest import ROOT, Stack, add_customer, uid, unique_phone
from tests.support.processes import wait_until


async def token_for(stack: Stack, *roles: str) -> str:
    async with stack.store.transaction() as session:
        _, token = await operators_repo.add_operator(
            session, name=uid("api"), roles=list(roles), email=None
        )
    return token


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(stack.settings, temporal=stack.client, store=stack.store)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://clarion.test") as client:
        yield client


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_tokens_and_roles_are_enforced(api: httpx.AsyncClient, stack: Stack) -> None:
    assert (await api.get("/health")).json() == {"status": "ok"}
    missing = await api.post("/v1/messages", json={"customer_id": "c", "template": "t"})
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    forged = await api.get("/v1/me", headers=auth("not-a-token"))
    assert forged.status_code == 401
    viewer = await token_for(stack, "viewer")
    me = await api.get("/v1/me", headers=auth(viewer))
    assert me.status_code == 200 and me.json()["roles"] == ["viewer"]
    refused = await api.post(
        "/v1/messages", json={"customer_id": "c", "template": "t"}, headers=auth(viewer)
    )
    assert refused.status_code == 403 and "operator" in refused.json()["message"]
    erase = await api.post("/v1/customers/c/erasure", json={}, headers=auth(viewer))
    assert erase.status_code == 403
    launch = await api.post(
        "/v1/broadcasts",
        json={"title": "t", "template": "crisis-outage", "customers": ["c"]},
        headers=auth(viewer),
    )
    assert launch.status_code == 403


async def test_send_a_message_and_follow_it(api: httpx.AsyncClient, stack: Stack) -> None:
    token = await token_for(stack, "operator")
    customer = await add_customer(stack.store, name="Ada Api")
    sent = await api.post(
        "/v1/messages",
        json={
            "customer_id": customer.external_id,
            "template": "test-notice",
            "context": {"ref": "A1"},
        },
        headers=auth(token),
    )
    assert sent.status_code == 202, sent.text
    message_id = sent.json()["message_id"]

    async def done() -> bool:
        state = (await api.get(f"/v1/messages/{message_id}", headers=auth(token))).json()
        return state["outcome"] is not None and state["stage"] == "done"

    await wait_until(done, what="the message outcome")
    state = (await api.get(f"/v1/messages/{message_id}", headers=auth(token))).json()
    assert state["stage"] == "done" and state["outcome"]["status"] == "delivered"
    assert len(stack.smtp.with_id(message_id)) == 1
    again = await api.post(
        "/v1/messages",
        json={
            "customer_id": customer.external_id,
            "template": "test-notice",
            "context": {"ref": "A1"},
            "message_id": message_id,
        },
        headers=auth(token),
    )
    assert again.status_code == 202 and again.json()["message_id"] == message_id
    await asyncio.sleep(0.5)
    assert len(stack.smtp.with_id(message_id)) == 1  # the same id is one message

    timeline = await api.get(f"/v1/customers/{customer.external_id}/timeline", headers=auth(token))
    kinds = [e["kind"] for e in timeline.json()["events"]]
    assert kinds[:3] == ["requested", "sent", "delivered"]
    unknown = await api.get("/v1/messages/no-such-message", headers=auth(token))
    assert unknown.status_code == 404


async def test_bad_input_gets_a_precise_4xx(api: httpx.AsyncClient, stack: Stack) -> None:
    token = await token_for(stack, "operator")
    headers = {**auth(token), "Content-Type": "application/json"}
    broken = await api.post("/v1/messages", content=b'{"customer_id": ', headers=headers)
    assert broken.status_code == 422 and broken.json()["error"] == "invalid_json"
    extra = await api.post(
        "/v1/messages",
        json={"customer_id": "c1", "template": "t", "colour": "blue"},
        headers=auth(token),
    )
    assert extra.status_code == 422
    assert extra.json()["field"] == "colour" and extra.json()["value"] == "blue"
    channel = await api.post(
        "/v1/messages",
        json={"customer_id": "c1", "template": "t", "channels": ["pigeon"]},
        headers=auth(token),
    )
    assert channel.status_code == 422
    assert channel.json()["field"] == "channels.0" and channel.json()["value"] == "pigeon"
    consent = await api.post(
        "/v1/customers/nobody-here/consent",
        json={"channel": "sms", "purpose": "marketing", "status": "granted"},
        headers=auth(token),
    )
    assert consent.status_code == 404


async def test_journeys_events_consent_and_erasure(api: httpx.AsyncClient, stack: Stack) -> None:
    token = await token_for(stack, "operator", "compliance")
    phone = unique_phone()
    customer = await add_customer(stack.store, phone=phone)
    cid = customer.external_id
    started = await api.post(
        "/v1/journeys/t-send-wait/runs", json={"customer_id": cid}, headers=auth(token)
    )
    assert started.status_code == 201, started.text
    twice = await api.post(
        "/v1/journeys/t-send-wait/runs", json={"customer_id": cid}, headers=auth(token)
    )
    assert twice.status_code == 409
    event = await api.post(
        "/v1/events", json={"customer_id": cid, "event": "clicked"}, headers=auth(token)
    )
    assert event.status_code == 200 and event.json()["delivered"] == ["t-send-wait"]

    async def ended() -> bool:
        status = await api.get(f"/v1/journeys/t-send-wait/runs/{cid}", headers=auth(token))
        return status.json()["status"] != "running"

    await wait_until(ended, what="the journey to end")
    consent = await api.post(
        f"/v1/customers/{cid}/consent",
        json={"channel": "sms", "purpose": "marketing", "status": "granted", "source": "web-form"},
        headers=auth(token),
    )
    assert consent.status_code == 201 and consent.json()["source"] == "web-form"
    erasure = await api.post(
        f"/v1/customers/{cid}/erasure",
        json={"reference": "DSR-API", "sweep_after": "1s"},
        headers=auth(token),
    )
    assert erasure.status_code == 202
    request_id = erasure.json()["request_id"]

    async def erased() -> bool:
        record = await api.get(f"/v1/erasures/{request_id}", headers=auth(token))
        assert record.status_code == 200, record.text
        return bool(record.json()["status"] == "done")

    await wait_until(erased, within=60, what="the erasure to finish")
    record = (await api.get(f"/v1/erasures/{request_id}", headers=auth(token))).json()
    assert record["reference"] == "DSR-API" and record["receipt"]["rows"]["customers"] == 1
    missing = await api.get("/v1/erasures/no-such-request", headers=auth(token))
    assert missing.status_code == 404


def test_the_committed_openapi_spec_is_current() -> None:
    from clarion.config import Settings

    spec = create_app(Settings(_env_file=None)).openapi()  # type: ignore[call-arg]
    committed = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert committed == json.loads(json.dumps(spec)), (
        "docs/openapi.json is stale: clarion api --openapi > docs/openapi.json"
    )
    assert Path(ROOT / "docs" / "openapi.json").exists()


# Processes, HTTP and the browser over a store: SQLite is enough (see conftest.py).
pytestmark = pytest.mark.sqlite_only


async def test_overlong_ids_in_paths_are_refused(api: httpx.AsyncClient, stack: Stack) -> None:
    token = await token_for(stack, "admin")
    long = "0" * 300
    for path in (f"/v1/messages/{long}", f"/v1/erasures/{long}", f"/v1/broadcasts/{long}"):
        response = await api.get(path, headers=auth(token))
        assert response.status_code == 422, (path, response.text)
        assert response.json()["field"] in ("message_id", "request_id", "broadcast_id")


async def test_alerts_open_incidents(api: httpx.AsyncClient, stack: Stack) -> None:
    source = await token_for(stack, "operator")
    viewer = await token_for(stack, "viewer")
    key = f"api.{uid('k')}"
    alert = {"source": "monitor", "key": key, "severity": "critical", "summary": "DB down"}
    refused = await api.post("/v1/alerts", json=alert, headers=auth(viewer))
    assert refused.status_code == 403
    bad = await api.post("/v1/alerts", json={**alert, "severity": "loud"}, headers=auth(source))
    assert bad.status_code == 422 and bad.json()["field"] == "severity", bad.text
    assert bad.json()["value"] == "loud"
    bad = await api.post("/v1/alerts", json={**alert, "affects": "a =="}, headers=auth(source))
    assert bad.status_code == 422 and bad.json()["field"] == "affects", bad.text
    taken = await api.post("/v1/alerts", json=alert, headers=auth(source))
    assert taken.status_code == 202, taken.text
    assert taken.json() == {"key": key, "workflow_id": f"alert:{key}", "note": ""}

    # No alert types are configured here: the incident is confirmed, nothing to propose.
    async def recorded() -> bool:
        found = await api.get("/v1/incidents", params={"key": key}, headers=auth(viewer))
        return found.status_code == 200 and [i["status"] for i in found.json()] == ["unmapped"]

    await wait_until(recorded, within=20, what="the incident to be recorded")
    [listed] = (await api.get("/v1/incidents", params={"key": key}, headers=auth(viewer))).json()
    one = await api.get(f"/v1/incidents/{listed['incident_id']}", headers=auth(viewer))
    assert one.status_code == 200 and one.json()["key"] == key and one.json()["alerts"] == 1
    missing = await api.get("/v1/incidents/inc-none", headers=auth(viewer))
    assert missing.status_code == 404
    recovered = await api.post(
        "/v1/alerts", json={**alert, "severity": "resolved"}, headers=auth(source)
    )
    assert recovered.status_code == 202 and recovered.json()["workflow_id"] == f"alert:{key}"
