"""SMS through the twilio library; ``CLARION_TWILIO_BASE_URL`` points it at a compatible API."""

from __future__ import annotations

import asyncio
from xml.sax.saxutils import escape

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from clarion.channels.base import OutgoingCall, OutgoingMessage, OutgoingSms, ProviderReceipt
from clarion.config import Settings
from clarion.errors import PermanentChannelError, RetryableChannelError
from clarion.models import Channel

# Where the HTTP API receives Twilio's status callbacks (starters/api/webhooks.py).
STATUS_CALLBACK_PATH = "/webhooks/twilio/status"

# Twilio error codes meaning "this recipient cannot get this message" (never retry).
PERMANENT_CODES = {
    21211: "invalid 'To' phone number",
    21408: "region not enabled",
    21610: "recipient has replied STOP",
    21612: "'To' number not reachable from this sender",
    21614: "'To' number is not a mobile number",
    30003: "unreachable handset",
    30005: "unknown destination handset",
    30006: "landline or unreachable carrier",
}


def classify_twilio_error(exc: Exception) -> RetryableChannelError | PermanentChannelError:
    if isinstance(exc, TwilioRestException):
        code = str(exc.code or "")
        text = f"Twilio {exc.status} (code {code or '-'}): {exc.msg}"
        if exc.status == 429 or exc.status >= 500:
            return RetryableChannelError(text, code=code, provider="twilio")
        return PermanentChannelError(text, code=code, provider="twilio")
    if isinstance(exc, (requests.ConnectionError, requests.Timeout, TimeoutError, ConnectionError)):
        return RetryableChannelError(f"Twilio unavailable: {exc}", provider="twilio")
    if isinstance(exc, TwilioException):
        return RetryableChannelError(f"Twilio error: {exc}", provider="twilio")
    return RetryableChannelError(f"Twilio error: {exc!r}", provider="twilio")


class TwilioSmsProvider:
    name = "twilio"
    channel = Channel.SMS

    def __init__(self, settings: Settings) -> None:
        self._from = settings.twilio_from_number
        self._client = Client(
            settings.twilio_account_sid,
            settings.twilio_auth_token.get_secret_value(),
            http_client=TwilioHttpClient(timeout=settings.twilio_timeout, pool_connections=True),
        )
        if settings.twilio_base_url:
            self._client.api.base_url = settings.twilio_base_url.rstrip("/")
        self._status_callback = (
            f"{settings.public_base_url.rstrip('/')}{STATUS_CALLBACK_PATH}"
            if settings.twilio_status_callbacks
            else None
        )

    def _create(self, message: OutgoingSms) -> str:
        extra: dict[str, str] = {}
        if self._status_callback is not None:
            extra["status_callback"] = self._status_callback
        created = self._client.messages.create(
            to=message.to, from_=self._from, body=message.body, **extra
        )
        return str(created.sid)

    async def send(self, message: OutgoingMessage) -> ProviderReceipt:
        if not isinstance(message, OutgoingSms):
            raise TypeError("TwilioSmsProvider sends OutgoingSms only")
        try:
            sid = await asyncio.to_thread(self._create, message)
        except Exception as exc:
            raise classify_twilio_error(exc) from exc
        return ProviderReceipt(provider=self.name, provider_message_id=sid)

    async def aclose(self) -> None:
        return None


def twiml_say(text: str, *, repeat: int = 2) -> str:
    """TwiML that reads ``text`` (twice, so a sleepy listener catches it)."""
    say = f"<Say>{escape(text)}</Say>"
    return f"<Response>{say * repeat}</Response>"


class TwilioVoiceProvider:
    """Phone calls through the twilio library: the message is read out with TwiML <Say>."""

    name = "twilio"
    channel = Channel.VOICE

    def __init__(self, settings: Settings) -> None:
        self._sms = TwilioSmsProvider(settings)

    def _call(self, message: OutgoingCall) -> str:
        client = self._sms._client
        created = client.calls.create(
            to=message.to, from_=self._sms._from, twiml=twiml_say(message.say)
        )
        return str(created.sid)

    async def send(self, message: OutgoingMessage) -> ProviderReceipt:
        if not isinstance(message, OutgoingCall):
            raise TypeError("TwilioVoiceProvider sends OutgoingCall only")
        try:
            sid = await asyncio.to_thread(self._call, message)
        except Exception as exc:
            raise classify_twilio_error(exc) from exc
        return ProviderReceipt(provider=self.name, provider_message_id=sid)

    async def aclose(self) -> None:
        return None
