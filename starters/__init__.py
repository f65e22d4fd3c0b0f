"""How the world reaches Clarion: the Python SDK, the CLI (and later the HTTP API)."""

from starters.sdk import ClarionClient, MessageHandle

__all__ = ["ClarionClient", "MessageHandle"]
