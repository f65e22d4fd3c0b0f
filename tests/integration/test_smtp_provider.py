"""The SMTP provider against a real SMTP server (aiosmtpd on loopback): what arrives is what
the email package would have written, whether the message was composed directly or built
with the email package, and a server without 8BITMIME gets 7-bit messages."""

from __future__ import annotations

import email
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest

from clarion.channels import email as email_channel
from clarion.channels.base import OutgoingEmail
from clarion.channels.email import SmtpEmailProvider
from clarion.config import Settings
from clarion.errors import PermanentChannelError, RetryableChannelError
from tests.support.smtp_server import SmtpServer
from tests.unit.test_mime import flat, normalised

SENDER = "Clarion Tests <noreply@clarion.test>"


@pytest.fixture
def seven_bit_server() -> Iterator[SmtpServer]:
    server = SmtpServer(eight_bit=False)
    server.start()
    yield server
    server.stop()


def provider_for(server: SmtpServer, tmp_path: Path, **extra: Any) -> SmtpEmailProvider:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        home=tmp_path,
        smtp_host="127.0.0.1",
        smtp_port=server.port,
        email_from=SENDER,
        **extra,
    )
    return SmtpEmailProvider(settings)


def parsed(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def text_of(message: EmailMessage, subtype: str) -> str:
    part = message.get_body(preferencelist=(subtype,))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")  # an 8bit body keeps its CRLF


SIMPLE = OutgoingEmail(
    "crisis-b1-g1-c7",
    "c7@example.com",
    "Service disruption",
    "Hello Jürgen. We are aware of a disruption.",
    "<p>Hello Jürgen.</p>",
    (("List-Unsubscribe", "<https://clarion.test/u/tok>"),),
)
NOT_SIMPLE = OutgoingEmail("m-2", "zoe@example.com", "Bienvenue Zoé", "Prêt ✓\n", "<p>✓</p>")


async def test_a_simple_message_is_composed_without_the_email_package(
    smtp_server: SmtpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The common message never touches build_email (so none of its cost), and the server
    receives the bytes the email package would have sent."""
    expected = normalised(flat(email_channel.build_email(SIMPLE, SENDER), "8bit"))

    def refuse(*_: object) -> EmailMessage:
        raise AssertionError("build_email called for a simple message")

    monkeypatch.setattr(email_channel, "build_email", refuse)
    provider = provider_for(smtp_server, tmp_path)
    try:
        receipt = await provider.send(SIMPLE)
    finally:
        await provider.aclose()
    [received] = smtp_server.with_id(SIMPLE.message_id)
    assert normalised(received.raw) == expected
    assert "BODY=8BITMIME" in received.mail_options
    assert receipt.provider_message_id == "<crisis-b1-g1-c7@clarion.test>"
    assert received.message["Message-ID"] == receipt.provider_message_id
    assert text_of(parsed(received.raw), "plain") == "Hello Jürgen. We are aware of a disruption.\n"
    sent_at = parsedate_to_datetime(str(received.message["Date"]))
    assert abs((datetime.now(UTC) - sent_at).total_seconds()) < 5


async def test_other_messages_are_built_by_the_email_package(
    smtp_server: SmtpServer, tmp_path: Path
) -> None:
    provider = provider_for(smtp_server, tmp_path)
    try:
        await provider.send(NOT_SIMPLE)
    finally:
        await provider.aclose()
    [received] = smtp_server.with_id(NOT_SIMPLE.message_id)
    message = parsed(received.raw)
    assert message["Subject"] == "Bienvenue Zoé"
    assert b"\r\nSubject: Bienvenue =?utf-8?q?Zo=C3=A9?=\r\n" in received.raw
    assert text_of(message, "plain") == "Prêt ✓\n"
    assert text_of(message, "html") == "<p>✓</p>\n"


async def test_a_server_without_8bitmime_gets_7bit_messages(
    seven_bit_server: SmtpServer, tmp_path: Path
) -> None:
    """A composed body with non-ASCII text is re-encoded by the email package for such a
    server; an ASCII one goes as composed."""
    ascii_only = OutgoingEmail("m-3", "a@example.com", "Status", "All is well.")
    provider = provider_for(seven_bit_server, tmp_path)
    try:
        await provider.send(SIMPLE)
        await provider.send(ascii_only)
    finally:
        await provider.aclose()
    [received] = seven_bit_server.with_id(SIMPLE.message_id)
    assert received.raw.isascii()
    assert "BODY=8BITMIME" not in received.mail_options
    assert re.search(rb"Content-Transfer-Encoding: (base64|quoted-printable)", received.raw)
    message = parsed(received.raw)
    assert text_of(message, "plain") == "Hello Jürgen. We are aware of a disruption.\n"
    assert text_of(message, "html") == "<p>Hello Jürgen.</p>\n"
    [plain] = seven_bit_server.with_id("m-3")
    assert normalised(plain.raw) == normalised(
        flat(email_channel.build_email(ascii_only, SENDER), "7bit")
    )


async def test_a_refused_recipient_is_a_permanent_error_and_the_next_message_goes_out(
    smtp_server: SmtpServer, tmp_path: Path
) -> None:
    """A 550 for one recipient is a permanent error with its code, and the next message
    goes out (on a new connection), its SIZE declared right."""
    refused = OutgoingEmail("m-refused", "gone@example.com", "Status", "Hello.")
    accepted = OutgoingEmail("m-accepted", "here@example.com", "Status", "Hello again.")
    smtp_server.refuse.add(refused.to)
    provider = provider_for(smtp_server, tmp_path, smtp_pool_size=1)
    try:
        first = OutgoingEmail("m-first", "first@example.com", "Status", "First.")
        await provider.send(first)
        with pytest.raises(PermanentChannelError, match="recipient refused: 550") as caught:
            await provider.send(refused)
        await provider.send(accepted)
    finally:
        smtp_server.refuse.discard(refused.to)
        await provider.aclose()
    assert caught.value.code == "550"
    assert smtp_server.with_id(refused.message_id) == []
    [after] = smtp_server.with_id(accepted.message_id)
    assert after.rcpt_tos == ["here@example.com"]
    assert f"SIZE={len(after.raw)}" in after.mail_options


async def test_a_server_that_stops_answering_is_a_retryable_timeout(
    tmp_path: Path,
) -> None:
    """A reply that does not come within CLARION_SMTP_TIMEOUT ends the send with a retryable
    error, and the connection is dropped: the next message opens a new one."""
    server = SmtpServer()
    server.start()
    provider = provider_for(server, tmp_path, smtp_timeout=0.5, smtp_pool_size=1)
    try:
        server.stall_rcpt.set()
        # The server would answer 451 after a minute: "SMTP unavailable" is the timeout.
        timed_out = r"SMTP unavailable: no reply within 0\.5 s"
        with pytest.raises(RetryableChannelError, match=timed_out):
            await provider.send(OutgoingEmail("m-stalled", "slow@example.com", "S", "t"))
        assert server.stalled.is_set()
        server.stall_rcpt.clear()
        server.release.set()
        await provider.send(OutgoingEmail("m-after", "fast@example.com", "S", "t"))
    finally:
        server.release.set()
        await provider.aclose()
        server.stop()
    assert server.with_id("m-stalled") == []
    [after] = server.with_id("m-after")
    assert after.rcpt_tos == ["fast@example.com"]
