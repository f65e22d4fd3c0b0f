"""Inbound SMS keywords change the consent ledger at once (no Temporal needed)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from clarion.config import Settings
from clarion.errors import ValidationFailed
from clarion.inbound import handle_inbound_sms
from clarion.models import AuditKind, Channel, ConsentStatus, Purpose
from clarion.policy import decide_consent
from clarion.policy.keywords import KeywordAction
from clarion.store import Store, repo
from clarion.store.tables import Delivery, utcnow
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


async def test_stop_is_attributed_to_the_latest_text_within_the_window(store: Store) -> None:
    """Delivery analytics: a STOP counts against the customer's latest SMS sent within
    CLARION_REPORT_STOP_WINDOW_DAYS (7 by default), not older ones, not other channels."""
    phone = unique_phone()
    fan = await add_customer(store, phone=phone)
    now = utcnow()

    def sent(n: int, channel: str, ago: timedelta) -> Delivery:
        return Delivery(
            attempt_id=f"{fan.external_id}-{n}:{channel}",
            message_id=f"{fan.external_id}-{n}",
            workflow_id=f"message:{fan.external_id}-{n}",
            customer_external_id=fan.external_id,
            channel=channel,
            template="test-notice",
            template_version=1,
            purpose="service",
            status="sent",
            created_at=now - ago,
            sent_at=now - ago,
        )

    rows = [
        sent(1, "sms", timedelta(days=9)),
        sent(2, "sms", timedelta(days=2)),
        sent(3, "sms", timedelta(days=1)),
        sent(4, "email", timedelta(hours=1)),
    ]
    async with store.transaction() as session:
        session.add_all(rows)
    await handle_inbound_sms(store, SETTINGS, phone, "STOP", at=now)
    async with store.session() as session:
        after = {
            r.attempt_id: r.opted_out_at
            for r in (
                await session.execute(
                    select(Delivery).where(Delivery.customer_external_id == fan.external_id)
                )
            ).scalars()
        }
    assert [a for a, at in sorted(after.items()) if at is not None] == [rows[2].attempt_id]
    # Outside the window, nothing is blamed.
    late_phone = unique_phone()
    late = await add_customer(store, phone=late_phone)
    async with store.transaction() as session:
        old = sent(5, "sms", timedelta(days=8))
        old.customer_external_id = late.external_id
        session.add(old)
    await handle_inbound_sms(store, SETTINGS, late_phone, "STOP", at=now)
    async with store.session() as session:
        row = await session.get(Delivery, old.attempt_id)
    assert row is not None and row.opted_out_at is None
