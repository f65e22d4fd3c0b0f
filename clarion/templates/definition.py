"""Template definitions: one YAML file per template, validated and linted at publish.

name: order-shipped
description: Tells the customer their order left the warehouse
purpose: transactional          # transactional | service | marketing
category: shipping              # free text; approval rules key on it
default_locale: en
locales:
  en:
    email: {subject: "...", text: "...", html: "..."}   # html optional
    sms: {body: "..."}
  fr: {...}
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import yaml
from jinja2 import TemplateSyntaxError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from clarion.errors import TemplateError
from clarion.models import Channel, Purpose
from clarion.templates.render import html_env, text_env

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
LOCALE_RE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")


class EmailVariant(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    subject: str = Field(min_length=1)
    text: str = Field(min_length=1)
    html: str | None = None


class SmsVariant(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    body: str = Field(min_length=1)


class VoiceVariant(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    say: str = Field(min_length=1)  # read out by text-to-speech


class LocaleVariants(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    email: EmailVariant | None = None
    sms: SmsVariant | None = None
    voice: VoiceVariant | None = None

    def for_channel(self, channel: Channel) -> EmailVariant | SmsVariant | VoiceVariant | None:
        return {Channel.EMAIL: self.email, Channel.SMS: self.sms, Channel.VOICE: self.voice}[
            channel
        ]

    @model_validator(mode="after")
    def _one(self) -> LocaleVariants:
        if self.email is None and self.sms is None and self.voice is None:
            raise ValueError("a locale needs at least one channel variant (email, sms or voice)")
        return self


class TemplateDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    purpose: Purpose
    category: str = "general"
    default_locale: str = "en"
    locales: dict[str, LocaleVariants]

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_RE.match(value):
            raise ValueError(
                f"{value!r} is not a template name (lower-case letters, digits, '.', '_', '-')"
            )
        return value

    @field_validator("locales")
    @classmethod
    def _locales(cls, value: dict[str, LocaleVariants]) -> dict[str, LocaleVariants]:
        if not value:
            raise ValueError("at least one locale is required")
        for key in value:
            if not LOCALE_RE.match(key):
                raise ValueError(f"{key!r} is not a locale tag such as 'en' or 'pt-BR'")
        return value

    @model_validator(mode="after")
    def _default_locale(self) -> TemplateDefinition:
        if self.default_locale not in self.locales:
            raise ValueError(
                f"default_locale {self.default_locale!r} has no variants; "
                f"locales are {sorted(self.locales)}"
            )
        return self

    @property
    def channels(self) -> set[Channel]:
        found: set[Channel] = set()
        for variants in self.locales.values():
            found |= {c for c in Channel if variants.for_channel(c) is not None}
        return found

    def content(self) -> dict[str, Any]:
        """What is stored for a version: everything but the name."""
        return self.model_dump(mode="json", exclude={"name"}, exclude_none=True)

    def content_hash(self) -> str:
        data = json.dumps(self.content(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(data.encode()).hexdigest()

    def lint(self, where: str = "") -> None:
        """Compile every text so that syntax errors are refused at publish time."""
        prefix = f"{where}: " if where else ""
        for locale, variants in self.locales.items():
            for channel in Channel:
                variant = variants.for_channel(channel)
                if variant is None:
                    continue
                for field, source in variant.model_dump(exclude_none=True).items():
                    env = html_env if field == "html" else text_env
                    try:
                        env.from_string(source)  # compiles: unknown filters fail here
                    except TemplateSyntaxError as exc:
                        raise TemplateError(
                            f"{prefix}locales.{locale}.{channel.value}.{field}: line {exc.lineno}: "
                            f"{exc.message}"
                        ) from exc


def load_template_file(path: Path) -> TemplateDefinition:
    """Read, validate and lint one template file; errors name the file and the field."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise TemplateError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise TemplateError(f"{path}: expected a mapping at the top level")
    raw.setdefault("name", path.stem)
    try:
        definition = TemplateDefinition.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}"
            + (f" (got {err['input']!r})" if not isinstance(err["input"], dict) else "")
            for err in exc.errors()
        )
        raise TemplateError(f"{path}: {problems}") from exc
    definition.lint(str(path))
    return definition


def load_template_dir(directory: Path) -> list[TemplateDefinition]:
    """Every ``*.yaml`` / ``*.yml`` file in ``directory``, sorted by name."""
    if not directory.is_dir():
        raise TemplateError(f"{directory}: not a directory")
    files = sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])
    if not files:
        raise TemplateError(f"{directory}: no template files (*.yaml)")
    definitions = [load_template_file(f) for f in files]
    seen: dict[str, Path] = {}
    for f, d in zip(files, definitions, strict=True):
        if d.name in seen:
            raise TemplateError(f"{f}: template name {d.name!r} is also used by {seen[d.name]}")
        seen[d.name] = f
    return definitions
