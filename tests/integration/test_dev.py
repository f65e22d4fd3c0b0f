"""`clarion dev --demo` as a new user runs it: server, worker, demo, then Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import aiohttp

from tests.support.processes import clean_environ
from tests.support.smtp_server import free_port


async def _port_open(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True


async def _codec_server_decrypts_for_the_ui(home: Path, codec_port: int, ui_port: int) -> None:
    """The dev server's UI is pointed at a codec server that holds the home's key."""
    from google.protobuf import json_format
    from temporalio.api.common.v1 import Payload, Payloads

    from clarion.codec import keyring_for
    from clarion.config import Settings
    from clarion.temporal import EncryptionCodec

    codec = EncryptionCodec(keyring_for(Settings(_env_file=None, home=home)))  # type: ignore[call-arg]
    sealed = await codec.encode([Payload(metadata={"encoding": b"json/plain"}, data=b'"hi"')])
    ui = f"http://localhost:{ui_port}"
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{codec_port}/decode",
            data=json_format.MessageToJson(Payloads(payloads=sealed)),
            headers={"Origin": ui, "Content-Type": "application/json"},
        ) as r,
    ):
        assert r.status == 200, await r.text()
        assert r.headers["Access-Control-Allow-Origin"] == ui
        [back] = json_format.Parse(await r.text(), Payloads()).payloads
    assert back.data == b'"hi"'


async def test_dev_runs_the_demo_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    port, ui_port, codec_port, api_port = free_port(), free_port(), free_port(), free_port()
    env = {
        **clean_environ(),
        "CLARION_HOME": str(tmp_path / ".clarion"),
        "CLARION_TEMPORAL_ADDRESS": f"127.0.0.1:{port}",
        "CLARION_LOG_FORMAT": "json",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "starters.cli",
        "dev",
        "--demo",
        "--ui-port",
        str(ui_port),
        "--codec-port",
        str(codec_port),
        "--api-port",
        str(api_port),
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    output = []
    try:
        async with asyncio.timeout(120):
            while True:
                line = (await proc.stdout.readline()).decode()
                assert line, (
                    "clarion dev ended before the demo finished: "
                    + (await proc.stderr.read()).decode()
                )
                output.append(line)
                if "Where to look" in line:
                    break
        assert await _port_open(port)
        await _codec_server_decrypts_for_the_ui(tmp_path / ".clarion", codec_port, ui_port)
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{api_port}/health") as health,
        ):
            assert health.status == 200 and await health.json() == {"status": "ok"}
        proc.send_signal(signal.SIGINT)
        rest, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = "".join(output) + rest.decode()
    assert proc.returncode == 0, err.decode()[-3000:]
    assert "stopped." in err.decode()
    assert not await _port_open(port)  # the dev server went down with it
    assert not await _port_open(codec_port)
    assert not await _port_open(api_port)
    for line in ("welcome", "delivered", "suppressed", "failed"):
        assert line in text
    home = tmp_path / ".clarion"
    assert (home / "temporal.db").exists() and (home / "clarion.db").exists()
    outbox = sorted(p.name for p in (home / "outbox").iterdir())
    # three single messages by email, and the onboarding journey's welcome to cust-002
    assert len([n for n in outbox if n.endswith(".email.eml")]) == 4
    assert "journey onboarding started for cust-002: now at wait-activation" in text
    [sms] = [n for n in outbox if n.endswith(".sms.json")]
    assert json.loads((home / "outbox" / sms).read_text())["to"] == "+33612345678"
