"""Templates: definitions as files, strict sandboxed rendering, locale fallback."""

from clarion.templates.definition import (
    EmailVariant,
    LocaleVariants,
    SmsVariant,
    TemplateDefinition,
    load_template_dir,
    load_template_file,
)
from clarion.templates.render import RenderedEmail, RenderedSms, render, resolve_locale

__all__ = [
    "EmailVariant",
    "LocaleVariants",
    "RenderedEmail",
    "RenderedSms",
    "SmsVariant",
    "TemplateDefinition",
    "load_template_dir",
    "load_template_file",
    "render",
    "resolve_locale",
]
