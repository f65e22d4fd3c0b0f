"""One-click unsubscribe tokens: signed, expiring, bound to customer, channel, purpose."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from clarion.config import Settings
from clarion.models import Channel, Purpose
from clarion.unsubscribe import (
    UnsubscribeClaim,
    UnsubscribeTokenError,
    list_unsubscribe_headers,
    make_unsubscribe_token,
    verify_unsubscribe_token,
)

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)
CLAIM = UnsubscribeClaim("cust-1", Channel.EMAIL, Purpose.MARKETING, "m-1")


def test_round_trip() -> None:
    token = make_unsubscribe_token("s3cret", CLAIM, NOW + timedelta(days=1))
    assert verify_unsubscribe_token("s3cret", token, NOW) == CLAIM


def test_changed_expired_or_foreign_tokens_are_refused() -> None:
    token = make_unsubscribe_token("s3cret", CLAIM, NOW + timedelta(days=1))
    with pytest.raises(UnsubscribeTokenError, match="expired"):
        verify_unsubscribe_token("s3cret", token, NOW + timedelta(days=2))
    with pytest.raises(UnsubscribeTokenError, match="signature"):
        verify_unsubscribe_token("other", token, NOW)
    other = make_unsubscribe_token(
        "s3cret", UnsubscribeClaim("cust-2", Channel.EMAIL, Purpose.MARKETING, "m"), NOW
    )
    forged = token.split(".")[0] + "." + other.split(".")[1]
    with pytest.raises(UnsubscribeTokenError, match="signature"):
        verify_unsubscribe_token("s3cret", forged, NOW)
    with pytest.raises(UnsubscribeTokenError, match="malformed"):
        verify_unsubscribe_token("s3cret", "nonsense", NOW)


def test_headers_follow_rfc_8058() -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        unsubscribe_secret="s3cret",
        public_base_url="https://notify.example.com/",
    )
    headers = list_unsubscribe_headers(settings, customer_id="cust-1", message_id="m-1", now=NOW)
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = headers["List-Unsubscribe"]
    assert url.startswith("<https://notify.example.com/unsubscribe/") and url.endswith(">")
    token = url[1:-1].rsplit("/", 1)[1]
    assert verify_unsubscribe_token("s3cret", token, NOW).customer_id == "cust-1"
    no_secret = Settings(_env_file=None)  # type: ignore[call-arg]
    assert list_unsubscribe_headers(no_secret, customer_id="c", message_id="m", now=NOW) == {}
