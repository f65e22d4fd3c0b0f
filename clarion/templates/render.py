"""Strict, sandboxed rendering: a missing variable is an error, never an empty hole."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, UndefinedError
from jinja2 import TemplateError as JinjaTemplateError
from jinja2.sandbox import SandboxedEnvironment

from clarion.errors import RenderError

text_env = SandboxedEnvironment(
    undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
)
html_env = SandboxedEnvironment(
    undefined=StrictUndefined, autoescape=True, keep_trailing_newline=True
)


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str | None


@dataclass(frozen=True)
class RenderedSms:
    body: str


@dataclass(frozen=True)
class RenderedVoice:
    say: str


def _normalise(tag: str) -> str:
    return tag.replace("_", "-").lower()


def resolve_locale(available: Iterable[str], requested: str | None, default: str) -> str:
    """Exact tag, then its language, then any tag of that language, then ``default``.

    ``fr-CA`` -> ``fr-CA``, else ``fr``, else ``fr-FR`` (any fr-*), else the default.
    """
    tags = {_normalise(t): t for t in available}
    if requested:
        want = _normalise(requested)
        if want in tags:
            return tags[want]
        language = want.split("-")[0]
        if language in tags:
            return tags[language]
        for norm, tag in sorted(tags.items()):
            if norm.split("-")[0] == language:
                return tag
    return default


@lru_cache(maxsize=512)
def _compiled(source: str, html: bool) -> Template:
    template = (html_env if html else text_env).from_string(source)
    # Jinja copies the template's globals into every render's context; as the ChainMap
    # it makes, that copy was most of a short template's rendering time. The globals
    # never change after start, so a plain dict holds the very same names.
    template.globals = dict(template.globals)
    return template


@lru_cache(maxsize=512)
def _is_static(source: str) -> bool:
    """No Jinja syntax and nothing the lexer would rewrite: the text renders as itself."""
    return not any(mark in source for mark in ("{{", "{%", "{#", "\r"))


def _render_one(source: str, variables: Mapping[str, Any], *, html: bool, field: str) -> str:
    if _is_static(source):
        return source
    try:
        return _compiled(source, html).render(**variables)
    except UndefinedError as exc:
        raise RenderError(f"{field}: missing variable: {exc.message}") from exc
    except JinjaTemplateError as exc:
        raise RenderError(f"{field}: {exc}") from exc


def render(
    variant: Any, variables: Mapping[str, Any], *, where: str = ""
) -> RenderedEmail | RenderedSms | RenderedVoice:
    """Render an EmailVariant or SmsVariant with ``variables``; all or nothing."""
    from clarion.templates.definition import EmailVariant, SmsVariant, VoiceVariant

    prefix = f"{where}." if where else ""
    if isinstance(variant, EmailVariant):
        return RenderedEmail(
            subject=_render_one(variant.subject, variables, html=False, field=f"{prefix}subject")
            .strip()
            .replace("\n", " "),
            text=_render_one(variant.text, variables, html=False, field=f"{prefix}text"),
            html=None
            if variant.html is None
            else _render_one(variant.html, variables, html=True, field=f"{prefix}html"),
        )
    if isinstance(variant, SmsVariant):
        return RenderedSms(
            body=_render_one(variant.body, variables, html=False, field=f"{prefix}body").strip()
        )
    if isinstance(variant, VoiceVariant):
        return RenderedVoice(
            say=_render_one(variant.say, variables, html=False, field=f"{prefix}say").strip()
        )
    raise TypeError(f"cannot render {type(variant).__name__}")
