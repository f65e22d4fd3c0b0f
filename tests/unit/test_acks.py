"""Signed acknowledgement links for crisis emails."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from clarion.crisis.acks import AckTokenError, make_ack_token, verify_ack_token


def test_ack_tokens_are_signed_and_expire() -> None:

    now = datetime(2026, 11, 24, tzinfo=UTC)
    token = make_ack_token("s3cret", "b-1", "cust-9", now + timedelta(hours=1))
    assert verify_ack_token("s3cret", token, now) == ("b-1", "cust-9")
    with pytest.raises(AckTokenError, match="signature"):
        verify_ack_token("other", token, now)
    _, sig = token.split(".")
    forged = (
        make_ack_token("s3cret", "b-1", "cust-10", now + timedelta(hours=1)).split(".")[0]
        + "."
        + sig
    )
    with pytest.raises(AckTokenError, match="signature"):
        verify_ack_token("s3cret", forged, now)
    with pytest.raises(AckTokenError, match="expired"):
        verify_ack_token("s3cret", token, now + timedelta(hours=2))
    with pytest.raises(AckTokenError, match="malformed"):
        verify_ack_token("s3cret", "nonsense", now)
