"""Schemathesis against the served OpenAPI spec: generated requests to every endpoint,
as an admin, must never get a server error (5xx) and must match the documented
responses."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

import pytest

from clarion.store import operators as operators_repo
from starters.api.server import EmbeddedApi
from tests.conftest import Stack, uid
from tests.support.smtp_server import free_port

SCHEMATHESIS = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")


@pytest.mark.skipif(not Path(SCHEMATHESIS).exists(), reason="schemathesis is not installed")
async def test_generated_requests_never_get_a_server_error(stack: Stack, tmp_path: Path) -> None:
    async with stack.store.transaction() as session:
        _, token = await operators_repo.add_operator(
            session, name=uid("fuzz"), roles=["admin"], email=None
        )
    port = free_port()
    api = EmbeddedApi(stack.settings, stack.client, stack.store, port)
    assert await api.start()
    try:
        proc = await asyncio.create_subprocess_exec(
            SCHEMATHESIS,
            "run",
            f"http://127.0.0.1:{port}/openapi.json",
            "--header",
            f"Authorization: Bearer {token}",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance",
            "--max-examples",
            "8",
            "--request-timeout",
            "30",
            "--seed",
            "1",
            "--no-color",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=tmp_path,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 600)
    finally:
        await api.stop()
    report = out.decode()
    print(report[-3000:])
    assert proc.returncode == 0, report[-6000:]


# Processes, HTTP and the browser over a store: SQLite is enough (see conftest.py).
pytestmark = pytest.mark.sqlite_only
