"""Signed, expiring acknowledgement links for crisis emails.

A token (see clarion.signing) carries ``{"b": broadcast id, "c": customer id, "e": expiry}``.
Verifying needs the same secret (CLARION_ACK_SECRET); a changed payload or signature, or
an expired token, is refused. The HTTP endpoint that receives the click calls
:func:`verify_ack_token`.
"""

from __future__ import annotations

from datetime import datetime

from clarion import signing
from clarion.errors import ClarionError

MESSAGES = {
    "malformed": "malformed acknowledgement token",
    "signature": "acknowledgement token signature does not match",
    "expired": "acknowledgement token has expired",
}


class AckTokenError(ClarionError):
    pass


def make_ack_token(secret: str, broadcast_id: str, customer_id: str, expires_at: datetime) -> str:
    if not secret:
        raise AckTokenError("no acknowledgement secret configured (CLARION_ACK_SECRET)")
    return signing.sign(secret, {"b": broadcast_id, "c": customer_id}, expires_at)


def verify_ack_token(secret: str, token: str, now: datetime) -> tuple[str, str]:
    """(broadcast id, customer id) of a valid token; AckTokenError otherwise."""
    try:
        data = signing.verify(secret, token, now)
    except signing.TokenProblem as exc:
        raise AckTokenError(MESSAGES[exc.kind]) from exc
    return str(data["b"]), str(data["c"])
