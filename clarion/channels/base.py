"""The channel Protocol every provider implements, and the messages it sends."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from clarion.models import Channel

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_token(message_id: str) -> str:
    """A token for file names and Message-ID headers: the id itself when it is safe,
    otherwise a cleaned form plus a digest, so distinct ids never share a token."""
    cleaned = _UNSAFE.sub("-", message_id)
    if cleaned == message_id and not message_id.startswith("."):
        return message_id
    digest = hashlib.sha256(message_id.encode()).hexdigest()[:12]
    return f"{cleaned.lstrip('.')[:100]}.{digest}"


@dataclass(frozen=True)
class OutgoingEmail:
    message_id: str  # Clarion's message id; the idempotency key
    to: str
    subject: str
    text: str
    html: str | None = None
    headers: tuple[tuple[str, str], ...] = ()  # extra headers, e.g. List-Unsubscribe


@dataclass(frozen=True)
class OutgoingSms:
    message_id: str
    to: str  # E.164
    body: str


@dataclass(frozen=True)
class OutgoingCall:
    message_id: str
    to: str  # E.164
    say: str  # read out by text-to-speech


OutgoingMessage = OutgoingEmail | OutgoingSms | OutgoingCall


@dataclass(frozen=True)
class ProviderReceipt:
    """The provider accepted the message."""

    provider: str
    provider_message_id: str


@runtime_checkable
class Provider(Protocol):
    """Sends messages of one channel.

    ``send`` raises RetryableChannelError when trying again later may succeed
    (timeouts, 5xx, 429, connection refused) and PermanentChannelError when it
    cannot (invalid number, rejected recipient).
    """

    name: str
    channel: Channel

    async def send(self, message: OutgoingMessage) -> ProviderReceipt: ...

    async def aclose(self) -> None: ...
