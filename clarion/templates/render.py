"""Strict, sandboxed rendering: a missing variable is an error, never an empty hole."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, UndefinedError, nodes
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


# ------------------------------------------------------------------ memo
#
# A broadcast renders one template for thousands of recipients, most of whom differ in
# nothing the template reads (a first name, a link: often not even that). A template
# whose output is a pure function of the variables it names - text, ``{{ a.b }}``,
# ``{% if %}``, operators, and the deterministic filters and tests below; no loops, no
# calls, no assignments - is rendered once per distinct set of those values: the values
# (plain scalars found through plain dicts) are the key of the memo. Anything else
# (another node, a value that is a list or an object, a name that is also a dict method)
# renders through Jinja every time, as before.

PURE_FILTERS = frozenset(
    {
        "abs", "capitalize", "center", "d", "default", "e", "escape", "first", "float",
        "forceescape", "format", "indent", "int", "join", "last", "length", "count",
        "list", "lower", "replace", "round", "safe", "string", "striptags", "title",
        "tojson", "trim", "truncate", "upper", "urlencode", "wordcount", "wordwrap",
    }
)  # fmt: skip
PURE_TESTS = frozenset(
    {
        "boolean", "defined", "divisibleby", "eq", "equalto", "even", "false", "float",
        "ge", "greaterthan", "gt", "in", "integer", "le", "lessthan", "lower", "lt",
        "ne", "none", "number", "odd", "sameas", "string", "true", "undefined", "upper",
    }
)  # fmt: skip
_PURE_NODES = (  # BinExpr: arithmetic, and, or; UnaryExpr: not, -, +
    nodes.Template, nodes.Output, nodes.TemplateData, nodes.If, nodes.CondExpr,
    nodes.BinExpr, nodes.UnaryExpr, nodes.Compare, nodes.Operand, nodes.Concat,
    nodes.Const, nodes.Tuple, nodes.List, nodes.Keyword, nodes.MarkSafe,
    nodes.MarkSafeIfAutoescape,
)  # fmt: skip
_SCALARS = frozenset({str, int, bool, type(None)})  # not float: 0.0 == -0.0
_DICT_ATTRS = frozenset(dir(dict))
MEMO_SIZE = 1024  # distinct outputs kept per template; then the memo starts afresh
MEMO_REST = 8 * MEMO_SIZE  # renders without the memo, after it hardly ever hit


class _Missing:
    """A path that leads nowhere (an undefined variable)."""


_MISSING = _Missing()


@dataclass(slots=True)
class _Memo:
    paths: tuple[tuple[str, ...], ...]  # the variables the template reads
    outputs: dict[tuple[Any, ...], str]
    hits: int = 0  # since the outputs were last cleared
    resting: int = 0  # renders left that skip the memo (it was missing nearly always)

    def keep(self, key: tuple[Any, ...], out: str) -> None:
        """Keep a new output. When the memo is full it starts afresh; if it hit for less
        than a quarter of its renders (a link or a name of each recipient's own), it
        rests for a while: a miss costs a fraction of what a hit saves (bench/render.py),
        and that fraction of every render is all it would cost."""
        if len(self.outputs) >= MEMO_SIZE:
            if self.hits * 3 < len(self.outputs):
                self.resting = MEMO_REST
            self.outputs.clear()
            self.hits = 0
        self.outputs[key] = out


def _path(node: nodes.Node) -> tuple[str, ...] | None:
    """``a.b['c']`` as ('a', 'b', 'c'); None when it is not such a chain."""
    parts: list[str] = []
    while True:
        if isinstance(node, nodes.Getattr):
            parts.append(node.attr)
            node = node.node
        elif isinstance(node, nodes.Getitem):
            if not (isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str)):
                return None
            parts.append(node.arg.value)
            node = node.node
        elif isinstance(node, nodes.Name):
            parts.append(node.name)
            return tuple(reversed(parts))
        else:
            return None


def _reads(node: nodes.Node, paths: set[tuple[str, ...]]) -> bool:
    """Collect into ``paths`` the variables the template reads; False when its output is
    not known to depend on them alone."""
    if isinstance(node, nodes.Name | nodes.Getattr | nodes.Getitem):
        path = _path(node)
        if path is None or node.ctx != "load" or any(p in _DICT_ATTRS for p in path[1:]):
            return False
        paths.add(path)
        return True
    if isinstance(node, nodes.Filter | nodes.Test):
        allowed = PURE_FILTERS if isinstance(node, nodes.Filter) else PURE_TESTS
        if node.name not in allowed or node.dyn_args is not None or node.dyn_kwargs is not None:
            return False
        if node.node is None:  # a {% filter %} block
            return False
    elif not isinstance(node, _PURE_NODES):
        return False
    return all(_reads(child, paths) for child in node.iter_child_nodes())


@lru_cache(maxsize=512)
def _memo(source: str, html: bool) -> _Memo | None:
    env = html_env if html else text_env
    paths: set[tuple[str, ...]] = set()
    try:
        pure = _reads(env.parse(source), paths)
    except JinjaTemplateError:
        return None
    return _Memo(tuple(sorted(paths)), {}) if pure else None


def _memo_key(memo: _Memo, variables: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """The values the template reads, with their types (``1`` and ``True`` are equal keys
    but render differently); None when one is not a plain scalar (str, int, bool, None)
    reached through plain dicts."""
    key: list[Any] = []
    for root, *rest in memo.paths:
        value = variables.get(root, _MISSING)
        for part in rest:
            if value is _MISSING:
                break
            if type(value) is not dict:
                return None
            value = value.get(part, _MISSING)
        if value is not _MISSING and type(value) not in _SCALARS:
            return None
        key.append(type(value))
        key.append(value)
    return tuple(key)


def _render_one(source: str, variables: Mapping[str, Any], *, html: bool, field: str) -> str:
    if _is_static(source):
        return source
    memo = _memo(source, html)
    key = None
    if memo is not None:
        if memo.resting:
            memo.resting -= 1
        else:
            key = _memo_key(memo, variables)
            out = memo.outputs.get(key) if key is not None else None
            if out is not None:
                memo.hits += 1
                return out
    try:
        out = _compiled(source, html).render(**variables)
    except UndefinedError as exc:
        raise RenderError(f"{field}: missing variable: {exc.message}") from exc
    except JinjaTemplateError as exc:
        raise RenderError(f"{field}: {exc}") from exc
    if key is not None:
        assert memo is not None
        memo.keep(key, out)
    return out


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
