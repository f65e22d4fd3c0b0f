"""DeliverMessage end to end: real dev server, real SMTP server, twilio library on loopback."""

from __future__ import annotations

import asyncio

from clarion.models import AuditKind, Channel, ConsentStatus, DeliveryStatus, OutcomeStatus, Purpose
from clarion.store import repo
from clarion.store.tables import Delivery
from tests.conftest import Stack, add_customer, uid, unique_phone


async def audit_kinds(stack: Stack, message_id: str) -> list[tuple[str, str | None, str]]:
    async with stack.store.session() as session:
        events = await repo.audit_events(session, message_id=message_id)
    return [(e.kind, e.channel, e.reason) for e in events]


async def test_email_delivered(stack: Stack) -> None:
    customer = await add_customer(stack.store, name="Ada Lovelace")
    handle = await stack.clarion.send_message(
        customer_id=customer.external_id, template="test-notice", context={"ref": "N-1"}
    )
    outcome = await handle.result()
    assert outcome.status is OutcomeStatus.DELIVERED, outcome
    assert outcome.channel is Channel.EMAIL
    [mail] = stack.smtp.with_id(handle.message_id)
    assert mail.rcpt_tos == [customer.email]
    assert mail.message["Subject"] == "Notice N-1 for Ada Lovelace"
    assert mail.message["Message-ID"] == outcome.provider_message_id
    parts = {
        p.get_content_type(): p.get_payload(decode=True).decode()
        for p in mail.message.walk()
        if not p.is_multipart()
    }
    assert parts["text/plain"].strip() == "Hello Ada, notice N-1."
    assert "<b>N-1</b>" in parts["text/html"]
    kinds = [k for k, _, _ in await audit_kinds(stack, handle.message_id)]
    assert kinds == [AuditKind.REQUESTED, AuditKind.SENT, AuditKind.DELIVERED]
    async with stack.store.session() as session:
        row = await session.get(Delivery, f"{handle.message_id}:email")
    assert (
        row is not None
        and row.status == DeliveryStatus.SENT
        and row.tries == 1
        and row.template_version == 1
    )


async def test_sms_delivered_through_twilio_library(stack: Stack) -> None:
    phone = unique_phone()
    customer = await add_customer(stack.store, email=False, phone=phone, name="Grace Hopper")
    handle = await stack.clarion.send_message(
        customer_id=customer.external_id,
        template="test-notice",
        channels=["sms"],
        context={"ref": "S-7"},
    )
    outcome = await handle.result()
    assert outcome.status is OutcomeStatus.DELIVERED and outcome.channel is Channel.SMS
    [sms] = stack.twilio.to(phone)
    assert sms["body"] == "Notice S-7 for Grace"
    assert sms["from"] == stack.settings.twilio_from_number
    assert outcome.provider_message_id == sms["sid"]


async def test_fallback_from_sms_to_email_on_permanent_error(stack: Stack) -> None:
    phone = unique_phone()
    stack.twilio.invalid_numbers.add(phone)
    customer = await add_customer(stack.store, phone=phone, attributes={"tier": "gold"})
    handle = await stack.clarion.send_message(
        customer_id=customer.external_id,
        template="test-notice",
        channels=["sms", "email"],
        context={"ref": "F-1"},
    )
    outcome = await handle.result()
    assert outcome.status is OutcomeStatus.DELIVERED and outcome.channel is Channel.EMAIL
    assert [(a.channel, a.status) for a in outcome.attempts] == [
        (Channel.SMS, DeliveryStatus.FAILED),
        (Channel.EMAIL, DeliveryStatus.SENT),
    ]
    assert "21211" in outcome.attempts[0].reason
    assert stack.twilio.to(phone) == []
    assert len(stack.smtp.with_id(handle.message_id)) == 1
    trail = await audit_kinds(stack, handle.message_id)
    assert [(k, c) for k, c, _ in trail] == [
        (AuditKind.REQUESTED, None),
        (AuditKind.FAILED, "sms"),
        (AuditKind.FELL_BACK, "email"),
        (AuditKind.SENT, "email"),
        (AuditKind.DELIVERED, "email"),
    ]
    async with stack.store.session() as session:
        sms_row = await session.get(Delivery, f"{handle.message_id}:sms")
        email_row = await session.get(Delivery, f"{handle.message_id}:email")
    assert (
        sms_row is not None and sms_row.status == DeliveryStatus.FAILED and "21211" in sms_row.error
    )
    # Delivery analytics: the SMS fell back to email; both carry the customer's segment.
    assert email_row is not None and sms_row.fell_back and not email_row.fell_back
    assert (sms_row.segment, email_row.segment) == ("gold", "gold")
    assert email_row.journey == "" and email_row.delivered_at is None


async def test_refused_mailbox_is_permanent_and_falls_back_to_sms(stack: Stack) -> None:
    phone = unique_phone()
    customer = await add_customer(stack.store, phone=phone)
    assert customer.email
    stack.smtp.refuse.add(customer.email)
    handle = await stack.clarion.send_message(
        customer_id=customer.external_id,
        template="test-notice",
        channels=["email", "sms"],
        context={"ref": "R"},
    )
    outcome = await handle.result()
    assert outcome.status is OutcomeStatus.DELIVERED and outcome.channel is Channel.SMS
    assert "550" in outcome.attempts[0].reason
    assert len(stack.twilio.to(phone)) == 1


async def test_marketing_without_opt_in_is_not_sent_and_audit_says_why(stack: Stack) -> None:
    customer = await add_customer(stack.store)
    handle = await stack.clarion.send_message(
        customer_id=customer.external_id, template="spring-sale"
    )
    outcome = await handle.result()
    assert outcome.status is OutcomeStatus.SUPPRESSED
    assert stack.smtp.with_id(handle.message_id) == []
    trail = await audit_kinds(stack, handle.message_id)
    assert (AuditKind.SUPPRESSED, "email", "no_opt_in") in trail
    assert trail[-1][0] == AuditKind.UNDELIVERABLE


async def test_marketing_with_opt_in_is_sent(stack: Stack) -> None:
    customer = await add_customer(
        stack.store, consents=[(Channel.EMAIL, Purpose.MARKETING, ConsentStatus.GRANTED)]
    )
    outcome = await (
        await stack.clarion.send_message(customer_id=customer.external_id, template="spring-sale")
    ).result()
    assert outcome.status is OutcomeStatus.DELIVERED


async def test_opted_out_channel_is_skipped_for_the_next(stack: Stack) -> None:
    phone = unique_phone()
    customer = await add_customer(
        stack.store, phone=phone, consents=[(Channel.SMS, Purpose.SERVICE, ConsentStatus.REVOKED)]
    )
    handle = await stack.clarion.send_message(
        customer_id=customer.external_id,
        template="test-notice",
        channels=["sms", "email"],
        context={"ref": "O"},
    )
    outcome = await handle.result()
    assert outcome.status is OutcomeStatus.DELIVERED and outcome.channel is Channel.EMAIL
    assert stack.twilio.to(phone) == []
    assert (AuditKind.SUPPRESSED, "sms", "opted_out") in await audit_kinds(stack, handle.message_id)


async def test_missing_variable_fails_clearly_and_sends_nothing(stack: Stack) -> None:
    customer = await add_customer(stack.store)
    handle = await stack.clarion.send_message(
        customer_id=customer.external_id, template="test-notice"
    )
    outcome = await handle.result()
    assert outcome.status is OutcomeStatus.FAILED
    assert stack.smtp.with_id(handle.message_id) == []
    [(_, channel, reason)] = [
        t for t in await audit_kinds(stack, handle.message_id) if t[0] == AuditKind.RENDER_FAILED
    ]
    assert channel == "email" and "'ref' is undefined" in reason and "subject" in reason


async def test_unknown_customer_and_template_fail_with_reason(stack: Stack) -> None:
    outcome = await (
        await stack.clarion.send_message(customer_id="nobody-here", template="test-notice")
    ).result()
    assert (
        outcome.status is OutcomeStatus.FAILED
        and "unknown customer 'nobody-here'" in outcome.reason
    )
    customer = await add_customer(stack.store)
    outcome = await (
        await stack.clarion.send_message(customer_id=customer.external_id, template="no-such")
    ).result()
    assert outcome.status is OutcomeStatus.FAILED and "unknown template 'no-such'" in outcome.reason


async def test_locale_fallback_to_language_variant(stack: Stack) -> None:
    customer = await add_customer(stack.store, locale="fr-CA")
    handle = await stack.clarion.send_message(
        customer_id=customer.external_id, template="test-notice", context={"ref": "L"}
    )
    assert (await handle.result()).status is OutcomeStatus.DELIVERED
    [mail] = stack.smtp.with_id(handle.message_id)
    assert mail.message["Subject"] == "Avis L"


async def test_same_message_id_is_one_message(stack: Stack) -> None:
    customer = await add_customer(stack.store)
    message_id = uid("msg")
    first = await stack.clarion.send_message(
        customer_id=customer.external_id,
        template="test-notice",
        context={"ref": "1"},
        message_id=message_id,
    )
    await first.result()
    second = await stack.clarion.send_message(
        customer_id=customer.external_id,
        template="test-notice",
        context={"ref": "1"},
        message_id=message_id,
    )
    assert (await second.result()).status is OutcomeStatus.DELIVERED
    assert len(stack.smtp.with_id(message_id)) == 1


async def test_smtp_outage_then_recovery_delivers_once(stack: Stack) -> None:
    customer = await add_customer(stack.store)
    stack.smtp.stop()
    try:
        handle = await stack.clarion.send_message(
            customer_id=customer.external_id, template="test-notice", context={"ref": "down"}
        )
        # While SMTP is down the send is retried, and the last error is on record.
        for _ in range(100):
            async with stack.store.session() as session:
                row = await session.get(Delivery, f"{handle.message_id}:email")
            if row is not None and "unavailable" in row.error:
                break
            await asyncio.sleep(0.1)
        assert row is not None and row.status == DeliveryStatus.SENDING, row and row.error
        await asyncio.sleep(3)
    finally:
        stack.smtp.start()
    outcome = await handle.result()
    assert outcome.status is OutcomeStatus.DELIVERED
    assert len(stack.smtp.with_id(handle.message_id)) == 1
    async with stack.store.session() as session:
        row = await session.get(Delivery, f"{handle.message_id}:email")
    assert row is not None and row.tries >= 2 and row.status == DeliveryStatus.SENT


async def test_twilio_429_and_503_are_retried_then_delivered_once(stack: Stack) -> None:
    phone = unique_phone()
    customer = await add_customer(stack.store, email=False, phone=phone)
    stack.twilio.fail_next[:] = [429, 503]
    handle = await stack.clarion.send_message(
        customer_id=customer.external_id,
        template="test-notice",
        channels=["sms"],
        context={"ref": "busy"},
    )
    outcome = await handle.result()
    assert outcome.status is OutcomeStatus.DELIVERED
    assert len(stack.twilio.to(phone)) == 1
    assert stack.twilio.fail_next == []
    async with stack.store.session() as session:
        row = await session.get(Delivery, f"{handle.message_id}:sms")
    assert row is not None and row.tries == 3


async def test_email_connections_are_reused(stack: Stack) -> None:
    customer = await add_customer(stack.store)
    ids = []
    for n in range(3):
        handle = await stack.clarion.send_message(
            customer_id=customer.external_id, template="test-notice", context={"ref": f"P{n}"}
        )
        assert (await handle.result()).status is OutcomeStatus.DELIVERED
        ids.append(handle.message_id)
    peers = {stack.smtp.with_id(i)[0].peer for i in ids}
    assert len(peers) == 1, peers
