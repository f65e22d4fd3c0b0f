"""DeliverMessage end to end: real dev server, real SMTP server, twilio library on loopback."""

from __future__ import annotations

from clarion.models import AuditKind, Channel, DeliveryStatus, OutcomeStatus
from clarion.store import repo
from clarion.store.tables import Delivery
from tests.conftest import Stack, add_customer


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
