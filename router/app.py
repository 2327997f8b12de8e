"""Assembles the router: the runtime, the proxy app on the scoring port, the admin app on its own
port, one uvicorn server for each, in one event loop.

``RouterServer`` binds both sockets itself (so a port in use is an ``OSError`` here, not an exit
inside uvicorn, and port 0 works: the real ports are read back), starts, and stops: optionally
a drain phase first (``start_drain``: still serving, every answer ``Connection: close``), then
stop accepting, drain in-flight requests with a deadline, then close the pooled client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
from collections.abc import Iterator

import uvicorn
from opentelemetry import trace

from router.admin import build_admin_app
from router.drain import DrainingProtocol, DrainState, drain_accept_queue, with_drain
from router.http_limits import DEFAULT_HEAD_TIMEOUT_S, with_head_limits
from router.http_protocol import CoalescingHttpToolsProtocol
from router.lifespan import RouterRuntime
from router.routes import ProxyApp

DRAIN_TIMEOUT_S = 30

log = logging.getLogger("infergate.router")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the router installs one set for both servers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted sockets only when the listening
    # socket says TCP explicitly; without it every small answer waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class RouterServer:
    """The router's two listeners around one ``RouterRuntime``."""

    def __init__(
        self,
        runtime: RouterRuntime,
        host: str = "127.0.0.1",
        port: int = 8000,
        admin_port: int = 8002,
        *,
        admin_host: str | None = None,
        tracer: trace.Tracer | None = None,
        rng: random.Random | None = None,
        drain_timeout_s: int = DRAIN_TIMEOUT_S,
        head_timeout_s: float = DEFAULT_HEAD_TIMEOUT_S,
    ) -> None:
        self.runtime = runtime
        self.proxy = ProxyApp(runtime, tracer=tracer, rng=rng)
        self.admin = build_admin_app(runtime)
        data = bind(host, port)
        try:
            self._sockets = [data, bind(admin_host or host, admin_port)]
        except OSError:
            data.close()
            raise
        self.port = self._sockets[0].getsockname()[1]
        self.admin_port = self._sockets[1].getsockname()[1]
        common = {
            "lifespan": "off",
            "access_log": False,
            "log_config": None,
            "timeout_graceful_shutdown": drain_timeout_s,
            "timeout_keep_alive": 75,  # longer than typical client pools' idle timeouts
            # The router is the edge that appends to X-Forwarded-For; it must see the real peer.
            "proxy_headers": False,
        }
        self._servers = [
            # No Server or Date header of our own: the upstream's pass through.
            _Server(uvicorn.Config(self.proxy, http=CoalescingHttpToolsProtocol, server_header=False, date_header=False, **common)),  # type: ignore[arg-type]
            _Server(uvicorn.Config(self.admin, **common)),  # type: ignore[arg-type]
        ]
        self.drain_state = DrainState()
        for server in self._servers:
            # uvicorn has no request-head timeout or head size limit of its own (slow-loris):
            # wrap whichever httptools protocol the config chose.
            server.config.load()
            limited = with_head_limits(server.config.http_protocol_class, head_timeout_s)  # type: ignore[arg-type]
            server.config.http_protocol_class = with_drain(limited, self.drain_state)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self.runtime.start()
        for server, sock in zip(self._servers, self._sockets, strict=True):
            self._tasks.append(asyncio.create_task(server.serve(sockets=[sock])))
        while not all(s.started for s in self._servers):
            for task in self._tasks:
                if task.done():
                    task.result()  # a startup failure: raise it here
                    raise RuntimeError("router server stopped during start-up")
            await asyncio.sleep(0.01)

    @property
    def draining(self) -> bool:
        return self.drain_state.draining

    def start_drain(self) -> None:
        """Keep serving, but close every connection after its current or next answer
        (``Connection: close``), so none is idle when ``request_stop`` closes the rest."""
        self.drain_state.draining = True
        for server in self._servers:
            for connection in list(server.server_state.connections):
                if isinstance(connection, DrainingProtocol):
                    connection.start_drain()

    async def stop_after_drain(self) -> None:
        """After ``start_drain``: refuse new connections, let the loop accept those the kernel
        already queued (closing the sockets would reset them), then ``request_stop``."""
        if self.draining:
            await drain_accept_queue(self._sockets)
        self.request_stop()

    async def drain_then_stop(self, delay_s: float, cut_short: asyncio.Event | None = None) -> None:
        """The graceful stop (``infergate route`` and ``infergate up`` on SIGTERM/SIGINT):
        ``delay_s`` of drain (``start_drain``), ended early once ``cut_short`` is set, then
        ``stop_after_drain``. ``wait`` returns once in-flight requests have finished."""
        if delay_s > 0:
            self.start_drain()
            log.info("draining: answering with Connection: close for %.1f s, then stopping", delay_s, extra={"event": "draining"})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for((cut_short or asyncio.Event()).wait(), delay_s)
        log.info("stopping: no new connections; finishing in-flight requests", extra={"event": "stopping"})
        await self.stop_after_drain()

    def request_stop(self) -> None:
        for server in self._servers:
            server.should_exit = True

    async def wait(self) -> None:
        """Until both servers stop (``request_stop``), then close the runtime."""
        try:
            await asyncio.gather(*self._tasks)
        finally:
            await self.runtime.close()
            for sock in self._sockets:
                sock.close()

    async def stop(self) -> None:
        self.request_stop()
        await self.wait()
