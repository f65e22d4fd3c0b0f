"""Channel providers without a network: error classification, MIME building, outbox sinks."""

from __future__ import annotations

import email
import io
import json
import re
from email import policy
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest
import requests
from twilio.base.exceptions import TwilioException, TwilioRestException

from clarion.channels import OutboxEmailProvider, OutboxSmsProvider, OutgoingEmail, OutgoingSms
from clarion.channels.base import Provider, ProviderReceipt
from clarion.channels.email import build_email, classify_smtp_error, message_id_header
from clarion.channels.sms import classify_twilio_error
from clarion.errors import ChannelError, PermanentChannelError, RetryableChannelError
from clarion.models import Channel

SENDER = "Clarion Tests <noreply@clarion.test>"


def names(directory: Path) -> list[str]:
    """File names in ``directory``, sorted (a sync helper: async tests call it)."""
    return sorted(p.name for p in directory.iterdir())


def refused(*codes: int) -> aiosmtplib.SMTPRecipientsRefused:
    return aiosmtplib.SMTPRecipientsRefused(
        [
            aiosmtplib.SMTPRecipientRefused(code, f"message {code}", f"r{i}@example.com")
            for i, code in enumerate(codes)
        ]
    )


# -- SMTP classification


def test_recipient_refused_550_is_permanent() -> None:
    error = classify_smtp_error(refused(550))
    assert type(error) is PermanentChannelError
    assert error.code == "550"
    assert error.provider == "smtp"
    assert "550 message 550" in str(error)


def test_recipient_deferred_450_is_retryable() -> None:
    error = classify_smtp_error(refused(450))
    assert type(error) is RetryableChannelError
    assert error.code == "450"
    assert error.provider == "smtp"


def test_recipients_mixed_codes_are_retryable() -> None:
    error = classify_smtp_error(refused(550, 451))
    assert type(error) is RetryableChannelError
    assert error.code == "550"


def test_all_recipients_5xx_is_permanent() -> None:
    error = classify_smtp_error(refused(550, 553))
    assert type(error) is PermanentChannelError
    assert error.code == "550"


def test_recipients_refused_with_no_recipients_is_retryable() -> None:
    error = classify_smtp_error(aiosmtplib.SMTPRecipientsRefused([]))
    assert type(error) is RetryableChannelError
    assert error.code == ""


@pytest.mark.parametrize(
    "exc",
    [
        aiosmtplib.SMTPConnectError("connection refused"),
        aiosmtplib.SMTPServerDisconnected("gone"),
        aiosmtplib.SMTPTimeoutError("slow"),
        aiosmtplib.SMTPReadTimeoutError("slow read"),
        aiosmtplib.SMTPConnectTimeoutError("slow connect"),
        ConnectionRefusedError(111, "Connection refused"),
        ConnectionResetError(104, "reset"),
        TimeoutError("timed out"),
        OSError(101, "Network is unreachable"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_transport_errors_are_retryable(exc: Exception) -> None:
    error = classify_smtp_error(exc)
    assert type(error) is RetryableChannelError
    assert error.provider == "smtp"
    assert str(error).startswith("SMTP unavailable: ")


@pytest.mark.parametrize(
    ("exc", "kind", "code"),
    [
        (aiosmtplib.SMTPResponseException(554, "Transaction failed"), PermanentChannelError, "554"),
        (aiosmtplib.SMTPResponseException(421, "Try later"), RetryableChannelError, "421"),
        (aiosmtplib.SMTPResponseException(452, "Storage"), RetryableChannelError, "452"),
        (aiosmtplib.SMTPDataError(552, "Too big"), PermanentChannelError, "552"),
        (aiosmtplib.SMTPSenderRefused(451, "Greylisted", "a@b.c"), RetryableChannelError, "451"),
        (aiosmtplib.SMTPSenderRefused(553, "No", "a@b.c"), PermanentChannelError, "553"),
        (aiosmtplib.SMTPRecipientRefused(550, "No such", "a@b.c"), PermanentChannelError, "550"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_response_codes_decide(exc: Exception, kind: type[ChannelError], code: str) -> None:
    error = classify_smtp_error(exc)
    assert type(error) is kind
    assert error.code == code
    assert str(error).startswith(f"SMTP {code}: ")


def test_missing_extension_is_permanent() -> None:
    error = classify_smtp_error(aiosmtplib.SMTPNotSupported("no STARTTLS"))
    assert type(error) is PermanentChannelError
    assert "no STARTTLS" in str(error)


def test_unknown_smtp_error_is_retryable() -> None:
    error = classify_smtp_error(RuntimeError("weird"))
    assert type(error) is RetryableChannelError
    assert "RuntimeError('weird')" in str(error)


# -- Twilio classification


def test_twilio_invalid_number_is_permanent_with_code() -> None:
    exc = TwilioRestException(status=400, uri="/x", msg="bad", code=21211)
    error = classify_twilio_error(exc)
    assert type(error) is PermanentChannelError
    assert error.code == "21211"
    assert error.provider == "twilio"
    assert str(error) == "Twilio 400 (code 21211): bad"


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_twilio_throttling_and_server_errors_are_retryable(status: int) -> None:
    exc = TwilioRestException(status=status, uri="/x", msg="later", code=20429)
    error = classify_twilio_error(exc)
    assert type(error) is RetryableChannelError
    assert error.code == "20429"
    assert error.provider == "twilio"


def test_twilio_error_without_code() -> None:
    error = classify_twilio_error(TwilioRestException(status=404, uri="/x", msg="nope"))
    assert type(error) is PermanentChannelError
    assert error.code == ""
    assert str(error) == "Twilio 404 (code -): nope"


@pytest.mark.parametrize(
    "exc",
    [
        requests.ConnectionError("refused"),
        requests.Timeout("slow"),
        requests.exceptions.ReadTimeout("slow read"),
        ConnectionRefusedError(111, "refused"),
        TimeoutError("slow"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_twilio_transport_errors_are_retryable(exc: Exception) -> None:
    error = classify_twilio_error(exc)
    assert type(error) is RetryableChannelError
    assert error.provider == "twilio"
    assert str(error).startswith("Twilio unavailable: ")


def test_twilio_other_errors_are_retryable() -> None:
    assert type(classify_twilio_error(TwilioException("odd"))) is RetryableChannelError
    assert type(classify_twilio_error(ValueError("odd"))) is RetryableChannelError


# -- building email


def test_build_email_with_html_is_multipart_alternative() -> None:
    message = OutgoingEmail(
        message_id="msg-1",
        to="jane@example.com",
        subject="Hello Jane",
        text="Plain body\n",
        html="<p>HTML body</p>\n",
    )
    mail = build_email(message, SENDER)
    assert mail.get_content_type() == "multipart/alternative"
    parts = list(mail.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert isinstance(parts[0], EmailMessage)
    assert isinstance(parts[1], EmailMessage)
    assert parts[0].get_content() == "Plain body\n"
    assert parts[1].get_content() == "<p>HTML body</p>\n"
    assert mail["From"] == SENDER
    assert mail["To"] == "jane@example.com"
    assert mail["Subject"] == "Hello Jane"
    assert mail["Date"]
    assert mail["X-Clarion-Message-Id"] == "msg-1"
    assert mail["Message-ID"] == "<msg-1@clarion.test>"


def test_build_email_without_html_is_text_plain_only() -> None:
    message = OutgoingEmail(message_id="m2", to="jane@example.com", subject="S", text="Only text")
    mail = build_email(message, SENDER)
    assert mail.get_content_type() == "text/plain"
    assert not mail.is_multipart()
    assert mail.get_content().rstrip("\n") == "Only text"
    assert mail["X-Clarion-Message-Id"] == "m2"


def test_build_email_non_ascii_round_trips() -> None:
    message = OutgoingEmail(
        message_id="m3", to="zoe@example.com", subject="Bienvenue Zoé", text="Prêt ✓"
    )
    raw = bytes(build_email(message, SENDER))
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    assert parsed["Subject"] == "Bienvenue Zoé"
    assert parsed.get_content().rstrip("\n") == "Prêt ✓"


@pytest.mark.parametrize(
    "message",
    [
        OutgoingEmail("m4", "jane@example.com", "Hello", "Plain\n", "<p>HTML</p>\n"),
        OutgoingEmail("m5", "zoe@example.com", "Bienvenue Zoé ✓", "Prêt ✓ " * 40),
        OutgoingEmail(
            "m6", "o'neil@example.com", "A subject that is rather long " * 5, "x" * 2000,
            headers=(
                ("List-Unsubscribe", "<https://clarion.test/u/" + "t" * 300 + ">"),
                ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
            ),
        ),
    ],
)  # fmt: skip
def test_build_email_is_byte_for_byte_what_the_stock_header_registry_gives(
    message: OutgoingEmail,
) -> None:
    """The cached header classes change nothing in the message: the same bytes as the
    standard library's own registry, headers parsed the same way (twice in a row, so the
    second message is built from cached classes)."""
    from email.generator import BytesGenerator
    from email.headerregistry import HeaderRegistry

    from clarion.channels import email as email_channel

    def flat(mail: EmailMessage) -> bytes:
        buffer = io.BytesIO()
        BytesGenerator(buffer, policy=mail.policy.clone(linesep="\r\n")).flatten(mail)
        flat = re.sub(rb"Date: [^\r]*", b"Date: -", buffer.getvalue())
        return re.sub(rb"={15}\d+==", b"=boundary=", flat)  # a random multipart boundary

    stock = email_channel.POLICY.clone(header_factory=HeaderRegistry())
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(email_channel, "POLICY", stock)
        expected = flat(build_email(message, SENDER))
    for _ in range(2):
        mail = build_email(message, SENDER)
        assert flat(mail) == expected
        assert mail["To"].addresses[0].addr_spec == message.to  # type: ignore[attr-defined]


def test_message_id_is_stable_for_the_same_message_id() -> None:
    first = build_email(OutgoingEmail("same", "a@example.com", "s1", "t1"), SENDER)
    second = build_email(OutgoingEmail("same", "b@example.com", "s2", "t2"), SENDER)
    other = build_email(OutgoingEmail("other", "a@example.com", "s1", "t1"), SENDER)
    assert first["Message-ID"] == second["Message-ID"] == "<same@clarion.test>"
    assert other["Message-ID"] == "<other@clarion.test>"


def test_message_id_header_sanitises_and_picks_domain() -> None:
    header = message_id_header("a b/c<d>@e", SENDER)
    assert re.fullmatch(r"<a-b-c-d--e\.[0-9a-f]{12}@clarion\.test>", header), header
    assert message_id_header("ok.id_1-2", "x@Mail.Example.org") == "<ok.id_1-2@Mail.Example.org>"
    assert message_id_header("m", "") == "<m@clarion.local>"


def test_distinct_message_ids_get_distinct_message_id_headers() -> None:
    headers = {message_id_header(m, SENDER) for m in ("order/1", "order:1", "order-1")}
    assert len(headers) == 3


# -- outbox sinks


async def test_outbox_email_writes_one_parseable_file_idempotently(tmp_path: Path) -> None:
    provider = OutboxEmailProvider(tmp_path / "outbox", SENDER)
    assert isinstance(provider, Provider)
    assert provider.channel is Channel.EMAIL
    message = OutgoingEmail(
        message_id="msg-42",
        to="jane@example.com",
        subject="Order shipped",
        text="Your order shipped.\n",
        html="<p>Your order shipped.</p>\n",
    )
    first = await provider.send(message)
    second = await provider.send(message)
    files = names(tmp_path / "outbox")
    assert files == ["msg-42.email.eml"]
    path = tmp_path / "outbox" / "msg-42.email.eml"
    assert first == second == ProviderReceipt(provider="outbox", provider_message_id=str(path))

    parsed = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    assert parsed["To"] == "jane@example.com"
    assert parsed["Subject"] == "Order shipped"
    assert parsed["X-Clarion-Message-Id"] == "msg-42"
    assert parsed["Message-ID"] == "<msg-42@clarion.test>"
    assert parsed.get_content_type() == "multipart/alternative"
    text_part = parsed.get_body(preferencelist=("plain",))
    html_part = parsed.get_body(preferencelist=("html",))
    assert text_part is not None
    assert html_part is not None
    assert text_part.get_content() == "Your order shipped.\n"
    assert html_part.get_content() == "<p>Your order shipped.</p>\n"
    await provider.aclose()


async def test_outbox_email_file_name_is_safe(tmp_path: Path) -> None:
    provider = OutboxEmailProvider(tmp_path, SENDER)
    receipt = await provider.send(OutgoingEmail("../evil/id", "a@example.com", "s", "t"))
    [name] = names(tmp_path)
    assert re.fullmatch(r"-evil-id\.[0-9a-f]{12}\.email\.eml", name), name
    assert Path(receipt.provider_message_id).parent == tmp_path


async def test_outbox_email_refuses_sms(tmp_path: Path) -> None:
    provider = OutboxEmailProvider(tmp_path, SENDER)
    with pytest.raises(TypeError, match="OutgoingEmail only"):
        await provider.send(OutgoingSms("m", "+14155552671", "hi"))
    assert names(tmp_path) == []


async def test_outbox_sms_writes_json_idempotently(tmp_path: Path) -> None:
    provider = OutboxSmsProvider(tmp_path / "outbox")
    assert isinstance(provider, Provider)
    assert provider.channel is Channel.SMS
    message = OutgoingSms(message_id="sms-1", to="+14155552671", body="Code 1234")
    first = await provider.send(message)
    second = await provider.send(message)
    files = names(tmp_path / "outbox")
    assert files == ["sms-1.sms.json"]
    path = tmp_path / "outbox" / "sms-1.sms.json"
    assert first == second == ProviderReceipt(provider="outbox", provider_message_id=str(path))
    assert json.loads(path.read_text()) == {
        "message_id": "sms-1",
        "to": "+14155552671",
        "body": "Code 1234",
    }


async def test_outbox_sms_refuses_email(tmp_path: Path) -> None:
    provider = OutboxSmsProvider(tmp_path)
    with pytest.raises(TypeError, match="OutgoingSms only"):
        await provider.send(OutgoingEmail("m", "a@example.com", "s", "t"))


async def test_outbox_separate_messages_get_separate_files(tmp_path: Path) -> None:
    provider = OutboxSmsProvider(tmp_path)
    await provider.send(OutgoingSms("a", "+14155552671", "one"))
    await provider.send(OutgoingSms("b", "+14155552671", "two"))
    assert names(tmp_path) == ["a.sms.json", "b.sms.json"]


async def test_outbox_distinct_message_ids_do_not_overwrite_each_other(tmp_path: Path) -> None:
    provider = OutboxSmsProvider(tmp_path)
    first = await provider.send(OutgoingSms("order:1", "+14155552671", "one"))
    second = await provider.send(OutgoingSms("order_1", "+14155552671", "two"))
    assert first.provider_message_id != second.provider_message_id
    assert len(names(tmp_path)) == 2
