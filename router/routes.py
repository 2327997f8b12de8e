"""The data plane: ``ANY /api/v1/service/{endpoint}/{path}`` -> ``{path}`` on the chosen version.

A plain ASGI app rather than Starlette routes and middleware: this is the hot path, and it reads
top to bottom: find the endpoint, authenticate (before any byte goes upstream), choose the
version (pin header, stickiness hash, or a random percentile), forward, stream the answer back
with ``azureml-model-deployment`` and ``x-request-id``, and maybe mirror a copy in the background.
"""

from __future__ import annotations

import itertools
import logging
import random
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from opentelemetry import propagate, trace

from router.auth import AuthFailed
from router.errors import NotFound, ReplicaBusy, RouterError, render_error
from router.lifespan import RouterRuntime
from router.splits import PERCENTILES, sticky_draw
from router.table import EndpointRoute, VersionRoute
from router.upstream import Body, filter_request_headers

log = logging.getLogger("infergate.router")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PREFIX = "/api/v1/service/"
_PREFIX_BYTES = PREFIX.encode()
PIN_HEADER = b"azureml-model-deployment"
REQUEST_ID_HEADER = b"x-request-id"
# Never forwarded: scoring containers do not see credentials.
DROP_UPSTREAM = frozenset({b"authorization", b"x-forwarded-for", b"x-request-id"})
# Response headers the router sets itself, never copied from the replica's answer.
_ROUTER_SET = frozenset({REQUEST_ID_HEADER, PIN_HEADER})
# Bodies up to this size are sent in one piece; larger or unknown ones are streamed.
BUFFER_LIMIT = 1 << 20
_REQUEST_ID_OK = re.compile(rb"[!-~]{1,128}")


class RequestIds:
    """32-hex-digit request ids: a random per-process prefix and a counter.

    ``uuid4()`` reads the OS random source on every call; a counter behind a random 64-bit
    prefix is as unique within and across processes, at a fraction of the cost.
    """

    def __init__(self) -> None:
        self._prefix = uuid.uuid4().hex[:16]
        self._counter = itertools.count(int(uuid.uuid4().hex[:12], 16))

    def next(self) -> bytes:
        return f"{self._prefix}{next(self._counter) & 0xFFFFFFFFFFFFFFFF:016x}".encode()


class ClientDisconnected(Exception):
    """The client went away while its body was being streamed upstream."""


def _json_response_messages(status: int, body: bytes, extra: list[tuple[bytes, bytes]]) -> tuple[Message, Message]:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    return (
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": body},
    )


class ProxyApp:
    """The scoring-port ASGI app. With a ``tracer``, one span per request, child of the
    client's ``traceparent``, whose context goes upstream; without one (no exporter configured)
    ``traceparent`` is passed through untouched, at no cost."""

    def __init__(
        self, runtime: RouterRuntime, tracer: trace.Tracer | None = None, rng: random.Random | None = None
    ) -> None:
        self.runtime = runtime
        self.tracer = tracer
        self.tracing = tracer is not None
        self._randrange = (rng or random.Random()).randrange
        self._random = (rng or random.Random()).random
        self._request_ids = RequestIds()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan_noop(receive, send)
            return
        if scope["type"] != "http":
            return  # websockets: closed without accepting
        path: str = scope["path"]
        if path == "/healthz":
            start, body = _json_response_messages(200, b'{"status":"ok"}', [])
            await send(start)
            await send(body)
            return
        if self.tracer is None:
            await self._handle(scope, receive, send)
            return
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        with self.tracer.start_as_current_span(
            "router.proxy", context=propagate.extract(carrier), kind=trace.SpanKind.SERVER
        ) as span:
            span.set_attribute("http.method", scope["method"])
            span.set_attribute("url.path", path)
            await self._handle(scope, receive, send)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime = self.runtime
        raw_headers: list[tuple[bytes, bytes]] = scope["headers"]
        request_id = b""
        authorization: bytes | None = None
        pinned: bytes | None = None
        for k, v in raw_headers:
            if k == b"authorization":
                authorization = v
            elif k == PIN_HEADER:
                pinned = v
            elif k == REQUEST_ID_HEADER and _REQUEST_ID_OK.fullmatch(v):
                request_id = v
        if not request_id:
            request_id = self._request_ids.next()
        table = runtime.table  # one table for the whole request, even if a swap happens meanwhile
        route: EndpointRoute | None = None
        version: VersionRoute | None = None
        try:
            path: str = scope["path"]
            if not path.startswith(PREFIX):
                raise NotFound(f"no route for {path}; scoring URIs look like {PREFIX}<endpoint>/score")
            endpoint_name, _, rest = path[len(PREFIX) :].partition("/")
            route = table.endpoints.get(endpoint_name)
            if route is None:
                raise NotFound(f"endpoint '{endpoint_name}' not found")
            if not route.open:
                await self._authenticate(route, authorization)
            if pinned is not None:
                version = route.versions.get(pinned.decode("latin-1"))
                if version is None:
                    raise NotFound(f"endpoint '{endpoint_name}' has no version '{pinned.decode('latin-1')}'")
            else:
                draw = -1
                if route.sticky_header is not None:
                    for k, v in raw_headers:
                        if k == route.sticky_header:
                            draw = sticky_draw(v.decode("latin-1"))
                            break
                if draw < 0:
                    draw = self._randrange(PERCENTILES)
                version = route.draws[draw]
            await self._forward(scope, receive, send, route, version, pinned is not None, request_id, raw_headers, rest)
        except (RouterError, AuthFailed) as exc:
            await self._send_error(send, exc, route, version, request_id)
        except ClientDisconnected:
            return
        except Exception as exc:  # noqa: BLE001 -- one 500 with a JSON body, stack logged once
            await self._send_error(send, exc, route, version, request_id)

    async def _authenticate(self, route: EndpointRoute, authorization: bytes | None) -> None:
        # External key sets are fetched in the background (JwksCache(background=True)); verify
        # never blocks the loop on the network.
        authenticator = self.runtime.authenticator
        policy = route.policy
        header = authorization.decode("latin-1") if authorization is not None else None
        try:
            authenticator.verify(header, policy, time.time())
        except AuthFailed as exc:
            self.runtime.metrics.auth_failures.labels(route.config.name, exc.reason).inc()
            raise

    async def _send_error(
        self,
        send: Send,
        exc: BaseException,
        route: EndpointRoute | None,
        version: VersionRoute | None,
        request_id: bytes,
    ) -> None:
        status, extra, body = render_error(exc)
        extra.append((REQUEST_ID_HEADER, request_id))
        if version is not None:
            extra.append((PIN_HEADER, version.name_header))
        self._count(route, version, status)
        start, message = _json_response_messages(status, body, extra)
        await send(start)
        await send(message)

    def _count(self, route: EndpointRoute | None, version: VersionRoute | None, status: int) -> None:
        self.runtime.metrics.count_request(
            route.config.name if route is not None else "",
            version.name if version is not None else "",
            version.version_type if version is not None else "",
            status,
        )

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        route: EndpointRoute,
        version: VersionRoute,
        pinned: bool,
        request_id: bytes,
        raw_headers: list[tuple[bytes, bytes]],
        rest: str,
    ) -> None:
        runtime = self.runtime
        headers = filter_request_headers(raw_headers, DROP_UPSTREAM)
        forwarded_for = b""
        for k, v in raw_headers:
            if k == b"x-forwarded-for":
                forwarded_for = v
        client = scope.get("client")
        if client:
            peer = client[0].encode("latin-1")
            forwarded_for = forwarded_for + b", " + peer if forwarded_for else peer
        if forwarded_for:
            headers.append((b"x-forwarded-for", forwarded_for))
        headers.append((b"x-forwarded-proto", scope.get("scheme", "http").encode("latin-1")))
        headers.append((REQUEST_ID_HEADER, request_id))
        if self.tracing:
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            drop = {k.lower().encode("latin-1") for k in carrier}
            headers = [(k, v) for k, v in headers if k not in drop]
            headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in carrier.items()]

        # Forward the path as the client encoded it (a %2F stays %2F), when the server kept it.
        raw_path: bytes | None = scope.get("raw_path")
        if raw_path is not None and raw_path.startswith(_PREFIX_BYTES):
            target = "/" + raw_path[len(_PREFIX_BYTES) :].partition(b"/")[2].decode("latin-1")
        else:
            target = "/" + rest
        query: bytes = scope.get("query_string", b"")
        if query:
            target += "?" + query.decode("latin-1")

        mirror = route.mirror
        mirrored = (
            mirror is not None
            and not pinned
            and route.config.mirror is not None
            and self._random() * 100 < route.config.mirror.percent
        )
        body = await _request_body(receive, collect=mirrored)
        if mirrored and mirror is not None:
            runtime.spawn(self._mirror(route, mirror, scope["method"], target, headers, body))

        started = False
        t0 = time.perf_counter()
        async with runtime.pool.request(
            version.replicas, scope["method"], target, headers, body, route.timeout, route.wait_s
        ) as upstream:
            # The replica echoes the request id it was sent; the router states it once.
            out_headers = [h for h in upstream.headers if h[0] not in _ROUTER_SET]
            out_headers.append((PIN_HEADER, version.name_header))
            out_headers.append((REQUEST_ID_HEADER, request_id))
            length = upstream.content_length
            if length is not None and length <= BUFFER_LIMIT:
                payload = await upstream.read()
                await send({"type": "http.response.start", "status": upstream.status, "headers": out_headers})
                started = True
                await send({"type": "http.response.body", "body": payload})
            else:
                await send({"type": "http.response.start", "status": upstream.status, "headers": out_headers})
                started = True
                try:
                    async for chunk in upstream.chunks():
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                except RouterError as exc:
                    # Headers are gone already: all we can do is cut the response short.
                    log.warning("upstream broke mid-response: %s", exc)
                    raise ClientDisconnected() from exc
                await send({"type": "http.response.body", "body": b""})
        runtime.metrics.observe_upstream(route.config.name, version.name, "false", time.perf_counter() - t0)
        assert started
        self._count(route, version, upstream.status)

    async def _mirror(
        self,
        route: EndpointRoute,
        version: VersionRoute,
        method: str,
        target: str,
        headers: list[tuple[bytes, bytes]],
        body: Body,
    ) -> None:
        """Send a copy, read and discard the answer, count and time it. Never raises."""
        metrics = self.runtime.metrics
        t0 = time.perf_counter()
        try:
            # wait_s=0: a busy mirror drops the copy rather than queueing behind live traffic.
            async with self.runtime.pool.request(version.replicas, method, target, headers, body, route.timeout, 0.0) as r:
                await r.read()
                outcome = str(r.status)
        except RouterError as exc:
            outcome = "dropped" if type(exc) is ReplicaBusy else "error"
        except Exception:  # noqa: BLE001 -- a mirror must never take anything down
            log.exception("mirror request failed")
            outcome = "error"
        else:
            metrics.observe_upstream(route.config.name, version.name, "true", time.perf_counter() - t0)
        metrics.mirror_requests.labels(route.config.name, version.name, outcome).inc()


async def _request_body(receive: Receive, collect: bool) -> Body:
    """The request body: bytes when it arrived in one message (or ``collect``), else a stream."""
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientDisconnected()
    first: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return first or None
    if collect:
        parts = [first]
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected()
            parts.append(message.get("body", b""))
            more = message.get("more_body", False)
        return b"".join(parts)
    return _stream(first, receive)


async def _stream(first: bytes, receive: Receive) -> AsyncIterator[bytes]:
    if first:
        yield first
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected()
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        more = message.get("more_body", False)


async def _lifespan_noop(receive: Receive, send: Send) -> None:
    """The runtime's life is managed by ``router.app.serve``; answer uvicorn's lifespan politely."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
