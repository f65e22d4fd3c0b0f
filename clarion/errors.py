"""Clarion's exception tree.

ClarionError
├── ValidationFailed        bad user input: names the field and the value
├── NotFound                unknown customer, template, version
├── TemplateError           a template that cannot be published or rendered
│   └── RenderError         a missing variable or a broken expression at render time
└── ChannelError            raised by channel providers
    ├── RetryableChannelError   try again later (timeouts, 5xx, 429, connection refused)
    └── PermanentChannelError   retrying will not help (invalid number, rejected recipient)
"""

from __future__ import annotations


class ClarionError(Exception):
    """Base class of every error Clarion raises on purpose."""


class ValidationFailed(ClarionError):
    def __init__(self, field: str, value: object, problem: str) -> None:
        self.field = field
        self.value = value
        self.problem = problem
        super().__init__(f"{field}={value!r}: {problem}")


class NotFound(ClarionError):
    def __init__(self, kind: str, key: object) -> None:
        self.kind = kind
        self.key = key
        super().__init__(f"unknown {kind} {key!r}")


class TemplateError(ClarionError):
    pass


class RenderError(TemplateError):
    pass


class ChannelError(ClarionError):
    def __init__(self, message: str, *, code: str = "", provider: str = "") -> None:
        self.code = code
        self.provider = provider
        super().__init__(message)


class RetryableChannelError(ChannelError):
    pass


class PermanentChannelError(ChannelError):
    pass
