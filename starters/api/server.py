"""The API served inside another asyncio program (``clarion dev``, tests): uvicorn on
loopback without its own signal handling; the host program stops it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import uvicorn

from clarion.config import Settings
from clarion.store import Store
from starters.api.app import create_app


class _NoSignals(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class EmbeddedApi:
    def __init__(
        self, settings: Settings, client: Any, store: Store, port: int, host: str = "127.0.0.1"
    ) -> None:
        self.app = create_app(settings, temporal=client, store=store)
        self.server = _NoSignals(
            uvicorn.Config(self.app, host=host, port=port, log_config=None, lifespan="off")
        )
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> bool:
        """Serve in the background; False when it could not listen."""
        self.task = asyncio.create_task(self.server.serve())
        for _ in range(400):  # up to 20 s
            if self.server.started or self.task.done():
                break
            await asyncio.sleep(0.05)
        return bool(self.server.started)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            with contextlib.suppress(BaseException):
                await self.task
