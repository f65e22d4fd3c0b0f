"""The send activity on its own (ActivityEnvironment): idempotency, and the decisions it
makes at send time, with the real store and the loopback SMTP server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import DeliveryActivities
from clarion.channels import build_providers
from clarion.models import AuditKind, Channel, ConsentStatus, DeliveryStatus, Purpose, SendInput
from clarion.store import Store, repo
from clarion.store.tables import Delivery
from tests.conftest import add_customer, make_settings, uid
from tests.support.fake_twilio import FakeTwilio
from tests.support.smtp_server import SmtpServer


@pytest.fixture
async def acts(
    store: Store, smtp_server: SmtpServer, fake_twilio: FakeTwilio, tmp_path: Path
) -> AsyncIterator[DeliveryActivities]:
    settings = make_settings(tmp_path, store, smtp_server, fake_twilio, task_queue="unused")
    providers = build_providers(settings)
    yield DeliveryActivities(store, providers, settings)
    for provider in providers.values():
        await provider.aclose()


def send_input(customer_id: str, **overrides: object) -> SendInput:
    values: dict[str, object] = {
        "message_id": uid("msg"),
        "workflow_id": "wf",
        "customer_id": customer_id,
        "template": "test-notice",
        "template_version": 1,
        "purpose": Purpose.SERVICE,
        "channel": Channel.EMAIL,
        "context": {"ref": "A"},
    }
    values.update(overrides)
    return SendInput.model_validate(values)


async def kinds(store: Store, message_id: str) -> list[tuple[str, str]]:
    async with store.session() as session:
        return [(e.kind, e.reason) for e in await repo.audit_events(session, message_id=message_id)]


async def test_second_call_returns_the_recorded_receipt_without_sending(
    acts: DeliveryActivities, smtp_server: SmtpServer
) -> None:
    customer = await add_customer(acts.store)
    data = send_input(customer.external_id)
    env = ActivityEnvironment()
    first = await env.run(acts.send_message, data)
    second = await env.run(acts.send_message, data)
    assert first.status is DeliveryStatus.SENT and not first.already_sent
    assert second.already_sent and second.provider_message_id == first.provider_message_id
    assert len(smtp_server.with_id(data.message_id)) == 1
    assert [k for k, _ in await kinds(acts.store, data.message_id)] == [AuditKind.SENT]


async def test_render_failure_at_send_time_is_recorded(
    acts: DeliveryActivities, smtp_server: SmtpServer
) -> None:
    customer = await add_customer(acts.store)
    data = send_input(customer.external_id, context={})
    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(acts.send_message, data)
    assert raised.value.type == "RenderError" and raised.value.non_retryable
    async with acts.store.session() as session:
        row = await session.get(Delivery, f"{data.message_id}:email")
    assert (
        row is not None
        and row.status == DeliveryStatus.FAILED
        and "'ref' is undefined" in row.error
    )
    assert [k for k, _ in await kinds(acts.store, data.message_id)] == [AuditKind.FAILED]
    assert smtp_server.with_id(data.message_id) == []


async def test_consent_withdrawn_before_send_suppresses(
    acts: DeliveryActivities, smtp_server: SmtpServer
) -> None:
    customer = await add_customer(acts.store)
    async with acts.store.transaction() as session:
        row = await repo.require_customer(session, external_id=customer.external_id)
        await repo.record_consent(
            session,
            customer=row,
            channel=Channel.EMAIL,
            purpose=Purpose.SERVICE,
            status=ConsentStatus.REVOKED,
            source="test",
        )
    data = send_input(customer.external_id)
    result = await ActivityEnvironment().run(acts.send_message, data)
    assert result.status is DeliveryStatus.SUPPRESSED and result.reason == "opted_out"
    assert smtp_server.with_id(data.message_id) == []
    assert await kinds(acts.store, data.message_id) == [(AuditKind.SUPPRESSED, "opted_out")]
