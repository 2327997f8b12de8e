"""The one table that maps errors to HTTP status codes, and how an error is rendered.

Scoring errors come from ``scoring``; the HTTP-only conditions (body too large, wrong
content type, unknown route, ...) are the ``ServerError`` subclasses below. ``status_of``
walks the exception's MRO, so a subclass inherits its parent's row. Anything not in the
table is a bug: 500, logged with its stack, and the client only sees "internal server
error". v2 routes answer ``{"error": msg}`` (Open Inference Protocol), AzureML routes
``{"message": msg}`` (as the AzureML inference server does).
"""

from __future__ import annotations

import logging
import math
from typing import Literal

import orjson
from starlette.exceptions import HTTPException

from scoring import (
    ConfigError,
    DeadlineExceeded,
    InferenceFailed,
    InvalidInput,
    ModelLoadError,
    ModelNotFound,
    ModelNotReady,
    Overloaded,
    ScoringError,
    VersionNotFound,
)

log = logging.getLogger("infergate.server")

Protocol = Literal["v2", "azureml"]


class ServerError(Exception):
    """An HTTP-level condition detected by the server itself (not by scoring)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class BadRequest(ServerError):
    """The request is malformed in a way that is not about a model's inputs."""


class AmbiguousModel(BadRequest):
    """/score cannot tell which model to use."""


class NotFound(ServerError):
    """No such route."""


class MethodNotAllowed(ServerError):
    def __init__(self, message: str, allow: str = "") -> None:
        super().__init__(message)
        self.allow = allow


class PayloadTooLarge(ServerError):
    pass


class UnsupportedMediaType(ServerError):
    pass


class ClientGone(ServerError):
    """The client disconnected before its request body arrived (nothing can be answered;
    the status is for the metrics and the access log, nginx's 499)."""


class ScoringTimeout(ServerError):
    """The request's --scoring-timeout-ms passed while it was being scored."""


class Unavailable(ServerError):
    """The server is not ready (starting, or draining before shutdown)."""


# THE table. Order does not matter: lookup follows the exception's MRO.
STATUS: dict[type[BaseException], int] = {
    InvalidInput: 400,
    ConfigError: 400,
    ModelLoadError: 400,  # as Triton answers a failed load request
    BadRequest: 400,
    ModelNotFound: 404,
    VersionNotFound: 404,
    NotFound: 404,
    MethodNotAllowed: 405,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    ClientGone: 499,
    InferenceFailed: 500,  # the model or user code raised: its message is sent, not a stack
    ScoringError: 500,
    ModelNotReady: 503,
    Overloaded: 503,
    Unavailable: 503,
    DeadlineExceeded: 504,
    ScoringTimeout: 504,
}
# Errors whose message is safe and useful to send; everything else unknown is hidden.
_SENDABLE = (ScoringError, ServerError)


def status_of(exc: BaseException) -> int:
    if isinstance(exc, HTTPException):  # Starlette's routing: unknown path or method
        return exc.status_code
    for cls in type(exc).__mro__:
        status = STATUS.get(cls)
        if status is not None:
            return status
    return 500


def render(
    exc: BaseException, protocol: Protocol, request_id: str = ""
) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """(status, JSON body, extra headers) for ``exc``; logs server-side failures."""
    status = status_of(exc)
    if isinstance(exc, HTTPException):
        message = str(exc.detail)
    elif isinstance(exc, _SENDABLE):
        message = str(exc)
        if status >= 500 and status != 503 and status != 504:
            log.error(
                "request failed: %s",
                message,
                exc_info=exc,
                extra={"request_id": request_id, "status": status},
            )
    else:
        message = "internal server error"
        log.error(
            "unhandled error", exc_info=exc, extra={"request_id": request_id, "status": status}
        )
    key = "error" if protocol == "v2" else "message"
    headers: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json")]
    if isinstance(exc, Overloaded):
        retry = max(1, math.ceil(exc.retry_after_s))
        headers.append((b"retry-after", str(retry).encode()))
    elif isinstance(exc, MethodNotAllowed) and exc.allow:
        headers.append((b"allow", exc.allow.encode()))
    elif isinstance(exc, HTTPException) and exc.headers:
        headers += [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
    return status, orjson.dumps({key: message}), headers
