"""The router's errors and the one table that maps every error to an HTTP status.

    RouterError
    ├── NotFound            no such endpoint, or a pinned version the endpoint lacks   404
    ├── ReplicaBusy         every replica slot stayed taken for max_request_wait_time   503 + Retry-After
    ├── NoHealthyReplica    every replica of the version is ejected                      503 + Retry-After
    ├── UpstreamUnavailable could not connect (after one retry), or the upstream broke   502
    └── UpstreamTimeout     no answer within scoring_timeout_ms                          504

Errors defined elsewhere and mapped here: ``AuthFailed`` (401 + ``WWW-Authenticate: Bearer``),
``ConfigError`` and ``InvalidKeyRequest`` (400, the field named), ``VersionConflict`` (409),
``EndpointNotFound`` and ``UnknownEndpoint`` (404).
Third-party errors (aiohttp's) are translated in ``router/upstream.py``, chained ``from exc``.
Bodies are ``{"error": <kind>, "message": <text>}``.
"""

from __future__ import annotations

import logging
import math

import orjson

from router.auth import AuthFailed
from router.config import EndpointNotFound, VersionConflict
from router.keys import InvalidKeyRequest, UnknownEndpoint
from scoring import ConfigError

log = logging.getLogger("infergate.router")


class RouterError(Exception):
    """Root of the errors the router raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class NotFound(RouterError):
    pass


class ReplicaBusy(RouterError):
    """No replica slot freed up within the wait; ``retry_after_s`` feeds Retry-After."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NoHealthyReplica(ReplicaBusy):
    pass


class UpstreamUnavailable(RouterError):
    pass


class UpstreamTimeout(RouterError):
    pass


# The one table. Looked up along the MRO, so the first matching base wins; order does not
# matter between unrelated classes.
STATUS_TABLE: tuple[tuple[type[BaseException], int, str], ...] = (
    (AuthFailed, 401, "unauthorized"),
    (ConfigError, 400, "invalid_request"),
    (InvalidKeyRequest, 400, "invalid_request"),
    (UnknownEndpoint, 404, "not_found"),
    (VersionConflict, 409, "conflict"),
    (EndpointNotFound, 404, "not_found"),
    (NotFound, 404, "not_found"),
    (NoHealthyReplica, 503, "no_healthy_replica"),
    (ReplicaBusy, 503, "overloaded"),
    (UpstreamUnavailable, 502, "upstream_unavailable"),
    (UpstreamTimeout, 504, "upstream_timeout"),
)
_BY_TYPE = {cls: (status, kind) for cls, status, kind in STATUS_TABLE}


def classify(exc: BaseException) -> tuple[int, str]:
    """(status, error kind) for ``exc``; unknown errors are 500 (and logged with the stack)."""
    for cls in type(exc).__mro__:
        found = _BY_TYPE.get(cls)
        if found is not None:
            return found
    return 500, "internal_error"


def render_error(exc: BaseException) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, extra headers and JSON body for ``exc``. Never a stack trace in the body."""
    status, kind = classify(exc)
    headers: list[tuple[bytes, bytes]] = []
    if status == 500:
        log.error("unhandled error", exc_info=exc)
        message = "internal error"
    elif isinstance(exc, AuthFailed):
        # The reason is a fixed word ("missing", "expired", ...), never credential material.
        message = f"authentication failed: {exc.reason}"
    else:
        message = str(exc)
    if isinstance(exc, AuthFailed):
        headers.append((b"www-authenticate", b'Bearer realm="infergate"'))
    if isinstance(exc, ReplicaBusy):
        headers.append((b"retry-after", str(max(1, math.ceil(exc.retry_after_s))).encode()))
    body = orjson.dumps({"error": kind, "message": message})
    return status, headers, body
