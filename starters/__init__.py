"""How the world reaches Clarion: the Python SDK, the CLI, the HTTP API and console.

``from starters import ClarionClient`` loads the SDK on first use, so the CLI starts
without importing it for commands that do not need it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starters.sdk import ClarionClient, MessageHandle

__all__ = ["ClarionClient", "MessageHandle"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from starters import sdk

        return getattr(sdk, name)
    raise AttributeError(f"module 'starters' has no attribute {name!r}")
