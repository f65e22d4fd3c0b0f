"""A real SMTP server (aiosmtpd) on loopback that records what it accepts.

It can be stopped and started again on the same port (an outage), can refuse chosen
recipients with 550, can stall a transaction (to kill a worker mid-send), and can leave
8BITMIME out of its EHLO reply (a server that takes 7-bit messages only).
"""

from __future__ import annotations

import email
import socket
import threading
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: Message
    peer: tuple[str, int] = ("", 0)  # the client's address: one per SMTP connection
    raw: bytes = b""  # the message as it came in DATA (line ends CRLF)
    mail_options: tuple[str, ...] = ()

    @property
    def clarion_id(self) -> str:
        return str(self.message["X-Clarion-Message-Id"])


@dataclass
class _Handler:
    server: SmtpServer

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self.server.eight_bit:
            return responses
        return [r for r in responses if r[4:] != "8BITMIME"]

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if address in self.server.refuse:
            return "550 5.1.1 mailbox unavailable"
        if self.server.stall_rcpt.is_set():
            self.server.stalled.set()
            # Wait in a thread so aiosmtpd's loop keeps serving (and sees the client drop).
            import asyncio

            await asyncio.to_thread(self.server.release.wait, 60)
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content)
        with self.server.lock:
            self.server.received.append(
                Received(
                    envelope.mail_from,
                    list(envelope.rcpt_tos),
                    msg,
                    tuple(session.peer),
                    bytes(envelope.original_content),
                    tuple(envelope.mail_options),
                )
            )
        return "250 2.0.0 OK queued"


@dataclass
class SmtpServer:
    port: int = field(default_factory=free_port)
    received: list[Received] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stall_rcpt: threading.Event = field(default_factory=threading.Event)
    stalled: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    eight_bit: bool = True  # offer 8BITMIME
    _controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def running(self) -> bool:
        return self._controller is not None

    def to(self, address: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if address in r.rcpt_tos]

    def with_id(self, message_id: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.clarion_id == message_id]
