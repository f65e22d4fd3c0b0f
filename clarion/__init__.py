"""Clarion: durable customer communications on Temporal."""

__version__ = "0.1.0"
