"""Templates: definitions as files, strict sandboxed rendering, locale fallback."""

from clarion.templates.definition import (
    EmailVariant,
    LocaleVariants,
    SmsVariant,
    TemplateDefinition,
    VoiceVariant,
    load_template_dir,
    load_template_file,
)
from clarion.templates.render import (
    RenderedEmail,
    RenderedSms,
    RenderedVoice,
    render,
    resolve_locale,
)

__all__ = [
    "EmailVariant",
    "LocaleVariants",
    "RenderedEmail",
    "RenderedSms",
    "RenderedVoice",
    "SmsVariant",
    "TemplateDefinition",
    "VoiceVariant",
    "load_template_dir",
    "load_template_file",
    "render",
    "resolve_locale",
]
