"""Local sinks: with no provider configured, each message is written as a file under
``.clarion/outbox/`` so that a new user can see exactly what would have been sent."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from pathlib import Path

from clarion.channels.base import (
    OutgoingCall,
    OutgoingEmail,
    OutgoingMessage,
    OutgoingSms,
    ProviderReceipt,
    safe_token,
)
from clarion.channels.email import build_email
from clarion.models import Channel


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class OutboxEmailProvider:
    """Writes ``<message id>.eml`` (a complete RFC 5322 message); rewriting is idempotent."""

    name = "outbox"
    channel = Channel.EMAIL

    def __init__(self, directory: Path, sender: str) -> None:
        self.directory = directory
        self._sender = sender

    async def send(self, message: OutgoingMessage) -> ProviderReceipt:
        if not isinstance(message, OutgoingEmail):
            raise TypeError("OutboxEmailProvider sends OutgoingEmail only")
        path = self.directory / f"{safe_token(message.message_id)}.email.eml"
        data = bytes(build_email(message, self._sender))
        await asyncio.to_thread(_write_atomically, path, data)
        return ProviderReceipt(provider=self.name, provider_message_id=str(path))

    async def aclose(self) -> None:
        return None


class _JsonOutbox:
    """Writes ``<message id>.<channel>.json`` with the message's fields; idempotent."""

    name = "outbox"
    channel: Channel
    kind: type[OutgoingSms] | type[OutgoingCall]

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def send(self, message: OutgoingMessage) -> ProviderReceipt:
        if not isinstance(message, self.kind):
            raise TypeError(f"{type(self).__name__} sends {self.kind.__name__} only")
        path = self.directory / f"{safe_token(message.message_id)}.{self.channel.value}.json"
        data = json.dumps(dataclasses.asdict(message), indent=2)
        await asyncio.to_thread(_write_atomically, path, data.encode())
        return ProviderReceipt(provider=self.name, provider_message_id=str(path))

    async def aclose(self) -> None:
        return None


class OutboxSmsProvider(_JsonOutbox):
    """Writes ``<message id>.sms.json`` with the recipient and the body."""

    channel = Channel.SMS
    kind = OutgoingSms


class OutboxVoiceProvider(_JsonOutbox):
    """Writes ``<message id>.voice.json`` with the number called and what would be said."""

    channel = Channel.VOICE
    kind = OutgoingCall
