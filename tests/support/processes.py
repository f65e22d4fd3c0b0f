"""Run Clarion's CLI as a real process: for worker crashes and command-line tests."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from clarion.config import Settings


def settings_env(settings: Settings) -> dict[str, str]:
    """The CLARION_* environment that reproduces ``settings`` in another process."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, bool):
            value = "true" if value else "false"
        env[f"CLARION_{name.upper()}"] = str(value)
    return env


def clean_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}


async def spawn_cli(settings: Settings, *args: str, log: Path) -> asyncio.subprocess.Process:
    env = {**clean_environ(), **settings_env(settings), "CLARION_LOG_FORMAT": "json"}
    handle = log.open("ab")
    try:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "starters.cli", *args, env=env, stdout=handle, stderr=handle
        )
    finally:
        handle.close()


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


async def run_cli(settings: Settings, *args: str, within: float = 120) -> CliResult:
    env = {**clean_environ(), **settings_env(settings), "CLARION_LOG_FORMAT": "json"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "starters.cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), within)
    assert proc.returncode is not None
    return CliResult(proc.returncode, out.decode(), err.decode())


async def wait_until(check: Callable[[], object], *, within: float = 30, what: str = "") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what or check}")
        await asyncio.sleep(0.1)
