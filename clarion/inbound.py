"""Inbound SMS: opt-out and opt-in keywords, HELP, and replies that acknowledge.

``handle_inbound_sms`` is what the CLI (`clarion consent inbound-sms`) and the HTTP
webhook call for every text a customer sends to Clarion's number:

- STOP and its synonyms revoke SMS for every purpose of every customer with that number,
  at once: sends already scheduled check consent at send time and are suppressed;
- START and its synonyms restore transactional and service SMS, and marketing SMS when
  it was a keyword that stopped it (an opt-in given elsewhere is not invented);
- HELP and INFO are answered with the configured help text;
- any other text is an ordinary reply: it acknowledges the active crisis broadcasts
  that reached the number.

Each consent change is a ledger record (source ``sms_keyword``) and an audit event.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from sqlalchemy import select

from clarion.config import Settings
from clarion.customers import normalise_phone
from clarion.models import AuditKind, Channel, ConsentStatus, Purpose
from clarion.policy.consent import ConsentFact
from clarion.policy.keywords import KeywordAction, classify
from clarion.store import Store, repo
from clarion.store import broadcasts as broadcast_repo
from clarion.store.tables import ContactPoint, Customer, utcnow

KEYWORD_SOURCE = "sms_keyword"


@dataclass(frozen=True)
class InboundResult:
    action: KeywordAction
    keyword: str
    phone: str
    customers: list[str] = field(default_factory=list)  # external ids with this number
    reply: str | None = None  # what to text back, if anything
    acknowledged: list[str] = field(default_factory=list)  # broadcasts acknowledged


async def handle_inbound_sms(
    store: Store, settings: Settings, sender: str, body: str, *, at: datetime | None = None
) -> InboundResult:
    """Process one inbound text; ValidationFailed when ``sender`` is not a phone number."""
    phone = normalise_phone(sender, settings.default_phone_region)
    keyword = classify(body)
    now = at or utcnow()
    async with store.transaction() as session:
        customers = list(
            (
                await session.execute(
                    select(Customer)
                    .join(ContactPoint, ContactPoint.customer_id == Customer.id)
                    .where(ContactPoint.kind == "phone", ContactPoint.value == phone)
                    .order_by(Customer.external_id)
                )
            ).scalars()
        )
        result = InboundResult(
            action=keyword.action,
            keyword=keyword.keyword,
            phone=phone,
            customers=[c.external_id for c in customers],
        )
        if keyword.action is KeywordAction.HELP:
            return replace(result, reply=settings.sms_help_text)
        if keyword.action is KeywordAction.NONE:
            acked = await broadcast_repo.ack_by_phone(session, phone=phone, at=now)
            return replace(result, acknowledged=acked)
        for customer in customers:
            if keyword.action is KeywordAction.OPT_OUT:
                # Delivery analytics: the customer's latest SMS within the window led to it.
                await repo.mark_opted_out(
                    session,
                    at=now,
                    channel=Channel.SMS,
                    customer_external_id=customer.external_id,
                    since=now - timedelta(days=settings.report_stop_window_days),
                )
            facts = await repo.consent_facts(session, customer=customer)
            for purpose in Purpose:
                if keyword.action is KeywordAction.OPT_OUT:
                    status = ConsentStatus.REVOKED
                else:
                    status = ConsentStatus.GRANTED
                    if purpose is Purpose.MARKETING and not _stopped_opt_in(facts):
                        continue  # START undoes a STOP; it is not a marketing opt-in
                await repo.record_consent(
                    session,
                    customer=customer,
                    channel=Channel.SMS,
                    purpose=purpose,
                    status=status,
                    source=f"{KEYWORD_SOURCE}:{keyword.keyword}",
                    at=now,
                )
                await repo.append_audit(
                    session,
                    kind=AuditKind.CONSENT_CHANGED,
                    customer_external_id=customer.external_id,
                    channel=Channel.SMS,
                    actor="customer",
                    reason=f"inbound SMS keyword {keyword.keyword}",
                    detail={"purpose": purpose.value, "status": status.value},
                )
        reply = (
            settings.sms_stop_reply
            if keyword.action is KeywordAction.OPT_OUT
            else settings.sms_start_reply
        )
        return replace(result, reply=reply)


def _stopped_opt_in(facts: list[ConsentFact]) -> bool:
    """Was marketing SMS granted until keywords stopped it? (The latest facts are keyword
    revocations, and the one before them a grant.)"""
    history = sorted(
        (f for f in facts if f.channel is Channel.SMS and f.purpose is Purpose.MARKETING),
        key=lambda f: f.recorded_at,
    )
    stopped = False
    for fact in reversed(history):
        if fact.status is ConsentStatus.REVOKED and fact.source.startswith(KEYWORD_SOURCE):
            stopped = True
            continue
        return stopped and fact.status is ConsentStatus.GRANTED
    return False
