"""Marketing email carries one-click unsubscribe headers that work end to end."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from clarion.models import Channel, ConsentStatus, OutcomeStatus, Purpose
from clarion.store.tables import Delivery, utcnow
from clarion.unsubscribe import UnsubscribeTokenError, apply_unsubscribe
from tests.conftest import Stack, StackWith, add_customer


@pytest.fixture
async def unsub(stack_with: StackWith) -> AsyncIterator[Stack]:
    async with stack_with(
        unsubscribe_secret="test-unsubscribe-secret",
        public_base_url="https://notify.example.com",
    ) as running:
        yield running


async def test_one_click_unsubscribe(unsub: Stack) -> None:
    stack = unsub
    opted_in = (Channel.EMAIL, Purpose.MARKETING, ConsentStatus.GRANTED)
    customer = await add_customer(stack.store, name="Ada Lovelace", consents=[opted_in])
    handle = await stack.clarion.send_message(
        customer_id=customer.external_id, template="spring-sale"
    )
    assert (await handle.result()).status is OutcomeStatus.DELIVERED
    [mail] = stack.smtp.with_id(handle.message_id)
    assert mail.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = str(mail.message["List-Unsubscribe"])
    assert link.startswith("<https://notify.example.com/unsubscribe/")
    token = link.strip("<>").rsplit("/", 1)[1]

    with pytest.raises(UnsubscribeTokenError):
        await apply_unsubscribe(stack.store, stack.settings, token[:-2] + "xx", utcnow())
    claim = await apply_unsubscribe(stack.store, stack.settings, token, utcnow())
    assert claim.customer_id == customer.external_id and claim.message_id == handle.message_id
    await apply_unsubscribe(stack.store, stack.settings, token, utcnow())  # a second click
    async with stack.store.session() as session:
        row = await session.get(Delivery, f"{handle.message_id}:email")
    assert row is not None and row.opted_out_at is not None  # the email led to it

    again = await stack.clarion.send_message(
        customer_id=customer.external_id, template="spring-sale"
    )
    outcome = await again.result()
    assert outcome.status is OutcomeStatus.SUPPRESSED and "opted_out" in outcome.reason

    service = await stack.clarion.send_message(
        customer_id=customer.external_id, template="test-notice", context={"ref": "S-1"}
    )
    assert (await service.result()).status is OutcomeStatus.DELIVERED
    [notice] = stack.smtp.with_id(service.message_id)
    assert notice.message["List-Unsubscribe"] is None  # only marketing carries it
