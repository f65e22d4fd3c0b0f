"""Redacting logs, failpoint specs, and settings from CLARION_* environment variables."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from pydantic import SecretStr, ValidationError

from clarion import faults
from clarion.config import Settings
from clarion.logging import (
    configure_logging,
    get_logger,
    mask_email,
    mask_phone,
    redact,
    redact_processor,
)

UUID = "123e4567-e89b-12d3-a456-426614174000"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging replaces the root handlers; put everything back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def json_lines(err: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in err.splitlines() if line.strip()]


# -- redact


def test_mask_email_and_phone() -> None:
    assert mask_email("jane.doe@example.com") == "j***@example.com"
    assert mask_phone("+1 415 555 2671") == "+***71"
    assert mask_phone("+") == "+***"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("to jane.doe@example.com now", "to j***@example.com now"),
        ("JANE+tag@Sub.Example.CO.UK", "J***@Sub.Example.CO.UK"),
        ("call +1 415 555 2671.", "call +***71."),
        ("call +14155552671", "call +***71"),
        ("uk +44 7911 123456 ok", "uk +***56 ok"),
        ("us (415) 555-2671", "us (+***71"),
        ("a@example.com and +447911123456", "a***@example.com and +***56"),
        ("nothing personal, order 12345", "nothing personal, order 12345"),
        ("running on http://127.0.0.1:8000", "running on http://127.0.0.1:8000"),
        ("from 192.168.100.200 ok", "from 192.168.100.200 ok"),
        ("us 415.555.2671", "us +***71"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_redact_masks_non_ascii_local_part() -> None:
    assert "josé@example.com" not in redact("sent to josé@example.com")


def test_redact_processor_keeps_ids_but_masks_emails_in_them() -> None:
    event: dict[str, Any] = {
        "event": "sent to +14155552671",
        "message_id": UUID,
        "customer_id": "jane@example.com",
        "phone": "+14155552671",
        "nested": {"run_id": "20240501123456789", "to": "bob@example.org"},
        "items": ["+447911123456", 7],
        "count": 12345678901,
        "timestamp": "2024-05-01T12:34:56.123456Z",
    }
    out = redact_processor(None, "info", event)
    assert out == {
        "event": "sent to +***71",
        "message_id": UUID,
        "customer_id": "j***@example.com",
        "phone": "+***71",
        "nested": {"run_id": "20240501123456789", "to": "b***@example.org"},
        "items": ["+***56", 7],
        "count": 12345678901,
        "timestamp": "2024-05-01T12:34:56.123456Z",
    }


def test_uuid_under_a_non_id_key_is_not_kept() -> None:
    # Only keys ending in "id" are exempt from phone masking.
    out = redact_processor(None, "info", {"ref": UUID})
    assert out["ref"] != UUID


# -- the structlog pipeline


def test_json_pipeline_never_writes_a_raw_email_or_phone(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    configure_logging(level="INFO", fmt="json")
    log = get_logger("clarion.test")
    log.info(
        "sent to jane.doe@example.com via +1 415 555 2671",
        to="jane.doe@example.com",
        phone="+447911123456",
        message_id=UUID,
        customer_id="jane.doe@example.com",
    )
    err = capsys.readouterr().err
    assert "jane.doe@example.com" not in err
    assert "+1 415 555 2671" not in err
    assert "+447911123456" not in err
    [line] = json_lines(err)
    assert line["event"] == "sent to j***@example.com via +***71"
    assert line["to"] == "j***@example.com"
    assert line["phone"] == "+***56"
    assert line["message_id"] == UUID
    assert line["customer_id"] == "j***@example.com"
    assert line["level"] == "info"
    assert line["logger"] == "clarion.test"
    assert "timestamp" in line


def test_json_pipeline_redacts_stdlib_records_and_exceptions(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    configure_logging(level="INFO", fmt="json")
    logging.getLogger("thirdparty").warning("RCPT TO:<%s> refused", "jane@example.com")
    log = get_logger("clarion.test")
    try:
        raise ValueError("bad recipient jane@example.com / +14155552671")
    except ValueError:
        log.exception("send failed")
    log.info("positional %s", "jane@example.com")
    err = capsys.readouterr().err
    assert "jane@example.com" not in err
    assert "+14155552671" not in err
    lines = json_lines(err)
    assert [entry["event"] for entry in lines] == [
        "RCPT TO:<j***@example.com> refused",
        "send failed",
        "positional %s",
    ]
    assert lines[0]["logger"] == "thirdparty"
    assert "ValueError: bad recipient j***@example.com / +***71" in lines[1]["exception"]


def test_log_level_filters(capsys: pytest.CaptureFixture[str], restore_logging: None) -> None:
    configure_logging(level="warning", fmt="json")
    log = get_logger("clarion.test")
    log.info("hidden")
    log.warning("shown", n=1)
    lines = json_lines(capsys.readouterr().err)
    assert [(entry["event"], entry["level"]) for entry in lines] == [("shown", "warning")]


def test_console_pipeline_redacts_too(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    configure_logging(level="INFO", fmt="console")
    get_logger("clarion.test").info("hello jane@example.com", to="+14155552671")
    err = capsys.readouterr().err
    assert "hello j***@example.com" in err
    assert "+***71" in err
    assert "jane@example.com" not in err
    assert "+14155552671" not in err
    with pytest.raises(json.JSONDecodeError):
        json.loads(err.splitlines()[0])


# -- failpoints


def test_parse_failpoints_accepts_hang_and_exit() -> None:
    assert faults.parse_failpoints("a=hang,b=exit") == {"a": "hang", "b": "exit"}
    assert faults.parse_failpoints(" a=hang , ,b=exit,") == {"a": "hang", "b": "exit"}
    assert faults.parse_failpoints("") == {}


@pytest.mark.parametrize("spec", ["a=explode", "b=hang,a=explode", "a", "a=HANG"])
def test_parse_failpoints_refuses_unknown_action(spec: str) -> None:
    bad = next(item for item in spec.split(",") if not item.endswith(("=hang", "=exit")))
    with pytest.raises(ValueError, match="the action must be hang or exit") as info:
        faults.parse_failpoints(spec)
    assert repr(bad) in str(info.value)


async def test_failpoint_without_match_returns() -> None:
    assert await faults.failpoint("", "after_send_recorded") is None
    assert await faults.failpoint("other=hang", "after_send_recorded") is None


async def test_failpoint_hang_does_not_return(restore_logging: None) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(
            faults.failpoint("after_send_recorded=hang", "after_send_recorded"), 0.05
        )


async def test_failpoint_exit_ends_the_process(
    monkeypatch: pytest.MonkeyPatch, restore_logging: None
) -> None:
    class Exited(Exception):
        pass

    codes: list[int] = []

    def fake_exit(code: int) -> None:
        codes.append(code)
        raise Exited

    monkeypatch.setattr(faults.os, "_exit", fake_exit)
    with pytest.raises(Exited):
        await faults.failpoint("x=exit", "x")
    assert codes == [137]


# -- settings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for key in list(os.environ):
        if key.upper().startswith("CLARION_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no stray .env file
    return monkeypatch


def settings() -> Settings:
    return Settings(_env_file=None)  # type: ignore[call-arg]


def test_settings_defaults(clean_env: pytest.MonkeyPatch) -> None:
    s = settings()
    assert s.temporal_address == "localhost:7233"
    assert s.temporal_namespace == "default"
    assert s.task_queue == "clarion"
    assert s.home == Path(".clarion")
    assert s.database_url.startswith("sqlite+aiosqlite:///")
    assert s.database_url == f"sqlite+aiosqlite:///{Path('.clarion') / 'clarion.db'}"
    assert s.smtp_port == 587
    assert s.outbox_dir == Path(".clarion") / "outbox"
    assert s.email_configured is False
    assert s.sms_configured is False
    assert s.failpoints == ""
    assert s.log_format == "auto"


def test_settings_read_clarion_env_vars(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("CLARION_TEMPORAL_ADDRESS", "temporal:7233")
    clean_env.setenv("CLARION_HOME", str(tmp_path / "home"))
    clean_env.setenv("CLARION_SMTP_HOST", "  smtp.example.com ")
    clean_env.setenv("CLARION_SMTP_PORT", "2525")
    clean_env.setenv("CLARION_SMTP_PASSWORD", "hunter2")
    clean_env.setenv("CLARION_FAILPOINTS", "after_send_recorded=hang")
    clean_env.setenv("TEMPORAL_ADDRESS", "ignored:1")  # no prefix: not ours
    s = settings()
    assert s.temporal_address == "temporal:7233"
    assert s.home == tmp_path / "home"
    assert s.database_url == f"sqlite+aiosqlite:///{tmp_path / 'home' / 'clarion.db'}"
    assert s.smtp_host == "smtp.example.com"
    assert s.smtp_port == 2525
    assert s.email_configured is True
    assert isinstance(s.smtp_password, SecretStr)
    assert s.smtp_password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(s)
    assert s.failpoints == "after_send_recorded=hang"


def test_explicit_database_url_is_kept(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CLARION_DATABASE_URL", "postgresql+asyncpg://u:p@db/clarion")
    assert settings().database_url == "postgresql+asyncpg://u:p@db/clarion"


def test_twilio_sid_without_from_number_is_refused(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CLARION_TWILIO_ACCOUNT_SID", "AC123")
    with pytest.raises(ValidationError, match="CLARION_TWILIO_FROM_NUMBER"):
        settings()
    clean_env.setenv("CLARION_TWILIO_FROM_NUMBER", "+14155550100")
    s = settings()
    assert s.sms_configured is True
    assert s.twilio_from_number == "+14155550100"


def test_blank_twilio_sid_counts_as_unset(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CLARION_TWILIO_ACCOUNT_SID", "   ")
    s = settings()
    assert s.twilio_account_sid == ""
    assert s.sms_configured is False


@pytest.mark.parametrize("port", ["0", "65536", "-1", "not-a-port"])
def test_smtp_port_out_of_range_is_refused(clean_env: pytest.MonkeyPatch, port: str) -> None:
    clean_env.setenv("CLARION_SMTP_PORT", port)
    with pytest.raises(ValidationError, match="smtp_port"):
        settings()


@pytest.mark.parametrize("port", ["1", "65535"])
def test_smtp_port_bounds_are_accepted(clean_env: pytest.MonkeyPatch, port: str) -> None:
    clean_env.setenv("CLARION_SMTP_PORT", port)
    assert settings().smtp_port == int(port)


def test_starttls_and_tls_exclude_each_other(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CLARION_SMTP_STARTTLS", "true")
    clean_env.setenv("CLARION_SMTP_USE_TLS", "true")
    with pytest.raises(ValidationError, match="exclude each other"):
        settings()


def test_log_format_must_be_known(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CLARION_LOG_FORMAT", "xml")
    with pytest.raises(ValidationError, match="log_format"):
        settings()
    clean_env.setenv("CLARION_LOG_FORMAT", "json")
    assert settings().log_format == "json"
