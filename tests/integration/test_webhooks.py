"""Twilio webhooks, one-click unsubscribe and acknowledgement links, through httpx against
the real app, a real worker and the dev server."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from xml.sax.saxutils import escape

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from clarion.crisis.models import Tier
from clarion.journeys.models import JourneyRunStatus
from clarion.models import AuditKind, Channel, ConsentStatus, DeliveryStatus, OutcomeStatus, Purpose
from clarion.store import repo
from clarion.store.tables import Delivery, utcnow
from clarion.unsubscribe import UnsubscribeClaim, make_unsubscribe_token
from starters.api import create_app
from tests.conftest import Stack, StackWith, add_customer, uid, unique_phone
from tests.integration.test_crisis import reached
from tests.integration.test_replay import HISTORIES, RECORD, _replayer
from tests.support.processes import wait_until

STATUS = "/webhooks/twilio/status"
INBOUND = "/webhooks/twilio/inbound"
UNSUBSCRIBE_SECRET = "test-unsubscribe-secret"


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    settings = stack.settings.model_copy(
        update={"unsubscribe_secret": SecretStr(UNSUBSCRIBE_SECRET)}
    )
    app = create_app(settings, temporal=stack.client, store=stack.store)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://clarion.test") as client:
        yield client


async def twilio_post(
    api: httpx.AsyncClient, stack: Stack, path: str, form: dict[str, str]
) -> httpx.Response:
    """POST ``form`` signed as Twilio signs it: over the public URL it was given."""
    url = stack.settings.public_base_url.rstrip("/") + path
    token = stack.settings.twilio_auth_token.get_secret_value()
    signature = RequestValidator(token).compute_signature(url, form)
    return await api.post(path, data=form, headers={"X-Twilio-Signature": signature})


async def delivery_of(stack: Stack, sid: str) -> Delivery:
    async with stack.store.session() as session:
        found = await session.execute(select(Delivery).where(Delivery.provider_message_id == sid))
        return found.scalar_one()


async def provider_statuses(stack: Stack, message_id: str) -> list[str]:
    async with stack.store.session() as session:
        events = await repo.audit_events(
            session, message_id=message_id, kind=AuditKind.PROVIDER_STATUS
        )
    return [e.reason for e in events]


async def sms_message(stack: Stack) -> tuple[str, str, str, str]:
    """(message id, provider sid, phone, customer id) of a delivered SMS."""
    phone = unique_phone()
    customer = await add_customer(stack.store, email=False, phone=phone, name="Sid Status")
    handle = await stack.clarion.send_message(
        customer_id=customer.external_id,
        template="test-notice",
        channels=["sms"],
        context={"ref": "WH1"},
    )
    outcome = await handle.result()
    assert outcome.status is OutcomeStatus.DELIVERED
    return handle.message_id, outcome.provider_message_id, phone, customer.external_id


async def test_missing_or_forged_signatures_are_refused_and_change_nothing(
    api: httpx.AsyncClient, stack: Stack
) -> None:
    message_id, sid, phone, customer_id = await sms_message(stack)
    status = {"MessageSid": sid, "MessageStatus": "failed", "ErrorCode": "30003", "To": phone}
    missing = await api.post(STATUS, data=status)
    assert missing.status_code == 403 and "X-Twilio-Signature" in missing.json()["message"]
    forged = await api.post(STATUS, data=status, headers={"X-Twilio-Signature": "bm90IGl0"})
    assert forged.status_code == 403
    # Signed for other fields than the ones posted: a changed status is refused too.
    url = stack.settings.public_base_url + STATUS
    token = stack.settings.twilio_auth_token.get_secret_value()
    other = RequestValidator(token).compute_signature(url, {**status, "MessageStatus": "sent"})
    changed = await api.post(STATUS, data=status, headers={"X-Twilio-Signature": other})
    assert changed.status_code == 403
    # Signed by someone with another auth token.
    foreign = RequestValidator("not-the-token").compute_signature(url, status)
    assert (
        await api.post(STATUS, data=status, headers={"X-Twilio-Signature": foreign})
    ).status_code == 403
    assert (await delivery_of(stack, sid)).provider_status == ""
    assert await provider_statuses(stack, message_id) == []

    stop = {"From": phone, "Body": "STOP", "MessageSid": uid("SM")}
    assert (await api.post(INBOUND, data=stop)).status_code == 403
    forged_stop = await api.post(INBOUND, data=stop, headers={"X-Twilio-Signature": foreign})
    assert forged_stop.status_code == 403
    async with stack.store.session() as session:
        changes = await repo.audit_events(
            session, customer_external_id=customer_id, kind=AuditKind.CONSENT_CHANGED
        )
    assert list(changes) == []


async def test_status_callbacks_update_the_delivery_and_repeats_are_harmless(
    api: httpx.AsyncClient, stack: Stack
) -> None:
    message_id, sid, phone, _ = await sms_message(stack)
    assert stack.twilio.to(phone)[0]["status_callback"] == ""  # not asked for by default

    async def post(status: str, **extra: str) -> None:
        form = {"MessageSid": sid, "MessageStatus": status, "To": phone, **extra}
        response = await twilio_post(api, stack, STATUS, form)
        assert response.status_code == 204, response.text

    await post("sent")
    sent = await delivery_of(stack, sid)
    assert sent.provider_status == "sent" and sent.delivered_at is None
    await post("delivered")
    delivered_at = (await delivery_of(stack, sid)).delivered_at
    assert delivered_at is not None and sent.updated_at < (await delivery_of(stack, sid)).updated_at
    await post("delivered")  # Twilio retries
    await post("sent")  # late
    await post("failed", ErrorCode="30003")  # never downgrades a delivered message
    delivery = await delivery_of(stack, sid)
    assert delivery.provider_status == "delivered" and delivery.error == ""
    assert delivery.delivered_at == delivered_at  # the first receipt counts
    assert delivery.status == DeliveryStatus.SENT.value
    assert await provider_statuses(stack, message_id) == ["sent", "delivered"]
    # An unknown message is accepted (Twilio would retry an error) and changes nothing.
    unknown = {"MessageSid": "SM" + "f" * 32, "MessageStatus": "delivered"}
    assert (await twilio_post(api, stack, STATUS, unknown)).status_code == 204
    incomplete = await twilio_post(api, stack, STATUS, {"MessageSid": sid})
    assert incomplete.status_code == 400


async def test_a_failed_sms_falls_back_to_the_next_channel(
    api: httpx.AsyncClient, stack: Stack
) -> None:
    phone = unique_phone()
    customer = await add_customer(stack.store, phone=phone, name="Fay Fallback")
    handle = await stack.clarion.send_message(
        customer_id=customer.external_id,
        template="test-notice",
        channels=["sms", "email"],
        context={"ref": "FB1"},
        acknowledge_within="1h",
    )

    async def waiting() -> bool:
        return await handle.stage() == "awaiting_acknowledgement:sms"

    await wait_until(waiting, what="the wait for an acknowledgement of the SMS")
    [sms] = stack.twilio.to(phone)
    failed = {"MessageSid": sms["sid"], "MessageStatus": "undelivered", "ErrorCode": "30005"}
    assert (await twilio_post(api, stack, STATUS, failed)).status_code == 204
    assert (await twilio_post(api, stack, STATUS, failed)).status_code == 204  # a repeat

    async def emailed() -> bool:
        return await handle.stage() == "awaiting_acknowledgement:email"

    await wait_until(emailed, what="the fallback email")
    assert len(stack.smtp.with_id(handle.message_id)) == 1
    await handle.acknowledge(by="customer", channel="email")
    outcome = await asyncio.wait_for(handle.result(), 30)
    assert outcome.status is OutcomeStatus.DELIVERED and outcome.channel is Channel.EMAIL
    assert [(a.channel, a.status) for a in outcome.attempts] == [
        (Channel.SMS, DeliveryStatus.SENT),
        (Channel.SMS, DeliveryStatus.FAILED),
        (Channel.EMAIL, DeliveryStatus.SENT),
    ]
    assert outcome.attempts[1].reason == "provider reported undelivered (error 30005)"
    async with stack.store.session() as session:
        fell_back = await repo.audit_events(
            session, message_id=handle.message_id, kind=AuditKind.FELL_BACK
        )
    assert [(e.channel, e.detail["from"]) for e in fell_back] == [("email", "sms")]
    assert (await delivery_of(stack, sms["sid"])).provider_status == "undelivered"
    # The message is done: a late callback for it is still accepted.
    assert (await twilio_post(api, stack, STATUS, failed)).status_code == 204

    # The new path replays deterministically; its history joins the recorded ones.
    history = await handle._handle.fetch_history()
    if RECORD:
        (HISTORIES / "deliver_provider_failed.json").write_text(
            json.dumps(json.loads(history.to_json()), indent=1) + "\n"
        )
    await _replayer().replay_workflow(history)


async def test_stop_by_webhook_stops_a_running_journeys_next_text(
    api: httpx.AsyncClient, stack: Stack
) -> None:
    phone = unique_phone()
    customer = await add_customer(stack.store, phone=phone, name="Olive Out")
    handle = await stack.clarion.start_journey("t-optout", customer.external_id)
    await wait_until(lambda: len(stack.twilio.to(phone)) == 1, what="the first text")

    stop = {"From": phone, "To": "+14155550100", "Body": "Stop", "MessageSid": uid("SM")}
    reply = await twilio_post(api, stack, INBOUND, stop)
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/xml")
    assert f"<Response><Message>{stack.settings.sms_stop_reply}</Message></Response>" in reply.text

    result = await asyncio.wait_for(handle.result(), 30)
    assert result.status is JourneyRunStatus.COMPLETED
    assert [m["body"] for m in stack.twilio.to(phone)] == ["Notice OO1 for Olive"]
    async with stack.store.session() as session:
        record = await repo.require_customer(session, external_id=customer.external_id)
        facts = await repo.consent_facts(session, customer=record)
    sms = [f for f in facts if f.channel is Channel.SMS]
    assert sms and all(f.status is ConsentStatus.REVOKED for f in sms)


async def test_a_reply_becomes_a_journey_event_once(api: httpx.AsyncClient, stack: Stack) -> None:
    phone = unique_phone()
    customer = await add_customer(stack.store, phone=phone, name="Rita Reply")
    handle = await stack.clarion.start_journey("t-sms-reply", customer.external_id)
    await wait_until(lambda: len(stack.twilio.to(phone)) == 1, what="the question")

    async def listening() -> bool:
        status = await stack.clarion.journey_status("t-sms-reply", customer.external_id)
        return status.waiting_for == "sms_reply"

    await wait_until(listening, what="the journey to wait for the reply")
    form = {"From": phone, "Body": "See you there", "MessageSid": uid("SM")}
    reply = await twilio_post(api, stack, INBOUND, form)
    assert reply.status_code == 200 and reply.text.endswith("<Response/>")
    again = await twilio_post(api, stack, INBOUND, form)  # Twilio retries
    assert again.status_code == 200
    result = await asyncio.wait_for(handle.result(), 30)
    assert result.status is JourneyRunStatus.COMPLETED and result.reason == "coming"
    help_ = await twilio_post(
        api, stack, INBOUND, {"From": phone, "Body": "HELP", "MessageSid": uid("SM")}
    )
    assert f"<Message>{escape(stack.settings.sms_help_text)}</Message>" in help_.text


async def test_unsubscribe_link_post_opts_out_and_get_does_not(
    api: httpx.AsyncClient, stack: Stack
) -> None:
    opted_in = (Channel.EMAIL, Purpose.MARKETING, ConsentStatus.GRANTED)
    customer = await add_customer(stack.store, name="Una Subscribe", consents=[opted_in])
    claim = UnsubscribeClaim(customer.external_id, Channel.EMAIL, Purpose.MARKETING, "m-unsub")
    token = make_unsubscribe_token(UNSUBSCRIBE_SECRET, claim, utcnow() + timedelta(days=30))

    async def marketing_email() -> ConsentStatus:
        async with stack.store.session() as session:
            record = await repo.require_customer(session, external_id=customer.external_id)
            facts = await repo.consent_facts(session, customer=record)
        [*_, latest] = [
            f for f in facts if f.channel is Channel.EMAIL and f.purpose is Purpose.MARKETING
        ]
        return latest.status

    page = await api.get(f"/unsubscribe/{token}")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<form method="post">' in page.text and "One-Click" in page.text
    assert await marketing_email() is ConsentStatus.GRANTED  # a prefetch changes nothing

    bad = await api.post(f"/unsubscribe/{token[:-2]}xx", data={"List-Unsubscribe": "One-Click"})
    assert bad.status_code == 400 and "signature does not match" in bad.text
    assert (await api.get(f"/unsubscribe/{token[:-2]}xx")).status_code == 400
    no_body = await api.post(f"/unsubscribe/{token}")
    assert no_body.status_code == 400 and "List-Unsubscribe=One-Click" in no_body.text
    assert await marketing_email() is ConsentStatus.GRANTED

    done = await api.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
    assert done.status_code == 200 and "Unsubscribed" in done.text
    assert await marketing_email() is ConsentStatus.REVOKED
    twice = await api.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
    assert twice.status_code == 200

    expired = make_unsubscribe_token(UNSUBSCRIBE_SECRET, claim, utcnow() - timedelta(days=1))
    old = await api.post(f"/unsubscribe/{expired}", data={"List-Unsubscribe": "One-Click"})
    assert old.status_code == 400 and "expired" in old.text


async def test_ack_link_acknowledges_a_broadcast_recipient(
    api: httpx.AsyncClient, stack: Stack
) -> None:
    from tests.integration.test_crisis import add

    region = uid("r")
    person = await add(stack.store, region)
    tier = Tier(name="all", channels=[Channel.EMAIL], acknowledge_within="1h")
    handle = await stack.clarion.launch_broadcast(
        title="Outage", template="crisis-outage", segment=f"region == '{region}'", tiers=[tier]
    )
    await reached(handle)
    [mail] = stack.smtp.to(person.email or "")
    body = mail.message.get_payload(decode=True).decode()  # type: ignore[union-attr]
    link = re.search(r"http://localhost:8000(/ack/\S+)", body)
    assert link is not None

    assert (await api.get(link.group(1)[:-2] + "xx")).status_code == 400
    assert (await api.post(link.group(1)[:-2] + "xx")).status_code == 400
    page = await api.get(link.group(1))  # what a mail scanner does: nothing recorded
    assert page.status_code == 200 and '<form method="post">' in page.text
    assert (await handle.progress()).acknowledged == 0
    thanks = await api.post(link.group(1))
    assert thanks.status_code == 200 and "Thank you" in thanks.text
    assert (await handle.progress()).acknowledged == 1
    assert (await api.post(link.group(1))).status_code == 200  # a second click
    assert (await handle.progress()).acknowledged == 1


async def test_sms_asks_twilio_for_status_callbacks_when_enabled(stack_with: StackWith) -> None:
    async with stack_with(
        twilio_status_callbacks=True,
        public_base_url="https://notify.example.com/",
    ) as stack:
        message_id, sid, phone, _ = await sms_message(stack)
        [sms] = stack.twilio.to(phone)
        assert sms["status_callback"] == "https://notify.example.com/webhooks/twilio/status"
        app = create_app(stack.settings, temporal=stack.client, store=stack.store)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://10.0.0.7:8000"
        ) as api:  # behind a proxy: the signature covers the public URL
            form = {"MessageSid": sid, "MessageStatus": "delivered"}
            signature = RequestValidator(stack.twilio.auth_token).compute_signature(
                sms["status_callback"], form
            )
            response = await api.post(STATUS, data=form, headers={"X-Twilio-Signature": signature})
            assert response.status_code == 204
        assert await provider_statuses(stack, message_id) == ["delivered"]


# Processes, HTTP and the browser over a store: SQLite is enough (see conftest.py).
pytestmark = pytest.mark.sqlite_only
