"""``infergate route``: run the router in front of scoring replicas.

    infergate route --config router.yaml [--host 127.0.0.1] [--port 8000]
                    [--admin-port 8002] [--state-dir DIR] [--drain-delay-s 2]

An invalid config exits with status 2 and the field error on stderr. SIGHUP reloads the config
file (an invalid file is logged and the running config kept). SIGTERM and SIGINT stop both
ports gracefully:

1. for ``--drain-delay-s`` the router keeps serving, but every answer carries
   ``Connection: close``, so keep-alive clients leave after their request is answered (a
   connection closed while idle can race a request its client is sending: a reset);
2. then the listening sockets close and in-flight requests finish (30 s at most);
3. the pooled upstream client closes and the process exits 0.

A second signal skips the rest of the drain delay.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from opentelemetry import trace

from router.app import RouterServer
from router.config import RouterConfig, load_config
from router.lifespan import RouterRuntime
from router.logs import configure_logging
from router.state_files import StateFileError
from router.tracing import configure_tracing
from scoring import ConfigError

log = logging.getLogger("infergate.router")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="infergate route", description="Run the infergate router.")
    parser.add_argument("--config", type=Path, required=True, help="router config, YAML or JSON")
    parser.add_argument("--host", default="127.0.0.1", help="address for both ports (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="scoring port (default 8000)")
    parser.add_argument("--admin-port", type=int, default=8002, help="admin API and /metrics port (default 8002)")
    parser.add_argument(
        "--state-dir", type=Path, default=Path(".infergate"), help="keys, token secrets, admin token (default .infergate)"
    )
    parser.add_argument(
        "--request-head-timeout-s", type=float, default=10.0,
        help="close connections whose request head is not in after this many seconds (default 10)",
    )
    parser.add_argument(
        "--drain-delay-s", type=float, default=2.0,
        help="on SIGTERM/SIGINT, serve this many seconds more with Connection: close before closing the ports (default 2)",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser


async def run(config: RouterConfig, args: argparse.Namespace, tracing: bool) -> None:
    # Signal handlers go in before the sockets are bound: a SIGHUP (or SIGTERM) that arrives
    # while the router starts must not take the default action and kill the process. A
    # reload asked for during start-up runs once the router has started; a stop, likewise.
    loop = asyncio.get_running_loop()
    started = asyncio.Event()
    stopping = asyncio.Event()
    reloads: set[asyncio.Task[bool]] = set()

    async def reload_when_started() -> bool:
        await started.wait()
        return await runtime.reload()

    def reload() -> None:
        task = loop.create_task(reload_when_started())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    signals_seen = 0

    def stop() -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            stopping.set()
        else:  # a second signal: no more drain delay
            stop_now.set()

    stop_now = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop)
    loop.add_signal_handler(signal.SIGINT, stop)
    loop.add_signal_handler(signal.SIGHUP, reload)
    try:
        runtime = RouterRuntime(config, args.state_dir)
        tracer = trace.get_tracer("infergate.router") if tracing else None
        server = RouterServer(
            runtime, args.host, args.port, args.admin_port, tracer=tracer, head_timeout_s=args.request_head_timeout_s
        )
        await server.start()
        started.set()
        log.info(
            "router ready",
            extra={"port": server.port, "admin_port": server.admin_port, "endpoints": len(config.endpoints)},
        )
        stopper = loop.create_task(_stop_after_drain(server, stopping, stop_now, args.drain_delay_s))
        await server.wait()
        stopper.cancel()
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
    log.info("router stopped")


async def _stop_after_drain(server: RouterServer, stopping: asyncio.Event, stop_now: asyncio.Event, delay_s: float) -> None:
    await stopping.wait()
    await server.drain_then_stop(delay_s, stop_now)


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if not 0 < args.request_head_timeout_s <= 3600:
        print(f"infergate route: --request-head-timeout-s: must be between 0 and 3600, got {args.request_head_timeout_s}", file=sys.stderr)
        return 2
    if not 0 <= args.drain_delay_s <= 600:
        print(f"infergate route: --drain-delay-s: must be between 0 and 600, got {args.drain_delay_s}", file=sys.stderr)
        return 2
    configure_logging(args.log_level)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"infergate route: invalid config {args.config}: {exc}", file=sys.stderr)
        return 2
    tracing = configure_tracing(os.environ)
    try:
        import uvloop
    except ImportError:  # uvloop is not built for every platform
        uvloop = None  # type: ignore[assignment]
    try:
        if uvloop is not None:
            uvloop.run(run(config, args, tracing))
        else:
            asyncio.run(run(config, args, tracing))
    except (OSError, StateFileError) as exc:  # a port in use, an unwritable or corrupt state dir
        print(f"infergate route: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"infergate route: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
