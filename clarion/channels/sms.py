"""SMS and calls through the twilio library, on its async API over aiohttp (no thread per
request); ``CLARION_TWILIO_BASE_URL`` points it at a compatible API."""

from __future__ import annotations

import asyncio
import logging
from xml.sax.saxutils import escape

import aiohttp
import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http import AsyncHttpClient
from twilio.http.response import Response
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
    if isinstance(
        exc,
        (
            aiohttp.ClientError,
            requests.ConnectionError,
            requests.Timeout,
            TimeoutError,
            ConnectionError,
        ),
    ):
        return RetryableChannelError(f"Twilio unavailable: {exc!r}", provider="twilio")
    if isinstance(exc, TwilioException):
        return RetryableChannelError(f"Twilio error: {exc}", provider="twilio")
    return RetryableChannelError(f"Twilio error: {exc!r}", provider="twilio")


class AiohttpClient(AsyncHttpClient):
    """The twilio library's async HTTP interface on an aiohttp session, opened at the first
    request (a provider is built before the loop that uses it runs) and closed by
    :meth:`close`. Connections are kept alive and reused. The session belongs to the event
    loop of that first request: another loop gets an error, until the client is closed."""

    def __init__(self, timeout: float, connections: int) -> None:
        super().__init__(logging.getLogger("twilio.http_client"), True, timeout)
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._session
        if session is not None and self._loop is not loop:
            raise RuntimeError(
                "this Twilio provider's connections belong to another event loop: "
                "close it there (aclose) before using it in this one"
            )
        if session is None:
            connector = aiohttp.TCPConnector(limit=self._connections)
            session = self._session = aiohttp.ClientSession(connector=connector)
            self._loop = loop
        return session

    async def request(
        self,
        method: str,
        uri: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (the twilio library's interface)
        allow_redirects: bool = False,
    ) -> Response:
        headers = dict(headers or {})
        if auth:
            headers["Authorization"] = aiohttp.encode_basic_auth(*auth)
        async with self.session().request(
            method.upper(),
            uri,
            params=params,  # type: ignore[arg-type]
            data=data,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout or self.timeout),
            allow_redirects=allow_redirects,
        ) as reply:
            return Response(reply.status, await reply.text(), reply.headers)

    async def close(self) -> None:
        session, self._session, self._loop = self._session, None, None
        if session is not None:
            await session.close()


class TwilioSmsProvider:
    name = "twilio"
    channel = Channel.SMS

    def __init__(self, settings: Settings) -> None:
        self._from = settings.twilio_from_number
        self._http = AiohttpClient(settings.twilio_timeout, settings.twilio_connections)
        self._client = Client(
            settings.twilio_account_sid,
            settings.twilio_auth_token.get_secret_value(),
            http_client=self._http,
        )
        if settings.twilio_base_url:
            self._client.api.base_url = settings.twilio_base_url.rstrip("/")
        self._status_callback = (
            f"{settings.public_base_url.rstrip('/')}{STATUS_CALLBACK_PATH}"
            if settings.twilio_status_callbacks
            else None
        )

    async def send(self, message: OutgoingMessage) -> ProviderReceipt:
        if not isinstance(message, OutgoingSms):
            raise TypeError("TwilioSmsProvider sends OutgoingSms only")
        self._http.session()  # a misuse (another loop) is not a channel error
        extra: dict[str, str] = {}
        if self._status_callback is not None:
            extra["status_callback"] = self._status_callback
        try:
            created = await self._client.messages.create_async(
                to=message.to, from_=self._from, body=message.body, **extra
            )
        except Exception as exc:
            raise classify_twilio_error(exc) from exc
        return ProviderReceipt(provider=self.name, provider_message_id=str(created.sid))

    async def aclose(self) -> None:
        await self._http.close()


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

    async def send(self, message: OutgoingMessage) -> ProviderReceipt:
        if not isinstance(message, OutgoingCall):
            raise TypeError("TwilioVoiceProvider sends OutgoingCall only")
        self._sms._http.session()  # a misuse (another loop) is not a channel error
        try:
            created = await self._sms._client.calls.create_async(
                to=message.to, from_=self._sms._from, twiml=twiml_say(message.say)
            )
        except Exception as exc:
            raise classify_twilio_error(exc) from exc
        return ProviderReceipt(provider=self.name, provider_message_id=str(created.sid))

    async def aclose(self) -> None:
        await self._sms.aclose()
