"""One-click unsubscribe (RFC 8058) for marketing email.

Every marketing email carries ``List-Unsubscribe: <{base}/unsubscribe/{token}>`` and
``List-Unsubscribe-Post: List-Unsubscribe=One-Click``. The token is signed with
CLARION_UNSUBSCRIBE_SECRET (HMAC-SHA256) and expires; it names the customer, the channel
and the purpose. :func:`apply_unsubscribe` verifies a token and records the opt-out in
the consent ledger (source ``list_unsubscribe``): it is what the HTTP endpoint calls
when the mailbox provider POSTs the one-click request.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from clarion import signing
from clarion.config import Settings
from clarion.errors import ClarionError
from clarion.models import AuditKind, Channel, ConsentStatus, Purpose
from clarion.store import Store, repo

SOURCE = "list_unsubscribe"


class UnsubscribeTokenError(ClarionError):
    pass


@dataclass(frozen=True)
class UnsubscribeClaim:
    customer_id: str
    channel: Channel
    purpose: Purpose
    message_id: str


CONTEXT = b"unsubscribe:"
MESSAGES = {
    "malformed": "malformed unsubscribe token",
    "signature": "unsubscribe token signature does not match",
    "expired": "unsubscribe token has expired",
}


def make_unsubscribe_token(secret: str, claim: UnsubscribeClaim, expires_at: datetime) -> str:
    if not secret:
        raise UnsubscribeTokenError("no unsubscribe secret configured (CLARION_UNSUBSCRIBE_SECRET)")
    payload = {
        "c": claim.customer_id,
        "ch": claim.channel.value,
        "p": claim.purpose.value,
        "m": claim.message_id,
    }
    return signing.sign(secret, payload, expires_at, CONTEXT)


def verify_unsubscribe_token(secret: str, token: str, now: datetime) -> UnsubscribeClaim:
    """The claim of a valid token; UnsubscribeTokenError when changed, foreign or expired."""
    try:
        data = signing.verify(secret, token, now, CONTEXT)
    except signing.TokenProblem as exc:
        raise UnsubscribeTokenError(MESSAGES[exc.kind]) from exc
    return UnsubscribeClaim(
        customer_id=str(data["c"]),
        channel=Channel(data["ch"]),
        purpose=Purpose(data["p"]),
        message_id=str(data["m"]),
    )


def list_unsubscribe_headers(
    settings: Settings, *, customer_id: str, message_id: str, now: datetime
) -> dict[str, str]:
    """The RFC 8058 headers of a marketing email (none without a secret)."""
    secret = settings.unsubscribe_secret.get_secret_value()
    if not secret:
        return {}
    claim = UnsubscribeClaim(customer_id, Channel.EMAIL, Purpose.MARKETING, message_id)
    token = make_unsubscribe_token(
        secret, claim, now + timedelta(days=settings.unsubscribe_valid_days)
    )
    url = f"{settings.public_base_url.rstrip('/')}/unsubscribe/{token}"
    return {
        "List-Unsubscribe": f"<{url}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


async def apply_unsubscribe(
    store: Store, settings: Settings, token: str, now: datetime
) -> UnsubscribeClaim:
    """Verify ``token`` and record the opt-out (idempotent: a second click changes nothing
    more). UnsubscribeTokenError for a bad token; NotFound for an erased customer."""
    claim = verify_unsubscribe_token(settings.unsubscribe_secret.get_secret_value(), token, now)
    async with store.transaction() as session:
        customer = await repo.require_customer(session, external_id=claim.customer_id)
        facts = await repo.consent_facts(session, customer=customer)
        latest = [f for f in facts if f.channel is claim.channel and f.purpose is claim.purpose]
        if latest and latest[-1].status is ConsentStatus.REVOKED:
            return claim
        await repo.record_consent(
            session,
            customer=customer,
            channel=claim.channel,
            purpose=claim.purpose,
            status=ConsentStatus.REVOKED,
            source=SOURCE,
            at=now,
        )
        await repo.append_audit(
            session,
            kind=AuditKind.CONSENT_CHANGED,
            customer_external_id=claim.customer_id,
            message_id=claim.message_id,
            channel=claim.channel,
            actor="customer",
            reason="one-click unsubscribe",
            detail={"purpose": claim.purpose.value, "status": ConsentStatus.REVOKED.value},
        )
        # Delivery analytics: the message that carried the link led to the opt-out.
        await repo.mark_opted_out(
            session, at=now, message_id=claim.message_id, channel=claim.channel
        )
    return claim
