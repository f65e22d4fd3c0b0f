"""SMS keywords (CTIA / TCPA practice): what an inbound text asks for.

STOP, STOPALL, UNSUBSCRIBE, CANCEL, END and QUIT opt the number out of SMS; START,
YES and UNSTOP opt it back in; HELP and INFO ask for the help text. A keyword counts
when it is the whole message, in any case, with surrounding spaces and trailing
punctuation ignored ("stop", " Stop! "). Anything else is an ordinary reply.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict

OPT_OUT = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
OPT_IN = frozenset({"START", "YES", "UNSTOP"})
HELP = frozenset({"HELP", "INFO"})


class KeywordAction(StrEnum):
    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"
    HELP = "help"
    NONE = "none"  # not a keyword: an ordinary reply


class Keyword(BaseModel):
    model_config = ConfigDict(frozen=True)

    action: KeywordAction
    keyword: str = ""


def classify(body: str) -> Keyword:
    word = body.strip().rstrip(".!?,;: ").strip().upper()
    if word in OPT_OUT:
        return Keyword(action=KeywordAction.OPT_OUT, keyword=word)
    if word in OPT_IN:
        return Keyword(action=KeywordAction.OPT_IN, keyword=word)
    if word in HELP:
        return Keyword(action=KeywordAction.HELP, keyword=word)
    return Keyword(action=KeywordAction.NONE)
