"""Inbound SMS keywords change the consent ledger at once (no Temporal needed)."""

from __future__ import annotations

import pytest

from clarion.config import Settings
from clarion.errors import ValidationFailed
from clarion.inbound import handle_inbound_sms
from clarion.models import AuditKind, Channel, ConsentStatus, Purpose
from clarion.policy import decide_consent
from clarion.policy.keywords import KeywordAction
from clarion.store import Store, repo
from tests.conftest import add_customer, unique_phone

SETTINGS = Settings(_env_file=None, default_phone_region="US")  # type: ignore[call-arg]


async def decisions(store: Store, customer_id: str) -> dict[Purpose, str]:
    async with store.session() as session:
        customer = await repo.require_customer(session, external_id=customer_id)
        facts = await repo.consent_facts(session, customer=customer)
    return {
        p: decide_consent(facts, Channel.SMS, p, has_contact_point=True).reason for p in Purpose
    }


async def test_stop_then_start(store: Store) -> None:
    phone = unique_phone()
    granted = (Channel.SMS, Purpose.MARKETING, ConsentStatus.GRANTED)
    fan = await add_customer(store, phone=phone, consents=[granted])
    assert (await decisions(store, fan.external_id))[Purpose.MARKETING] == "opt_in"

    stop = await handle_inbound_sms(store, SETTINGS, phone, " Stop ")
    assert stop.action is KeywordAction.OPT_OUT and stop.customers == [fan.external_id]
    assert stop.reply == SETTINGS.sms_stop_reply
    assert set((await decisions(store, fan.external_id)).values()) == {"opted_out"}
    async with store.session() as session:
        events = await repo.audit_events(session, customer_external_id=fan.external_id)
    assert [e.kind for e in events].count(AuditKind.CONSENT_CHANGED) == len(Purpose)

    start = await handle_inbound_sms(store, SETTINGS, phone, "START")
    assert start.action is KeywordAction.OPT_IN and start.reply == SETTINGS.sms_start_reply
    after = await decisions(store, fan.external_id)
    assert after[Purpose.SERVICE] == "not_opted_out" or after[Purpose.SERVICE] == "opt_in"
    assert after[Purpose.MARKETING] == "opt_in"  # the STOP is undone, the opt-in with it


async def test_start_is_not_a_marketing_opt_in(store: Store) -> None:
    phone = unique_phone()
    customer = await add_customer(store, phone=phone)
    await handle_inbound_sms(store, SETTINGS, phone, "STOP")
    await handle_inbound_sms(store, SETTINGS, phone, "yes")
    after = await decisions(store, customer.external_id)
    assert after[Purpose.MARKETING] == "opted_out"  # never opted in: START does not invent it
    assert after[Purpose.TRANSACTIONAL] in ("opt_in", "not_opted_out")


async def test_help_and_ordinary_replies_change_nothing(store: Store) -> None:
    phone = unique_phone()
    customer = await add_customer(store, phone=phone)
    before = await decisions(store, customer.external_id)
    help_ = await handle_inbound_sms(store, SETTINGS, phone, "help")
    assert help_.action is KeywordAction.HELP and help_.reply == SETTINGS.sms_help_text
    reply = await handle_inbound_sms(store, SETTINGS, phone, "OK thanks")
    assert reply.action is KeywordAction.NONE and reply.reply is None
    assert await decisions(store, customer.external_id) == before


async def test_unknown_and_invalid_numbers(store: Store) -> None:
    nobody = await handle_inbound_sms(store, SETTINGS, "+14155559999", "STOP")
    assert nobody.customers == [] and nobody.action is KeywordAction.OPT_OUT
    with pytest.raises(ValidationFailed, match="not-a-number"):
        await handle_inbound_sms(store, SETTINGS, "not-a-number", "STOP")
