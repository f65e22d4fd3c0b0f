"""SMS keywords: which texts opt out, opt in, or ask for help."""

from __future__ import annotations

import pytest

from clarion.policy.keywords import KeywordAction, classify


@pytest.mark.parametrize(
    "body", ["STOP", "stop", " Stop! ", "STOPALL", "unsubscribe", "Cancel.", "END", "quit"]
)
def test_opt_out_keywords(body: str) -> None:
    assert classify(body).action is KeywordAction.OPT_OUT


@pytest.mark.parametrize("body", ["START", "yes", "Unstop"])
def test_opt_in_keywords(body: str) -> None:
    assert classify(body).action is KeywordAction.OPT_IN


@pytest.mark.parametrize("body", ["HELP", "info?"])
def test_help_keywords(body: str) -> None:
    assert classify(body).action is KeywordAction.HELP


@pytest.mark.parametrize(
    "body", ["OK", "please stop calling me", "stop it", "", "STOP STOP", "restart"]
)
def test_ordinary_replies(body: str) -> None:
    assert classify(body).action is KeywordAction.NONE


def test_keyword_is_reported_in_capitals() -> None:
    assert classify(" stopall ").keyword == "STOPALL"
