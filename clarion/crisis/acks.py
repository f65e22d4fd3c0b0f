"""Signed, expiring acknowledgement links for crisis emails.

A token is ``base64url(payload).base64url(hmac_sha256(secret, payload))`` with the payload
``{"b": broadcast id, "c": customer id, "e": expiry (unix seconds)}``. Verifying needs the
same secret (CLARION_ACK_SECRET); a changed payload or signature, or an expired token, is
refused. The HTTP endpoint that receives the click calls :func:`verify_ack_token`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import datetime

from clarion.errors import ClarionError


class AckTokenError(ClarionError):
    pass


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_ack_token(secret: str, broadcast_id: str, customer_id: str, expires_at: datetime) -> str:
    if not secret:
        raise AckTokenError("no acknowledgement secret configured (CLARION_ACK_SECRET)")
    payload = json.dumps(
        {"b": broadcast_id, "c": customer_id, "e": int(expires_at.timestamp())},
        separators=(",", ":"),
    ).encode()
    signature = hmac.new(secret.encode(), payload, hashlib.sha256).digest()
    return f"{_b64(payload)}.{_b64(signature)}"


def verify_ack_token(secret: str, token: str, now: datetime) -> tuple[str, str]:
    """(broadcast id, customer id) of a valid token; AckTokenError otherwise."""
    try:
        payload_part, signature_part = token.split(".", 1)
        payload, signature = _unb64(payload_part), _unb64(signature_part)
    except (ValueError, TypeError) as exc:
        raise AckTokenError("malformed acknowledgement token") from exc
    expected = hmac.new(secret.encode(), payload, hashlib.sha256).digest()
    if not secret or not hmac.compare_digest(signature, expected):
        raise AckTokenError("acknowledgement token signature does not match")
    data = json.loads(payload)
    if now.timestamp() > data["e"]:
        raise AckTokenError("acknowledgement token has expired")
    return str(data["b"]), str(data["c"])
