"""The console's session cookies: signed, tamper-evident, tied to the secret."""

from __future__ import annotations

import secrets

from starters.api.console import session_cookie, templates, token_from_cookie


def test_a_cookie_gives_back_its_token_under_the_same_secret_only() -> None:
    key, other = secrets.token_bytes(32), secrets.token_bytes(32)
    cookie = session_cookie(key, "tok-123")
    assert "tok-123" not in cookie
    assert token_from_cookie(key, cookie) == "tok-123"
    assert token_from_cookie(other, cookie) is None


def test_tampered_or_malformed_cookies_are_refused() -> None:
    key = secrets.token_bytes(32)
    encoded, _, signature = session_cookie(key, "tok-123").rpartition(".")
    forged = session_cookie(key, "tok-999").rpartition(".")[0]
    assert token_from_cookie(key, f"{forged}.{signature}") is None
    assert token_from_cookie(key, f"{encoded}.{'0' * len(signature)}") is None
    for bad in (None, "", "no-dot", ".", f"{encoded}."):
        assert token_from_cookie(key, bad) is None


def test_pages_escape_what_they_show() -> None:
    html = templates.get_template("forbidden.html").render(
        message="<script>alert(1)</script>", me=None, csrf="", request=None
    )
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
