"""Clarion's settings: one pydantic-settings object, environment prefix ``CLARION_``.

Every name here is public: docs, scripts and docker-compose.yml rely on them.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Configuration read from ``CLARION_*`` environment variables (or a ``.env`` file)."""

    model_config = SettingsConfigDict(
        env_prefix="CLARION_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        # Errors name the setting, never echo its value: some values are keys and secrets.
        hide_input_in_errors=True,
    )

    # Where the embedded defaults keep their files (SQLite store, Temporal dev DB, outbox).
    home: Path = Path(".clarion")

    # Temporal
    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    task_queue: str = "clarion"
    # Payload encryption (clarion/codec.py): "id:base64,id:base64", 32-byte AES keys; the
    # active one seals new payloads (default: the first listed), every listed one opens.
    # Empty: a local key in <home>/payload.key (development only).
    payload_keys: SecretStr = SecretStr("")
    payload_key_id: str = ""
    # `clarion codec-server`: the bearer token the Temporal UI or CLI must send (empty: none).
    codec_server_token: SecretStr = SecretStr("")

    # Clarion's own store. Default: a SQLite file under ``home``.
    database_url: str = ""
    auto_migrate: bool = True

    # Email (SMTP). No host: messages go to the local outbox instead.
    smtp_host: str = ""
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_starttls: bool = False
    smtp_use_tls: bool = False
    smtp_timeout: float = Field(default=30.0, gt=0)
    smtp_pool_size: int = Field(default=4, ge=1, le=64)
    email_from: str = "Clarion <clarion@localhost>"

    # SMS and voice (Twilio). No account SID: messages go to the local outbox instead.
    twilio_account_sid: str = ""
    twilio_auth_token: SecretStr = SecretStr("")
    twilio_from_number: str = ""
    twilio_base_url: str = ""
    twilio_timeout: float = Field(default=30.0, gt=0)
    # HTTP connections to the Twilio API kept open per worker (requests in flight at once).
    twilio_connections: int = Field(default=8, ge=1, le=256)
    # Ask Twilio to report each SMS's status to <public_base_url>/webhooks/twilio/status
    # (off by default: that URL must be reachable from the internet).
    twilio_status_callbacks: bool = False

    # Crisis broadcasts: provider rate limits (messages per second across all workers;
    # 0 means no limit), sends in flight per batch, and the tier configuration file.
    rate_limit_email: float = Field(default=0.0, ge=0)
    rate_limit_sms: float = Field(default=0.0, ge=0)
    broadcast_concurrency: int = Field(default=32, ge=1, le=1000)
    # Broadcast batches one worker process runs at a time (each sends
    # broadcast_concurrency messages in flight; more batches only share the same CPU).
    broadcast_batch_slots: int = Field(default=1, ge=1, le=64)
    # Recipients a batch reads, plans and records together (after a first chunk of at most
    # 250, so that sending starts soon): each chunk costs a few store round trips, and
    # the event loop's time planning and recording it is time the channel waits.
    broadcast_chunk_size: int = Field(default=500, ge=10, le=5000)
    crisis_tiers_file: Path | None = None
    # Alert intake: debounce and the crisis template per alert type (docs/alerts.md).
    alerts_file: Path | None = None
    # Approvals: the policy file (built-in defaults without one) and the token of the
    # operator the CLI and SDK act as.
    approval_policy_file: Path | None = None
    # Compliance rules per jurisdiction: consent modes, safety overrides, quiet hours and
    # frequency caps (built-in defaults without a file; see docs/compliance.md).
    compliance_file: Path | None = None
    # One-click unsubscribe links in marketing email (List-Unsubscribe, RFC 8058): the
    # secret that signs them (empty: no links) and how long a link stays valid.
    unsubscribe_secret: SecretStr = SecretStr("")
    unsubscribe_valid_days: int = Field(default=60, ge=1, le=3650)
    # Answers to inbound SMS keywords (STOP / START / HELP).
    sms_help_text: str = (
        "Clarion notifications. Reply STOP to stop texts, START to resume. "
        "Msg & data rates may apply."
    )
    sms_stop_reply: str = "You are unsubscribed and will get no more texts. Reply START to resume."
    sms_start_reply: str = "You are subscribed again. Reply STOP to stop, HELP for help."
    operator_token: SecretStr = SecretStr("")
    # The operations console (/console) signs its session cookies with this secret (HMAC);
    # empty: a random secret of the process, so sessions end when it restarts.
    console_secret: SecretStr = SecretStr("")
    # Retention: message bodies and delivery details older than this many days are purged
    # by a Temporal Schedule (cron, UTC) that every worker keeps in place; 0 turns it off.
    retention_days: int = Field(default=180, ge=0, le=36_500)
    retention_cron: str = "17 3 * * *"
    # Reports: what one message costs on each channel (your currency; an SMS segment, a
    # call), for cost per message and per outcome.
    price_email: float = Field(default=0.0, ge=0)
    price_sms: float = Field(default=0.0, ge=0)
    price_voice: float = Field(default=0.0, ge=0)
    # Reports by customer segment: the customer attribute whose value (at the time of the
    # attempt) is the segment; "" when the customer has no such attribute.
    report_segment_attribute: str = "tier"
    # An SMS STOP is counted as an opt-out after the customer's latest SMS sent within
    # this many days (none within it: no delivery is blamed).
    report_stop_window_days: int = Field(default=7, ge=0, le=365)
    # Signed acknowledgement links in crisis emails: the secret that signs them and the
    # public address of Clarion's API that receives the click (<base>/ack/<token>).
    ack_secret: SecretStr = SecretStr("")
    public_base_url: str = "http://localhost:8000"

    # Contact data: region used to read phone numbers written without a +country prefix.
    default_phone_region: str | None = None

    # Crash rehearsal: "name=action,..." with action hang or exit, at the named points of
    # the send path (after_send_recorded). For drills and tests; leave empty in production.
    failpoints: str = ""

    # Logging
    log_level: str = "INFO"
    log_format: str = Field(default="auto", pattern="^(auto|json|console)$")

    @field_validator("smtp_host", "twilio_account_sid", "twilio_from_number", "twilio_base_url")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    @field_validator("payload_key_id")
    @classmethod
    def _strip_key_id(cls, value: str) -> str:
        return value.strip()

    @field_validator("failpoints")
    @classmethod
    def _failpoints(cls, value: str) -> str:
        from clarion.faults import parse_failpoints

        parse_failpoints(value)
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{self.home / 'clarion.db'}"
        if self.twilio_account_sid and not self.twilio_from_number:
            raise ValueError(
                "CLARION_TWILIO_FROM_NUMBER is required when CLARION_TWILIO_ACCOUNT_SID is set"
            )
        if self.smtp_starttls and self.smtp_use_tls:
            raise ValueError("CLARION_SMTP_STARTTLS and CLARION_SMTP_USE_TLS exclude each other")
        self._check_payload_keys()
        return self

    def _check_payload_keys(self) -> None:
        from clarion.codec import KEY_ID_SETTING, KEYS_SETTING, KeyRing, parse_keys

        spec = self.payload_keys.get_secret_value()
        if spec.strip():
            KeyRing(parse_keys(spec), self.payload_key_id or None)  # raises ValueError
        elif self.payload_key_id:
            raise ValueError(f"{KEY_ID_SETTING} is set but {KEYS_SETTING} is empty")

    @property
    def outbox_dir(self) -> Path:
        """Where the local sinks write messages when no provider is configured."""
        return self.home / "outbox"

    @property
    def email_configured(self) -> bool:
        return bool(self.smtp_host)

    @property
    def sms_configured(self) -> bool:
        return bool(self.twilio_account_sid)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
