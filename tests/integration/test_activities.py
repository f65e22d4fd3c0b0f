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
from tests.conftest import add_customer, make_settings, uid, unique_phone
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


async def test_a_retried_broadcast_batch_counts_what_an_earlier_attempt_wrote(
    store: Store, smtp_server: SmtpServer, fake_twilio: FakeTwilio, tmp_path: Path
) -> None:
    """From the store, the recipients of the batch's range an earlier attempt wrote for
    the current generation (first pass) or escalated (escalation pass), by status; the
    channel only for the reached."""
    from datetime import UTC, datetime

    from activities.broadcast import BroadcastActivities
    from clarion.crisis.models import BatchInput
    from clarion.store.tables import Broadcast, BroadcastRecipient

    settings = make_settings(tmp_path, store, smtp_server, fake_twilio, task_queue="unused")
    acts = BroadcastActivities(store, {}, settings)
    broadcast_id, now = uid("b"), datetime.now(UTC)
    rows = [  # seq, status, channel, gen_sent, escalated, reason
        (1, "sent", "email", 2, False, ""),  # before the range
        (2, "sent", "email", 2, True, ""),
        (3, "sent", "sms", 2, True, "escalation: voice: no_contact_point"),
        (4, "failed", None, 2, False, "email: refused"),
        (5, "suppressed", None, 2, False, "email: opted_out"),
        (6, "sent", "email", 1, False, ""),  # reached with the previous generation only
        (7, "sending", None, 1, False, ""),
        (8, "pending", None, 0, False, ""),
        (9, "sent", "email", 2, False, ""),  # after the range
    ]
    async with store.transaction() as session:
        session.add(Broadcast(id=broadcast_id, incident_id="i", title="t", severity="high",
                              status="dispatching", current_gen=2))  # fmt: skip
        await session.flush()
        for seq, status, channel, gen_sent, escalated, reason in rows:
            session.add(
                BroadcastRecipient(
                    broadcast_id=broadcast_id, seq=seq, customer_external_id=f"c{seq}", tier=0,
                    status=status, channel=channel, gen_sent=gen_sent, reason=reason,
                    escalated_at=now if escalated else None,
                )
            )  # fmt: skip

    def batch(escalate: bool) -> BatchInput:
        channels = [Channel.VOICE] if escalate else [Channel.EMAIL]
        return BatchInput(broadcast_id=broadcast_id, tier=0, seq_from=1, seq_to=8,
                          channels=channels, workflow_id="wf", escalate=escalate)  # fmt: skip

    first_pass = await acts._written_already(batch(False), 2)
    # seq 6 was reached with the previous generation only: not written by this pass.
    assert first_pass.counts == {
        "0|email|sent": 1,
        "0|sms|sent": 1,
        "0|-|failed": 1,
        "0|-|suppressed": 1,
    }
    escalation = await acts._written_already(batch(True), 2)
    assert escalation.counts == {"0|voice|sent": 1, "0|-|failed": 1}


@pytest.mark.parametrize(
    "chosen",
    [
        list(range(3, 41)),  # one run: one range
        [5, 6, 7, 9, 10, 20, 21, 22, 40],  # a few runs
        list(range(1, 41, 2)),  # 20 runs: more than MAX_SEQ_RUNS, so IN
        [30, 2, 3, 1, 29, 29],  # out of order, a repeat
        [],
    ],
    ids=["one-run", "few-runs", "many-runs", "unordered", "none"],
)
async def test_a_chunk_updates_exactly_its_recipients_by_seq(
    store: Store, chosen: list[int]
) -> None:
    """The seqs a chunk marks and records, as ranges or IN: exactly those rows change."""
    from sqlalchemy import select, update

    from activities.broadcast import _seqs
    from clarion.store.tables import Broadcast, BroadcastRecipient

    broadcast_id = uid("b")
    async with store.transaction() as session:
        session.add(Broadcast(id=broadcast_id, incident_id="i", title="t", severity="high",
                              status="dispatching", current_gen=1))  # fmt: skip
        await session.flush()
        for seq in range(1, 41):
            session.add(
                BroadcastRecipient(
                    broadcast_id=broadcast_id,
                    seq=seq,
                    customer_external_id=f"c{seq}",
                    tier=0,
                    status="pending",
                    gen_sent=0,
                    reason="",
                )
            )
    async with store.transaction() as session:
        await session.execute(
            update(BroadcastRecipient)
            .where(BroadcastRecipient.broadcast_id == broadcast_id, _seqs(chosen))
            .values(status="sending")
            .execution_options(synchronize_session=False)
        )
    async with store.session() as session:
        marked = await session.scalars(
            select(BroadcastRecipient.seq)
            .where(
                BroadcastRecipient.broadcast_id == broadcast_id,
                BroadcastRecipient.status == "sending",
            )
            .order_by(BroadcastRecipient.seq)
        )
        assert list(marked) == sorted(set(chosen))


async def test_a_broadcast_batch_applies_each_jurisdictions_rules(
    store: Store, smtp_server: SmtpServer, fake_twilio: FakeTwilio, tmp_path: Path
) -> None:
    """Crisis and service broadcasts are held back only where quiet hours or caps are
    configured for their purpose, and consent follows each customer's jurisdiction and
    own facts: the held-back channel is skipped down the ladder, or the recipient is
    suppressed with the reason."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import select

    from activities.broadcast import BroadcastActivities
    from clarion.crisis.models import Audience, BatchInput, BroadcastInput, Incident, Tier
    from clarion.store.tables import BroadcastRecipient

    now = datetime.now(UTC)
    closed = f"{(now.hour + 2) % 24:02d}:00-{(now.hour + 3) % 24:02d}:00"  # not now
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "jurisdictions:\n"
        "  QUIET:\n"
        f"    quiet_hours: [{{purposes: [service], channels: [email], allowed: '{closed}'}}]\n"
        "  CAPPED:\n"
        "    caps: [{purpose: service, channels: [email], max: 1, per: 1d, action: suppress}]\n"
        "  OPTIN:\n"
        "    consent: {service: {email: opt_in}}\n"
    )
    settings = make_settings(
        tmp_path, store, smtp_server, fake_twilio, task_queue="unused", compliance_file=rules
    )
    providers = build_providers(settings)
    acts = BroadcastActivities(store, providers, settings)
    run = uid("run")

    async def customer(jurisdiction: str | None, phone: bool = True, **more: object) -> str:
        attributes = {"run": run} | ({"jurisdiction": jurisdiction} if jurisdiction else {})
        return (
            await add_customer(
                store,
                phone=unique_phone() if phone else None,
                timezone="UTC",
                attributes=attributes,
                **more,  # type: ignore[arg-type]
            )
        ).external_id

    # In seq order: the default jurisdiction's decisions come first.
    plain = await customer(None)
    opted_out = await customer(None, consents=[(Channel.EMAIL, Purpose.SERVICE,
                                                ConsentStatus.REVOKED)])  # fmt: skip
    opt_in = await customer("OPTIN")
    quiet = await customer("QUIET")
    quiet_email_only = await customer("QUIET", phone=False)
    capped = await customer("CAPPED")
    uncapped = await customer(None)
    async with store.transaction() as session:
        session.add(
            Delivery(attempt_id=f"earlier-{capped}:email", message_id=f"earlier-{capped}",
                     workflow_id="wf", customer_external_id=capped, channel="email",
                     template="test-notice", template_version=1, purpose="service",
                     status="sent", sent_at=now - timedelta(hours=1))
        )  # fmt: skip
    broadcast_id = uid("b")
    env = ActivityEnvironment()
    prepared = await env.run(
        acts.prepare_broadcast,
        BroadcastInput(
            broadcast_id=broadcast_id,
            incident=Incident(id=uid("inc"), title="Outage"),
            template="crisis-outage",
            audience=Audience(segment=f"run == '{run}'"),
            tiers=[Tier(name="all", segment="true", channels=[Channel.EMAIL, Channel.SMS])],
        ),
    )
    assert prepared.ok, prepared.error
    [tier] = prepared.ranges
    await env.run(
        acts.send_broadcast_batch,
        BatchInput(broadcast_id=broadcast_id, tier=0, seq_from=tier.seq_from,
                   seq_to=tier.seq_to, channels=[Channel.EMAIL, Channel.SMS],
                   workflow_id="wf"),
    )  # fmt: skip
    for provider in providers.values():
        await provider.aclose()
    async with store.session() as session:
        rows = await session.execute(
            select(
                BroadcastRecipient.customer_external_id,
                BroadcastRecipient.status,
                BroadcastRecipient.channel,
                BroadcastRecipient.reason,
            ).where(BroadcastRecipient.broadcast_id == broadcast_id)
        )
        outcome = {ext: (status, channel, reason) for ext, status, channel, reason in rows}
    assert outcome[plain] == ("sent", "email", "")
    assert outcome[uncapped] == ("sent", "email", "")
    assert outcome[opted_out] == ("sent", "sms", "")
    assert outcome[opt_in] == ("sent", "sms", "")
    assert outcome[quiet] == ("sent", "sms", "")
    assert outcome[capped] == ("sent", "sms", "")
    status, channel, reason = outcome[quiet_email_only]
    assert (status, channel) == ("suppressed", None)
    assert reason.startswith(f"email: quiet_hours: outside {closed}"), reason
