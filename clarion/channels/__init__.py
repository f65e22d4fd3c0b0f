"""Channel providers behind one Protocol: email (SMTP), SMS (Twilio), local outbox sinks."""

from __future__ import annotations

from clarion.channels.base import (
    OutgoingCall,
    OutgoingEmail,
    OutgoingMessage,
    OutgoingSms,
    Provider,
    ProviderReceipt,
)
from clarion.channels.email import SmtpEmailProvider
from clarion.channels.outbox import OutboxEmailProvider, OutboxSmsProvider, OutboxVoiceProvider
from clarion.channels.sms import TwilioSmsProvider, TwilioVoiceProvider
from clarion.config import Settings
from clarion.models import Channel

__all__ = [
    "OutboxEmailProvider",
    "OutboxSmsProvider",
    "OutboxVoiceProvider",
    "OutgoingCall",
    "OutgoingEmail",
    "OutgoingMessage",
    "OutgoingSms",
    "Provider",
    "ProviderReceipt",
    "SmtpEmailProvider",
    "TwilioSmsProvider",
    "TwilioVoiceProvider",
    "build_providers",
]


def build_providers(settings: Settings) -> dict[Channel, Provider]:
    """The configured provider of each channel; the local outbox where none is configured."""
    email: Provider = (
        SmtpEmailProvider(settings)
        if settings.email_configured
        else OutboxEmailProvider(settings.outbox_dir, settings.email_from)
    )
    sms: Provider = (
        TwilioSmsProvider(settings)
        if settings.sms_configured
        else OutboxSmsProvider(settings.outbox_dir)
    )
    voice: Provider = (
        TwilioVoiceProvider(settings)
        if settings.sms_configured
        else OutboxVoiceProvider(settings.outbox_dir)
    )
    return {Channel.EMAIL: email, Channel.SMS: sms, Channel.VOICE: voice}
