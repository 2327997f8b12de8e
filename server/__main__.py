"""``infergate serve``: parse the config, bind, and serve with uvicorn (uvloop + httptools).

Shutdown (SIGTERM, or SIGINT) drains before it stops:

1. readiness (/v2/health/ready) answers 503 at once, while inference is still served for
   ``--drain-delay-s`` so load balancers take the replica out first;
2. then the listening socket closes, and in-flight and queued requests complete, for at
   most ``--graceful-timeout-s``;
3. the repository closes (batchers stop, sessions released) and the process exits 0.

A second signal skips the rest of the drain delay; a third stops without waiting.
With ``--workers N`` this process binds the socket, starts N worker processes sharing it
and forwards SIGTERM/SIGINT to them as SIGTERM; metrics are merged across workers
through prometheus-client's multiprocess mode in a temporary directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Generator, Sequence
from multiprocessing.connection import wait
from typing import Any

import uvicorn

from scoring import ConfigError, ScoringError
from server.app import build_app
from server.config import ServerConfig, load_config
from server.http_limits import with_head_limits
from server.http_protocol import CoalescingHttpToolsProtocol
from server.lifespan import scoring_config
from server.logs import configure_logging
from server.metrics import MULTIPROC_ENV
from server.state import Lifecycle

log = logging.getLogger("infergate.server")

EXIT_CONFIG = 2
EXIT_STARTUP = 3


class DrainingServer(uvicorn.Server):
    """uvicorn.Server whose signal handling runs the drain sequence described above."""

    def __init__(
        self,
        config: uvicorn.Config,
        lifecycle: Lifecycle,
        drain_delay_s: float,
        signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT),
    ) -> None:
        super().__init__(config)
        self.lifecycle = lifecycle
        self.drain_delay_s = drain_delay_s
        self.signals = tuple(signals)
        self._received = 0

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        loop = asyncio.get_running_loop()
        for sig in self.signals:
            loop.add_signal_handler(sig, self.on_signal, sig)
        try:
            yield
        finally:
            for sig in self.signals:
                loop.remove_signal_handler(sig)

    def on_signal(self, sig: signal.Signals) -> None:
        self._received += 1
        if self._received == 1:
            self.lifecycle.draining = True
            log.info(
                "draining: readiness is 503; serving for %.1f s more, then stopping",
                self.drain_delay_s,
                extra={"event": "draining", "signal": signal.Signals(sig).name},
            )
            asyncio.get_running_loop().call_later(self.drain_delay_s, self.stop)
        elif self._received == 2:
            self.stop()
        else:
            self.force_exit = True

    def stop(self) -> None:
        if not self.should_exit:
            log.info("stopping: no new connections; finishing in-flight requests", extra={"event": "stopping"})
        self.should_exit = True


def bind(config: ServerConfig) -> socket.socket:
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((config.host, config.port))
    except OSError as exc:
        sock.close()
        raise ConfigError("--host/--port", f"cannot bind: {exc.strerror}", f"{config.host}:{config.port}") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(
    config: ServerConfig,
    sock: socket.socket,
    signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT),
) -> int:
    """Run one server process on ``sock`` until it has drained; the exit code."""
    # An instance thread whose run has returned needs the GIL to hand its results back (and
    # to take its next batch); the loop holds it nearly all the time under load, and would
    # keep it for up to Python's 5 ms before a switch is forced.
    sys.setswitchinterval(config.gil_switch_interval_ms / 1000.0)
    lifecycle = Lifecycle()
    app = build_app(config, lifecycle=lifecycle)
    uv_config = uvicorn.Config(
        app,
        loop="uvloop",
        # uvicorn has no request-head timeout or head size limit of its own (slow-loris)
        http=with_head_limits(CoalescingHttpToolsProtocol, config.request_head_timeout_s),
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,  # nothing here reads the client address: one layer less
        timeout_graceful_shutdown=config.graceful_timeout_s,  # type: ignore[arg-type]  # float works
    )
    server = DrainingServer(uv_config, lifecycle, config.drain_delay_s, signals)
    try:
        server.run(sockets=[sock])
    except SystemExit as exc:  # uvicorn exits on a failed lifespan startup
        log.error("startup failed", extra={"event": "startup_failed"})
        return int(exc.code) if isinstance(exc.code, int) else EXIT_STARTUP
    if not server.started:
        return EXIT_STARTUP
    log.info("stopped", extra={"event": "stopped"})
    return 0


def _worker(config: ServerConfig, sock: socket.socket) -> None:
    """Entry of a worker process (spawned): SIGINT is the supervisor's to forward."""
    configure_logging(config.log_level)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(serve(config, sock, signals=(signal.SIGTERM,)))


def supervise(config: ServerConfig, sock: socket.socket) -> int:
    """Run ``config.workers`` processes on ``sock``; restart crashed ones; forward signals."""
    metrics_dir = tempfile.mkdtemp(prefix="infergate-metrics-")
    os.environ[MULTIPROC_ENV] = metrics_dir  # inherited by the workers before they import
    ctx = multiprocessing.get_context("spawn")
    stopping = False

    def start() -> Any:
        proc = ctx.Process(target=_worker, args=(config, sock), daemon=False)
        proc.start()
        return proc

    procs = [start() for _ in range(config.workers)]

    def on_signal(sig: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    codes: list[int] = []
    try:
        from prometheus_client import multiprocess

        while procs:
            wait([p.sentinel for p in procs], timeout=1.0)
            for proc in [p for p in procs if not p.is_alive()]:
                procs.remove(proc)
                proc.join()
                code = proc.exitcode if proc.exitcode is not None else 1
                if proc.pid is not None:
                    multiprocess.mark_process_dead(proc.pid, metrics_dir)  # type: ignore[no-untyped-call]
                if stopping:
                    codes.append(code)
                elif code == EXIT_STARTUP:
                    log.error("a worker failed to start; stopping", extra={"event": "worker_failed"})
                    stopping = True
                    codes.append(code)
                    on_signal(signal.SIGTERM, None)
                else:
                    log.error("worker %s exited with %s; restarting", proc.pid, code)
                    procs.append(start())
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return max(codes, default=0)


def main(argv: list[str]) -> int:
    try:
        config = load_config(argv)
        config.check_paths()
        scoring_config(config)  # a bad --scoring-config fails here, before binding
    except SystemExit as exc:  # --help
        return int(exc.code) if isinstance(exc.code, int) else 0
    except (ConfigError, ScoringError) as exc:
        print(f"infergate serve: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(config.log_level)
    try:
        sock = bind(config)
    except ConfigError as exc:
        print(f"infergate serve: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    host, port = sock.getsockname()[:2]
    log.info(
        "listening on http://%s:%d", host, port,
        extra={"event": "listening", "host": host, "port": port, "workers": config.workers},
    )
    if config.workers == 1:
        return serve(config, sock)
    return supervise(config, sock)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
