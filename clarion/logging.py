"""Structured logging with structlog: JSON when not on a TTY, never a raw email or phone."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

# Any local part (non-ASCII too: imports accept it), any domain of word characters.
EMAIL_RE = re.compile(r"[^\s@<>()\[\],;:\"]+@[\w\-]+(?:\.[\w\-]+)+")
PHONE_RE = re.compile(r"\+?\d[\d ()\-.]{7,}\d")
# Four dot-separated numbers of up to three digits: an IPv4 address, not a phone number.
IPV4_RE = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")


def mask_email(value: str) -> str:
    local, _, domain = value.partition("@")
    return f"{local[:1]}***@{domain}"


def mask_phone(value: str) -> str:
    digits = re.sub(r"\D", "", value)
    return f"+***{digits[-2:]}" if len(digits) >= 2 else "+***"


def redact(text: str) -> str:
    """Mask every email address and phone-like number in ``text``."""
    text = EMAIL_RE.sub(lambda m: mask_email(m.group(0)), text)
    return PHONE_RE.sub(_mask_phone_match, text)


def _mask_phone_match(match: re.Match[str]) -> str:
    found = match.group(0)
    return found if IPV4_RE.fullmatch(found) else mask_phone(found)


def _redact_value(value: Any, *, is_id: bool = False) -> Any:
    if isinstance(value, str):
        # Ids (message, workflow, run) may hold long digit runs: mask emails only.
        return EMAIL_RE.sub(lambda m: mask_email(m.group(0)), value) if is_id else redact(value)
    if isinstance(value, dict):
        return {k: _redact_value(v, is_id=str(k).endswith("id")) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_value(v, is_id=is_id) for v in value]
    return value


def redact_processor(
    _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in list(event_dict.items()):
        if key not in ("timestamp", "level", "logger"):
            event_dict[key] = _redact_value(value, is_id=key.endswith("id"))
    return event_dict


def configure_logging(level: str = "INFO", fmt: str = "auto") -> None:
    """Configure structlog and route the standard library's logging through it."""
    json_output = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_processor,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json_output
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiosqlite", "sqlalchemy.engine", "twilio.http_client", "mail.log", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.stdlib.get_logger(name)
