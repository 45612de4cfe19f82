"""The one error shape of the project: a refusal with a ``code`` (an HTTP-like status: 400, 401, 403,
404, 413, 429, 500) and a ``message`` that says what was wrong, for a person to read.

Every refusal a user can cause derives from :class:`CodedError`, so that each caller answers or
reports it the same way (the hub sends ``code``/``message`` on the wire, the CLI prints them):
:class:`SignalError` (a refused signal, request or connection, raised by the session client),
``bridge.core.tokens.TokenError`` (a refused credential) and ``bridge.core.wire.WireError`` (a client
frame the hub cannot act on).
"""

from __future__ import annotations


class CodedError(Exception):
    """A refusal: ``code`` and ``message``. ``str()`` is the message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class SignalError(CodedError):
    """A refused signal or request: ``code`` is 400/403/404/413/429 (from the hub or the local check)
    or 500 (not connected). A refused *connection* raises it too, with the hub's 401/403 or 500.
    ``str()`` is ``"CODE: message"``."""

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"
