"""Clarion's HTTP API: ``create_app(settings)`` builds it, ``clarion api`` serves it."""

from starters.api.app import create_app

__all__ = ["create_app"]
