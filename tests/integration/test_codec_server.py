"""The codec server for the Temporal UI and CLI, on a loopback port: Temporal's remote codec
protocol (POST /encode, /decode with protobuf-JSON payloads), CORS, bearer token."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from clarion.codec import KeyRing, keyring_for
from clarion.config import Settings
from clarion.temporal import EncryptionCodec
from starters.codec_server import bound_port, build_codec_app, start_codec_server
from tests.support.processes import clean_environ, run_cli

K1 = bytes(range(32))
UI = "http://localhost:8233"
TOKEN = "codec-test-token"


def as_json(*payloads: Payload) -> str:
    return json_format.MessageToJson(Payloads(payloads=payloads))


def from_json(text: str) -> list[Payload]:
    return list(json_format.Parse(text, Payloads()).payloads)


def plain(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=f'"{text}"'.encode())


@pytest.fixture
async def server() -> AsyncIterator[str]:
    app = build_codec_app(EncryptionCodec(KeyRing({"k1": K1})), origins=[UI], token=TOKEN)
    runner = await start_codec_server(app, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{bound_port(runner)}"
    finally:
        await runner.cleanup()


AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


async def test_encode_then_decode_round_trip(server: str) -> None:
    original = [plain("ada@example.com"), plain("+14155550123")]
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{server}/encode", data=as_json(*original), headers=AUTH) as r:
            assert r.status == 200 and r.content_type == "application/json"
            encoded = from_json(await r.text())
        assert [p.metadata["encryption-key-id"] for p in encoded] == [b"k1", b"k1"]
        assert all(b"ada@example.com" not in p.data for p in encoded)
        # what a worker wrote decodes through the server, as the UI asks for it
        written = await EncryptionCodec(KeyRing({"k1": K1})).encode([plain("from a worker")])
        async with http.post(
            f"{server}/decode",
            data=as_json(*encoded, *written, plain("never encrypted")),
            headers={**AUTH, "Origin": UI, "X-Namespace": "default"},
        ) as r:
            assert r.status == 200
            assert r.headers["Access-Control-Allow-Origin"] == UI
            decoded = from_json(await r.text())
    assert decoded == [*original, plain("from a worker"), plain("never encrypted")]


async def test_cors_preflight_for_the_ui_origin_only(server: str) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-namespace,authorization",
    }
    async with aiohttp.ClientSession() as http:
        async with http.options(f"{server}/decode", headers={**preflight, "Origin": UI}) as r:
            assert r.status in (200, 204)
            assert r.headers["Access-Control-Allow-Origin"] == UI
            assert "POST" in r.headers["Access-Control-Allow-Methods"]
            allowed = {h.strip() for h in r.headers["Access-Control-Allow-Headers"].split(",")}
            assert {"content-type", "x-namespace", "authorization"} <= allowed
            assert r.headers["Access-Control-Allow-Credentials"] == "true"
        other = {**preflight, "Origin": "http://evil.test"}
        async with http.options(f"{server}/decode", headers=other) as r:
            assert "Access-Control-Allow-Origin" not in r.headers


async def test_wrong_or_missing_token_is_401_with_cors(server: str) -> None:
    body = as_json(plain("x"))
    async with aiohttp.ClientSession() as http:
        for headers in ({"Authorization": "Bearer wrong"}, {}):
            async with http.post(
                f"{server}/decode", data=body, headers={**headers, "Origin": UI}
            ) as r:
                assert r.status == 401
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
                assert r.headers["Access-Control-Allow-Origin"] == UI  # the UI can show why
                assert "payloads" not in await r.json()


async def test_bad_body_and_unknown_key_are_400(server: str) -> None:
    other = await EncryptionCodec(KeyRing({"k-other": bytes(32)})).encode([plain("x")])
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{server}/decode", data="not json", headers=AUTH) as r:
            assert r.status == 400
        async with http.post(f"{server}/decode", data=as_json(*other), headers=AUTH) as r:
            assert r.status == 400
            assert "'k-other' is not configured" in (await r.json())["error"]


async def test_clarion_codec_server_command(tmp_path: Path) -> None:
    """`clarion codec-server` as a user runs it: the keys of the settings, the token, the
    origin; Ctrl-C stops it."""
    keys = "k2:" + base64.b64encode(bytes(range(1, 33))).decode() + ",k1:"
    keys += base64.b64encode(K1).decode()
    env = {
        **clean_environ(),
        "CLARION_HOME": str(tmp_path),
        "CLARION_PAYLOAD_KEYS": keys,
        "CLARION_CODEC_SERVER_TOKEN": TOKEN,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "starters.cli", "codec-server", "--port", "0", "--origin", "http://ui.test"),
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    try:
        line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
        found = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert found, line
        assert "active k2" in line and "token required" in line
        assert base64.b64encode(K1).decode() not in line
        url = f"http://127.0.0.1:{found.group(1)}"
        under_k1 = await EncryptionCodec(KeyRing({"k1": K1})).encode([plain("old")])
        async with aiohttp.ClientSession() as http:
            headers = {**AUTH, "Origin": "http://ui.test"}
            async with http.post(f"{url}/decode", data=as_json(*under_k1), headers=headers) as r:
                assert r.status == 200, await r.text()
                assert r.headers["Access-Control-Allow-Origin"] == "http://ui.test"
                assert from_json(await r.text()) == [plain("old")]
            async with http.post(f"{url}/encode", data=as_json(plain("new")), headers=AUTH) as r:
                [sealed] = from_json(await r.text())
        assert sealed.metadata["encryption-key-id"] == b"k2"
        ring = keyring_for(Settings(_env_file=None, payload_keys=keys))  # type: ignore[call-arg]
        assert await EncryptionCodec(ring).decode([sealed]) == [plain("new")]
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_keys_generate_and_show_commands(tmp_path: Path) -> None:
    def settings(**values: str) -> Settings:
        return Settings(_env_file=None, home=tmp_path, **values)  # type: ignore[call-arg]

    generated = await run_cli(settings(), "keys", "generate", "--id", "k2027")
    assert generated.code == 0, generated
    line = generated.stdout.strip()
    assert line.startswith("k2027:") and len(base64.b64decode(line.split(":", 1)[1])) == 32
    keys = f"{line},k1:{base64.b64encode(K1).decode()}"
    configured = settings(payload_keys=keys, payload_key_id="k1")
    shown = await run_cli(configured, "keys", "show", "--json")
    assert shown.code == 0, shown
    assert json.loads(shown.stdout) == {
        "active": "k1",
        "ids": ["k2027", "k1"],
        "source": "CLARION_PAYLOAD_KEYS",
    }
    assert line.split(":", 1)[1] not in shown.stdout + shown.stderr
    assert not (tmp_path / "payload.key").exists()  # configured keys: no local key file

    local = await run_cli(settings(), "keys", "show", "--json")
    assert json.loads(local.stdout)["source"] == str(tmp_path / "payload.key")
    assert (tmp_path / "payload.key").exists()


# Processes, HTTP and the browser over a store: SQLite is enough (see conftest.py).
pytestmark = pytest.mark.sqlite_only
