"""The one request middleware (plain ASGI, no BaseHTTPMiddleware): request id, error
rendering through the table in ``server/errors.py``, request metrics, the request span,
``x-ms-run-fn-exec-ms`` on /score, and the optional access log.

It wraps ``send`` once per request; endpoints report what it cannot see (model, version,
timings) through the ``RequestInfo`` they find at ``scope["infergate"]``.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server import errors
from server.logs import request_id_var
from server.metrics import Metrics
from server.tracing import Tracing

access_log = logging.getLogger("infergate.access")

_REQUEST_ID_HEADERS = (b"x-ms-request-id", b"x-request-id")


class RequestInfo:
    """Per-request facts shared between the middleware and the endpoint."""

    __slots__ = (
        "request_id",
        "client_request_id",
        "started",
        "model",
        "version",
        "protocol",
        "exec_ms",
        "span",
        "status",
        "response_started",
        "header_ids",
    )

    def __init__(self, request_id: str, header_ids: dict[bytes, str], started: float) -> None:
        self.request_id = request_id
        self.header_ids = header_ids  # request-id headers as the client sent them
        self.started = started  # time.perf_counter() at arrival
        self.model: str | None = None  # set by inference endpoints: metrics labels
        self.version = ""
        self.protocol: errors.Protocol = "v2"
        self.exec_ms: float | None = None  # time spent scoring, for x-ms-run-fn-exec-ms
        self.span: Any = None
        self.status = 0
        self.response_started = False


class RequestIds:
    """UUID-shaped request ids: a random per-process prefix and a counter.

    uuid4() reads the OS random source on every call; a counter behind a random
    prefix is as unique within and across processes, at a fraction of the cost.
    """

    def __init__(self) -> None:
        hex_ = uuid.uuid4().hex
        self._prefix = f"{hex_[:8]}-{hex_[8:12]}-{hex_[12:16]}-{hex_[16:20]}-"
        self._counter = itertools.count(int(hex_[20:], 16) & 0xFFFFFFFF)

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter) & 0xFFFFFFFFFFFF:012x}"


def protocol_of(path: str) -> errors.Protocol:
    return "v2" if path.startswith("/v2") else "azureml"


class RequestMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics, tracing: Tracing, access_log_on: bool) -> None:
        self.app = app
        self.metrics = metrics
        self.tracing = tracing
        self.access_log_on = access_log_on
        self.ids = RequestIds()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        header_ids: dict[bytes, str] = {}
        for key, value in scope["headers"]:
            if key in _REQUEST_ID_HEADERS:
                header_ids[key] = value.decode("latin-1")[:200]
        request_id = (
            header_ids.get(b"x-ms-request-id") or header_ids.get(b"x-request-id") or self.ids.next()
        )
        info = RequestInfo(request_id, header_ids, started)
        scope["infergate"] = info
        scope["app"] = self.app  # makes Starlette raise HTTPException for 404/405 (rendered below)
        token = request_id_var.set(request_id)
        if self.tracing.enabled:
            info.span = self.tracing.start_request(scope)
        id_bytes = request_id.encode("latin-1")
        is_score = scope["path"] == "/score"

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                info.status = message["status"]
                info.response_started = True
                headers = list(message.get("headers", ()))
                headers.append((b"x-ms-request-id", id_bytes))
                headers.append((b"x-request-id", id_bytes))
                if is_score:
                    exec_ms = info.exec_ms
                    if exec_ms is None:
                        exec_ms = (time.perf_counter() - started) * 1000.0
                    headers.append((b"x-ms-run-fn-exec-ms", f"{exec_ms:.3f}".encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            if info.response_started:  # too late to answer: the connection is dropped
                errors.log.error("error after the response started", exc_info=exc)
            else:
                protocol = info.protocol if info.model is not None else protocol_of(scope["path"])
                status, body, headers = errors.render(exc, protocol, request_id)
                headers.append((b"content-length", str(len(body)).encode()))
                await send_wrapper({"type": "http.response.start", "status": status, "headers": headers})
                await send_wrapper({"type": "http.response.body", "body": body})
        finally:
            elapsed = time.perf_counter() - started
            if info.model is not None:
                self.metrics.observe_request(
                    info.model, info.version, info.protocol, info.status, elapsed
                )
                self.metrics.inflight.dec()
            if info.span is not None:
                attrs = {"infergate.request_id": request_id}
                if info.model is not None:
                    attrs["infergate.model"] = info.model
                    attrs["infergate.version"] = info.version
                self.tracing.end_request(info.span, info.status, attrs)
            if self.access_log_on:
                access_log.info(
                    "%s %s %d",
                    scope["method"],
                    scope["path"],
                    info.status,
                    extra={
                        "request_id": request_id,
                        "status": info.status,
                        "duration_ms": round(elapsed * 1000.0, 3),
                    },
                )
            request_id_var.reset(token)
