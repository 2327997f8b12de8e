"""Helpers for the router's socket tests: tiny counting upstreams and a router, both on uvicorn
at 127.0.0.1 port 0 in the test's own event loop (each test runs ``asyncio.run``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import uvicorn
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from router.app import RouterServer, bind
from router.config import load_config
from router.lifespan import RouterRuntime
from router.upstream import ClientLimits, Resolver, resolve_host

def run(coro: Any) -> Any:
    """Run a test scenario on uvloop (as the router runs in production) when available."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


ADMIN_TOKEN = "admin-token-for-tests-0123456789"
FAST_LIMITS = ClientLimits(probe_interval_s=0.02, probe_max_interval_s=0.1, connect_timeout_s=2.0)


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[no-untyped-def]
        yield


class Upstream:
    """A scoring replica stand-in that counts what it receives.

    Routes: ``/score`` (JSON naming the replica), ``/slow`` (waits for ``release``),
    ``/status/{code}``, ``/stream`` (a chunked answer), ``/echo`` (the body back),
    ``/v2/health/ready`` (200 unless ``ready`` is False).
    """

    def __init__(self, name: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.name = name
        self.hits = 0
        self.health_checks = 0
        self.ready = True
        self.headers: list[dict[str, str]] = []
        self.release = asyncio.Event()
        self.inflight = 0
        self.max_inflight = 0
        self._sock = bind(host, port)
        self.host = host
        self.port = self._sock.getsockname()[1]
        app = Starlette(
            routes=[
                Route("/score", self._score, methods=["GET", "POST"]),
                Route("/slow", self._slow, methods=["GET", "POST"]),
                Route("/status/{code:int}", self._status, methods=["GET", "POST"]),
                Route("/stream", self._stream, methods=["GET", "POST"]),
                Route("/echo", self._echo, methods=["POST"]),
                Route("/v2/health/ready", self._health, methods=["GET"]),
                Route("/raw/{rest:path}", self._raw, methods=["GET", "POST"]),
            ]
        )
        config = uvicorn.Config(app, lifespan="off", access_log=False, log_config=None, timeout_graceful_shutdown=1)
        self._server = _QuietServer(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        self._server.should_exit = True
        self.release.set()
        if self._task is not None:
            await self._task
        self._sock.close()

    def _record(self, request: Request) -> None:
        self.hits += 1
        self.headers.append({k.lower(): v for k, v in request.headers.items()})

    async def _score(self, request: Request) -> Response:
        self._record(request)
        body = await request.body()
        return JSONResponse({"replica": self.name, "path": request.url.path, "query": request.url.query, "bytes": len(body)})

    async def _slow(self, request: Request) -> Response:
        self._record(request)
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            await self.release.wait()
        finally:
            self.inflight -= 1
        return JSONResponse({"replica": self.name})

    async def _status(self, request: Request) -> Response:
        self._record(request)
        code = request.path_params["code"]
        return JSONResponse({"replica": self.name, "detail": "as asked"}, status_code=code, headers={"x-upstream": "yes"})

    async def _stream(self, request: Request) -> Response:
        self._record(request)

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(50):
                yield f"chunk-{i:03d};".encode() * 100

        return StreamingResponse(chunks(), media_type="text/plain")

    async def _echo(self, request: Request) -> Response:
        self._record(request)
        body = b"".join([chunk async for chunk in request.stream()])
        return Response(body, media_type="application/octet-stream")

    async def _raw(self, request: Request) -> Response:
        self._record(request)
        return JSONResponse({"raw_path": request.scope["raw_path"].decode("latin-1"), "query": request.url.query})

    async def _health(self, request: Request) -> Response:
        self.health_checks += 1
        return JSONResponse({}, status_code=200 if self.ready else 503)


@contextlib.asynccontextmanager
async def upstreams(*names: str) -> AsyncIterator[list[Upstream]]:
    started = [Upstream(n) for n in names]
    try:
        for u in started:
            await u.start()
        yield started
    finally:
        for u in started:
            if u._task is not None and not u._task.done():
                await u.stop()


def endpoint(name: str, versions: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    return {"name": name, "versions": versions, **fields}


def version(name: str, *ups: Upstream | str, pct: int = 0, default: bool = False, **fields: Any) -> dict[str, Any]:
    urls = [u.url if isinstance(u, Upstream) else u for u in ups]
    return {"name": name, "upstreams": urls, "traffic_percentile": pct, "is_default": default, **fields}


def write_config(tmp_path: Path, endpoints: list[dict[str, Any]], suffix: str = ".yaml") -> Path:
    path = tmp_path / f"router{suffix}"
    doc = {"endpoints": endpoints}
    path.write_text(json.dumps(doc) if suffix == ".json" else yaml.safe_dump(doc))
    return path


@contextlib.asynccontextmanager
async def router(
    tmp_path: Path,
    endpoints: list[dict[str, Any]],
    *,
    seed: int = 1234,
    limits: ClientLimits = FAST_LIMITS,
    resolver: Resolver = resolve_host,
    tracer: Any = None,
) -> AsyncIterator[RouterServer]:
    path = write_config(tmp_path, endpoints)
    runtime = RouterRuntime(
        load_config(path),
        tmp_path / "state",
        env={"INFERGATE_ADMIN_TOKEN": ADMIN_TOKEN},
        limits=limits,
        resolver=resolver,
    )
    server = RouterServer(runtime, "127.0.0.1", 0, 0, rng=random.Random(seed), drain_timeout_s=2, tracer=tracer)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def scoring_url(server: RouterServer, endpoint_name: str, path: str = "score") -> str:
    return f"http://127.0.0.1:{server.port}/api/v1/service/{endpoint_name}/{path}"


def admin_url(server: RouterServer, path: str) -> str:
    return f"http://127.0.0.1:{server.admin_port}{path}"


def key_header(server: RouterServer, endpoint_name: str, which: str = "primary") -> dict[str, str]:
    keys = server.runtime.keys.get(endpoint_name)
    return {"Authorization": f"Bearer {keys.primary if which == 'primary' else keys.secondary}"}


ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def until(predicate: Any, timeout_s: float = 10.0) -> None:
    """Poll ``predicate`` (every 10 ms) until true, failing after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.01)
