"""The direct MIME composer against the email package: the same bytes, or a refusal."""

from __future__ import annotations

import io
import random
import re
from datetime import UTC, datetime
from email.generator import BytesGenerator
from email.message import EmailMessage
from email.utils import formatdate

import pytest

from clarion.channels.base import OutgoingEmail
from clarion.channels.email import POLICY, build_email, message_id_header
from clarion.channels.mime import compose, smtp_date

SENDER = "Clarion Tests <noreply@clarion.test>"
FROM_LINE = POLICY.clone(linesep="\r\n").fold_binary(
    "From", POLICY.header_store_parse("From", SENDER)[1]
)


def flat(mail: EmailMessage, cte_type: str) -> bytes:
    """The message as the SMTP provider flattens it for a server with (8bit) or without
    (7bit) 8BITMIME."""
    buffer = io.BytesIO()
    policy = POLICY.clone(linesep="\r\n", utf8=False, cte_type=cte_type)
    BytesGenerator(buffer, policy=policy).flatten(mail)
    return buffer.getvalue()


def normalised(data: bytes) -> bytes:
    data = re.sub(rb"\r\nDate: [^\r]*", b"\r\nDate: -", data)
    return re.sub(rb"={15}\d{19}==", b"=boundary=", data)  # a random multipart boundary


def composed(message: OutgoingEmail) -> tuple[bytes, bool] | None:
    out = compose(message, FROM_LINE, message_id_header(message.message_id, SENDER), "-")
    return None if out is None else (out.data, out.eight_bit)


def assert_same_as_email_package(message: OutgoingEmail) -> bool:
    """``True`` when compose wrote the message (and then wrote what the email package
    writes), ``False`` when it declined."""
    out = composed(message)
    if out is None:
        return False
    data, eight_bit = out
    expected = normalised(flat(build_email(message, SENDER), "8bit"))
    assert normalised(data) == expected, message
    if not eight_bit:  # the same bytes go to a server without 8BITMIME
        assert normalised(data) == normalised(flat(build_email(message, SENDER), "7bit"))
    else:
        assert re.search(rb"Content-Transfer-Encoding: 8bit", data)
    return True


CRISIS = OutgoingEmail(
    "crisis-b1-g1-c42",
    "c42@bench.test",
    "Service disruption",
    "Hello Bench. We are aware of a disruption affecting your service. Please confirm you "
    "received this: https://clarion.test/ack/eyJiIjoiYjEifQ.c2ln",
)


@pytest.mark.parametrize(
    "message",
    [
        CRISIS,
        OutgoingEmail("m1", "jane@example.com", "Hello", "Plain\n", "<p>HTML</p>\n"),
        OutgoingEmail("m2", "o'neil+tag@mail.example.com", "Ünïcode body", "x"),
        OutgoingEmail("m3", "a@b.c", "S", "Hallo Jürgen.\n", "<p>Hallo Jürgen ✓</p>"),
        OutgoingEmail("m4", "a@b.c", "S", "plain ascii", "<p>ü</p>"),
        OutgoingEmail("m5", "a@b.c", "S", "", ""),
        OutgoingEmail("m6", "a@b.c", "S", "a\r\nb\rc\n\n\nd  \n ", "x\n"),
        OutgoingEmail("m7", "a@b.c", "S", "x" * 998, "y" * 998),
        OutgoingEmail("m8", "a@b.c", "S " * 400 + "end", ".\n..\n.x\nFrom me\n"),
        OutgoingEmail("a b/c", "a@b.c", "S", "t"),  # X-Clarion-Message-Id with a space
        OutgoingEmail(
            "renewal-7:reminder/1",
            "jane@example.com",
            "Your renewal",
            "Text",
            headers=(
                ("List-Unsubscribe", "<https://clarion.test/u/" + "t" * 300 + ">"),
                ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
            ),
        ),
    ],
)
def test_simple_messages_are_composed_byte_for_byte(message: OutgoingEmail) -> None:
    if message.message_id == "m2":  # a non-ASCII subject is left to the email package
        assert composed(message) is None
        return
    assert assert_same_as_email_package(message)


@pytest.mark.parametrize(
    "message",
    [
        OutgoingEmail("m", '"quoted local"@example.com', "S", "t"),  # quoting
        OutgoingEmail("m", "zoë@example.com", "S", "t"),  # SMTPUTF8
        OutgoingEmail("m", "a..b@example.com", "S", "t"),  # not a dot-atom
        OutgoingEmail("m", "a@b.c", "Bienvenue Zoé", "t"),  # an encoded word
        OutgoingEmail("m", "a@b.c", "two  spaces", "t"),
        OutgoingEmail("m", "a@b.c", "=?utf-8?q?x?=", "t"),  # read as an encoded word
        OutgoingEmail("m", "a@b.c", "s" * 990, "t"),  # would fold
        OutgoingEmail("m", "a@b.c", "S", "x" * 999),  # quoted-printable
        OutgoingEmail("m", "a@b.c", "S", "t", "y" * 999),
        OutgoingEmail("m", "a@b.c", "S", "t", headers=(("Reply-To", "b@c.d"),)),  # structured
        OutgoingEmail("m", "a@b.c", "S", "t", headers=(("X-Bad Name", "v"),)),
        OutgoingEmail("m", "a@b.c", "S", "t", headers=(("X-Tab", "a\tb"),)),
        OutgoingEmail("m", "a@b.c", "S", "lone \udc80 surrogate"),
    ],
)
def test_messages_that_need_the_email_package_are_declined(message: OutgoingEmail) -> None:
    assert composed(message) is None


ALPHABET = [chr(c) for c in range(32, 127)] + [" ", "  ", "\n", "\r\n", "\r", "\t", "ü", "✓"]
ALPHABET += ["=?", "?=", "\x00", "\x7f", "\u2028", "..", "@", "<", ">", '"']


def random_text(rng: random.Random, longest: int, *, header: bool = False) -> str:
    """Mostly printable ASCII (what compose takes: no line breaks in a header), sometimes
    anything from ALPHABET (what it must decline or get right)."""
    if rng.random() < 0.8:
        pool = ALPHABET[:95] if header else [*ALPHABET[:95], "\n", "ü"]
    else:
        pool = ALPHABET
    return "".join(rng.choice(pool) for _ in range(rng.randint(0, longest)))


def test_random_messages_are_composed_as_the_email_package_writes_them_or_declined() -> None:
    rng = random.Random(20261124)
    made = 0
    for _ in range(2000):
        local = rng.choice(["a", "o'neil+x", "x.y", "j_doe", ".a", "a..b", random_text(rng, 6)])
        headers = tuple(
            rng.choice(
                [
                    ("List-Unsubscribe", f"<https://x.test/u/{random_text(rng, 8, header=True)}>"),
                    ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
                    (f"X-{random_text(rng, 4)}", random_text(rng, 10, header=True)),
                    ("Reply-To", "a@b.c"),
                ]
            )
            for _ in range(rng.randint(0, 2))
        )
        message = OutgoingEmail(
            rng.choice(["crisis-b1-g1-c1", "a b/c", random_text(rng, 12, header=True)]),
            f"{local}@{rng.choice(['bench.test', 'mail.example.com', 'b', 'x..y'])}",
            rng.choice(
                [
                    "Service disruption",
                    random_text(rng, 30, header=True),
                    "x" * rng.choice([980, 990]),
                ]
            ),
            rng.choice([random_text(rng, 200), "Hello.\n" * 3, "y" * rng.choice([998, 999])]),
            rng.choice([None, random_text(rng, 100), "<p>x</p>"]),
            headers,
        )
        made += assert_same_as_email_package(message)
    assert made > 250  # the comparison covered many composed messages, not only refusals


def test_date_is_what_the_email_package_makes_of_formatdate() -> None:
    now = datetime(2026, 11, 24, 16, 10, 34, 987654, tzinfo=UTC)
    mail = EmailMessage(policy=POLICY)
    mail["Date"] = formatdate(now.timestamp(), localtime=False, usegmt=True)
    assert smtp_date(now) == str(mail["Date"]) == "Tue, 24 Nov 2026 16:10:34 +0000"
