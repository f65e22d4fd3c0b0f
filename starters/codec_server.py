"""``clarion codec-server``: Temporal's remote codec protocol over HTTP, for the Temporal UI
and the ``temporal`` CLI to show Clarion's encrypted payloads in the clear.

    POST /decode   {"payloads": [<Payload as protobuf JSON>, ...]} -> the same, decrypted
    POST /encode   the same, encrypted with the active key

The browser calls the codec server directly (the Temporal server never sees the keys or
the decrypted data), so it answers CORS preflights for the UI's origins. With
CLARION_CODEC_SERVER_TOKEN set, every POST needs ``Authorization: Bearer <token>``.
Anyone who can reach it can decrypt any payload it is given: bind it to loopback, or put
it behind your authenticating proxy.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence

from aiohttp import hdrs, web
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.converter import PayloadCodec

from clarion.codec import PayloadDecryptError
from clarion.logging import get_logger

log = get_logger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8081
DEFAULT_ORIGIN = "http://localhost:8233"
ALLOWED_HEADERS = "content-type, x-namespace, authorization"
MAX_BODY_BYTES = 16 * 1024 * 1024  # a few full-size (2 MiB) payloads per request

Transform = Callable[[Sequence[Payload]], Awaitable[list[Payload]]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def build_codec_app(
    codec: PayloadCodec, *, origins: Iterable[str] = (DEFAULT_ORIGIN,), token: str = ""
) -> web.Application:
    """The codec server as an aiohttp application (``token`` empty: no authentication)."""
    allowed = {o.rstrip("/") for o in origins if o}

    def add_cors(request: web.Request, headers: MutableMapping[str, str]) -> None:
        origin = request.headers.get(hdrs.ORIGIN, "")
        if origin in allowed:
            headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
            headers[hdrs.ACCESS_CONTROL_ALLOW_METHODS] = "POST, OPTIONS"
            headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = ALLOWED_HEADERS
            headers[hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS] = "true"
            headers[hdrs.ACCESS_CONTROL_MAX_AGE] = "600"
        headers[hdrs.VARY] = "Origin"

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # 404, 405, 413: readable by the UI too
            add_cors(request, exc.headers)
            raise
        add_cors(request, response.headers)
        return response

    async def preflight(request: web.Request) -> web.Response:
        return web.Response(status=204)

    def authorised(request: web.Request) -> bool:
        if not token:
            return True
        given = request.headers.get(hdrs.AUTHORIZATION, "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

    def endpoint(transform: Transform, what: str) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            if not authorised(request):
                response = _error(401, "missing or wrong bearer token")
                response.headers[hdrs.WWW_AUTHENTICATE] = 'Bearer realm="clarion-codec"'
                return response
            try:
                body = await request.read()
                payloads = json_format.Parse(body or b"{}", Payloads())
            except (json_format.ParseError, UnicodeDecodeError, ValueError) as exc:
                return _error(400, f'expected {{"payloads": [...]}} as JSON: {exc}')
            try:
                result = Payloads(payloads=await transform(payloads.payloads))
            except PayloadDecryptError as exc:
                log.warning("codec server cannot decode", key_id=exc.key_id)
                return _error(400, str(exc))
            log.debug(
                "codec server request",
                action=what,
                payloads=len(result.payloads),
                namespace=request.headers.get("X-Namespace", ""),
            )
            return web.json_response(
                text=json_format.MessageToJson(result, indent=None), content_type="application/json"
            )

        return handle

    app = web.Application(middlewares=[cors], client_max_size=MAX_BODY_BYTES)
    app.add_routes(
        [
            web.post("/decode", endpoint(codec.decode, "decode")),
            web.post("/encode", endpoint(codec.encode, "encode")),
            web.options("/decode", preflight),
            web.options("/encode", preflight),
        ]
    )
    return app


async def start_codec_server(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Serve ``app`` on host:port (0: any free port, see :func:`bound_port`)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


def bound_port(runner: web.AppRunner) -> int:
    for address in runner.addresses:
        return int(address[1])
    raise RuntimeError("the codec server is not listening")


async def serve_codec(
    codec: PayloadCodec,
    *,
    host: str,
    port: int,
    origins: Sequence[str],
    token: str,
    stop: asyncio.Event,
    ready: Callable[[int], None] | None = None,
) -> None:
    """Serve until ``stop`` is set."""
    runner = await start_codec_server(
        build_codec_app(codec, origins=origins, token=token), host, port
    )
    try:
        if ready is not None:
            ready(bound_port(runner))
        await stop.wait()
    finally:
        await runner.cleanup()
