"""Signed, expiring tokens for links in messages (acknowledgements, unsubscribes).

A token is ``base64url(payload).base64url(hmac_sha256(secret, context + payload))`` with a
compact JSON payload that carries its expiry as ``"e"`` (unix seconds). ``context``
separates the kinds of token, so one kind's token is never valid as another's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import datetime
from typing import Any


class TokenProblem(ValueError):
    """Why a token is refused: ``malformed``, ``signature`` or ``expired``."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(secret: str, payload: dict[str, Any], expires_at: datetime, context: bytes = b"") -> str:
    body = json.dumps({**payload, "e": int(expires_at.timestamp())}, separators=(",", ":"))
    raw = body.encode()
    signature = hmac.new(secret.encode(), context + raw, hashlib.sha256).digest()
    return f"{_b64(raw)}.{_b64(signature)}"


def verify(secret: str, token: str, now: datetime, context: bytes = b"") -> dict[str, Any]:
    """The payload of a valid token; TokenProblem otherwise."""
    try:
        payload_part, signature_part = token.split(".", 1)
        payload, signature = _unb64(payload_part), _unb64(signature_part)
    except (ValueError, TypeError) as exc:
        raise TokenProblem("malformed") from exc
    expected = hmac.new(secret.encode(), context + payload, hashlib.sha256).digest()
    if not secret or not hmac.compare_digest(signature, expected):
        raise TokenProblem("signature")
    data: dict[str, Any] = json.loads(payload)
    if now.timestamp() > data["e"]:
        raise TokenProblem("expired")
    return data
