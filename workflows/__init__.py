"""Deterministic orchestration only: no I/O, no clock, no randomness.

The workflows live in their modules; ``workflows.registry`` lists them all.
"""
