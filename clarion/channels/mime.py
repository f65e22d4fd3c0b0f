"""Compose the wire bytes of an email directly, for the messages Clarion sends most.

Building a message with the standard library's ``email`` package parses every header into
a token tree and folds it back at flattening: about 0.6 ms of CPU per message here, which
made the SMTP client the bottleneck of a broadcast (the sink takes a message in under a
millisecond). :func:`compose` writes the same bytes with string operations when every part
of the message is simple - ASCII headers that need neither quoting, encoding nor folding,
a dot-atom recipient, bodies whose lines fit in 998 octets - and returns ``None``
otherwise, so the caller builds the message with the ``email`` package as before.

"The same bytes" is meant literally: tests compare :func:`compose` with the ``email``
package's output (Date and the random multipart boundary aside) over many messages, simple
and not, so a case this module gets wrong is a failing test, not a different email.
"""

from __future__ import annotations

import random
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import HeaderRegistry
from email.utils import format_datetime

from clarion.channels.base import OutgoingEmail

MAX_LINE = 998  # RFC 5322; Clarion's policy folds nothing shorter

# An addr-spec the email package writes back unchanged: dot-atom local part and domain.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = rf"{_ATEXT}(?:\.{_ATEXT})*"
ADDR_SPEC = re.compile(rf"{_DOT_ATOM}@{_DOT_ATOM}")
_MSG_ID = re.compile(rf"<{_DOT_ATOM}@{_DOT_ATOM}>")
# An unstructured value written back unchanged: printable ASCII words, one space apart.
_PLAIN = re.compile(r"[!-~]+(?: [!-~]+)*")
_FIELD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
# Names the email package parses as structured headers, and those compose writes itself.
_STRUCTURED = frozenset(HeaderRegistry().registry) | {"x-clarion-message-id"}


@dataclass(frozen=True, slots=True)
class Composed:
    """A message ready for DATA. ``eight_bit``: a body has non-ASCII octets, so it may go
    only to a server that offers 8BITMIME (otherwise build the message the slow way)."""

    data: bytes
    eight_bit: bool


def smtp_date(now: datetime | None = None) -> str:
    """The Date header's value, as the email package writes ``formatdate(usegmt=True)``."""
    return format_datetime((now or datetime.now(UTC)).replace(microsecond=0))


def _plain(name: str, value: str) -> bool:
    return (
        len(name) + 2 + len(value) <= MAX_LINE
        and _PLAIN.fullmatch(value) is not None
        and "=?" not in value  # would be read as an RFC 2047 encoded word
    )


def _body(text: str) -> tuple[bytes, bool] | None:
    """``text`` as the email package encodes a text part when it picks 7bit or 8bit:
    UTF-8, every line ending CRLF, one at the end. ``None`` for a line too long."""
    try:
        lines = text.encode("utf-8").splitlines()
    except UnicodeEncodeError:  # lone surrogates: leave it to the email package
        return None
    for line in lines:
        if len(line) > MAX_LINE:
            return None
    body = b"\r\n".join(lines) + b"\r\n"
    return body, not body.isascii()


def _text_headers(subtype: str, eight_bit: bool) -> bytes:
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
        f"Content-Transfer-Encoding: {'8bit' if eight_bit else '7bit'}\r\n"
    ).encode("ascii")


def _boundary(*bodies: bytes) -> bytes:
    """A boundary like the email package's, not found in any body."""
    while True:
        boundary = b"=" * 15 + b"%019d" % random.randrange(sys.maxsize) + b"=="
        if not any(boundary in body for body in bodies):
            return boundary


def compose(
    message: OutgoingEmail, from_line: bytes, message_id: str, date: str
) -> Composed | None:
    """The bytes of ``message`` as :func:`clarion.channels.email.build_email` and Clarion's
    policy would flatten them (CRLF line ends), or ``None`` when the message is not simple
    enough to write directly.

    ``from_line``: the folded ``From`` header, CRLF included (the sender is the same for
    every message, so the caller folds it once); ``message_id``: the Message-ID header's
    value; ``date``: the Date header's value (:func:`smtp_date`)."""
    if not (
        ADDR_SPEC.fullmatch(message.to)
        and _plain("Subject", message.subject)
        and _plain("X-Clarion-Message-Id", message.message_id)
        and _MSG_ID.fullmatch(message_id)
    ):
        return None
    for name, value in message.headers:
        if (
            not _FIELD_NAME.fullmatch(name)
            or name.lower() in _STRUCTURED
            or not _plain(name, value)
        ):
            return None
    text = _body(message.text)
    if text is None:
        return None
    html = None
    if message.html is not None:
        html = _body(message.html)
        if html is None:
            return None
    head = [
        from_line,
        f"To: {message.to}\r\n"
        f"Subject: {message.subject}\r\n"
        f"Date: {date}\r\n"
        f"Message-ID: {message_id}\r\n"
        f"X-Clarion-Message-Id: {message.message_id}\r\n".encode("ascii"),
    ]
    head.extend(f"{name}: {value}\r\n".encode("ascii") for name, value in message.headers)
    if html is None:
        body, eight_bit = text
        return Composed(
            b"".join(
                (*head, _text_headers("plain", eight_bit), b"MIME-Version: 1.0\r\n\r\n", body)
            ),
            eight_bit,
        )
    (text_body, text_8bit), (html_body, html_8bit) = text, html
    boundary = _boundary(text_body, html_body)
    data = b"".join(
        (
            *head,
            b'MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="',
            boundary,
            b'"\r\n\r\n--',
            boundary,
            b"\r\n",
            _text_headers("plain", text_8bit),
            b"\r\n",
            text_body,
            b"\r\n--",
            boundary,
            b"\r\n",
            _text_headers("html", html_8bit),
            b"MIME-Version: 1.0\r\n\r\n",
            html_body,
            b"\r\n--",
            boundary,
            b"--\r\n",
        )
    )
    return Composed(data, text_8bit or html_8bit)
