"""``infergate up``: N scoring replicas behind the router on this machine (``make up``).

    infergate up [--model-repository DIR] [--replicas N] [--host 127.0.0.1] [--port 8000]
                 [--admin-port 8002] [--scoring-port 8001] [--state-dir DIR] [--drain-delay-s 2]

Replica i is ``python -m server.cli serve --model-repository DIR --port <scoring-port + i>``,
a child process of this one; the router runs in this process, in front of them, serving one
endpoint, ``demo``, from ``<state-dir>/router.yaml`` (written on first start; later starts
keep the file, admin changes included, and point the default version at the replicas of this
run). Once every replica answers ``/v2/health/ready``, it prints the scoring URI, the primary
key, and a curl line that scores an example built from the model's own metadata
(``GET /v2/models/<name>`` on a replica), after checking that line works.

Ctrl-C or SIGTERM stops everything gracefully, as ``infergate route`` does, then the replicas:

1. for ``--drain-delay-s`` the router keeps serving, every answer with ``Connection: close``
   (keep-alive clients leave after a whole answer);
2. the router's ports stop accepting and its in-flight requests finish (their replicas are
   still up);
3. each replica gets SIGTERM and finishes what it has in flight; the process exits 0.

A second signal skips the rest of the drain delay.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from router.app import RouterServer
from router.config import (
    EndpointConfig,
    RouterConfig,
    VersionConfig,
    load_config,
    save_config,
    validate_endpoint,
)
from router.lifespan import RouterRuntime
from router.logs import configure_logging
from scoring import ConfigError

ENDPOINT = "demo"
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
CONFIG_FILE = "router.yaml"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="infergate up", description="Run scoring replicas behind the router.")
    p.add_argument("--model-repository", type=Path, default=Path("models/generated"), help="model repository DIR")
    p.add_argument("--replicas", type=int, default=1, help="scoring processes (default 1)")
    p.add_argument("--host", default="127.0.0.1", help="address for every port (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="router scoring port (default 8000)")
    p.add_argument("--admin-port", type=int, default=8002, help="router admin port (default 8002)")
    p.add_argument("--scoring-port", type=int, default=8001, help="replica i listens on this + i (default 8001)")
    p.add_argument("--state-dir", type=Path, default=Path(".infergate"), help="keys, tokens, router.yaml")
    p.add_argument(
        "--drain-delay-s", type=float, default=2.0,
        help="on Ctrl-C/SIGTERM, the router serves this many seconds more with Connection: close (default 2)",
    )
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    return p


def replica_urls(host: str, scoring_port: int, replicas: int) -> list[str]:
    shown = f"[{host}]" if ":" in host else host
    return [f"http://{shown}:{scoring_port + i}" for i in range(replicas)]


def launcher_config(existing: RouterConfig | None, upstreams: Sequence[str]) -> RouterConfig:
    """The config to run: ``existing`` with the ``demo`` endpoint's default version pointed at
    this run's replicas, or a fresh one-version endpoint when there is none."""
    ups = tuple(upstreams)
    if existing is not None:
        endpoint = existing.endpoint(ENDPOINT)
        if endpoint is not None:
            default = endpoint.default_version
            versions = tuple(
                dataclasses.replace(v, upstreams=ups) if v.name == default.name else v for v in endpoint.versions
            )
            patched = dataclasses.replace(endpoint, versions=versions)
            validate_endpoint(patched)
            endpoints = tuple(patched if e.name == ENDPOINT else e for e in existing.endpoints)
            return dataclasses.replace(existing, endpoints=endpoints)
    fresh = EndpointConfig(
        name=ENDPOINT,
        versions=(VersionConfig(name="v1", upstreams=ups, traffic_percentile=100, is_default=True, version_type="control"),),
    )
    validate_endpoint(fresh)
    others = existing.endpoints if existing is not None else ()
    return RouterConfig(endpoints=(*others, fresh), path=existing.path if existing is not None else None)


_EXAMPLE_VALUES: Mapping[str, Any] = {"BOOL": True, "BYTES": "example", "FP16": 1.0, "FP32": 1.0, "FP64": 1.0}


def example_input(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """A ``/score`` body for a model from its v2 metadata: one row, dynamic dims as 1.

    ``{"data": rows}`` for a one-input model (AzureML's shape), ``{"<input>": rows}`` otherwise.
    """
    inputs = metadata.get("inputs") or []
    if not inputs:
        raise ValueError(f"model '{metadata.get('name')}' lists no inputs")
    body: dict[str, Any] = {}
    for spec in inputs:
        value = _EXAMPLE_VALUES.get(str(spec.get("datatype")), 1)
        shape = [1 if int(d) < 0 else int(d) for d in spec.get("shape", [])]
        body[str(spec["name"])] = np.full(shape, value, dtype=object).tolist()
    if len(inputs) == 1:
        return {"data": next(iter(body.values()))}
    return body


def curl_line(url: str, key: str, body: Mapping[str, Any]) -> str:
    payload = json.dumps(body, separators=(", ", ": "))
    return (
        f"curl -sS -X POST {shlex.quote(url)} -H {shlex.quote('Authorization: Bearer ' + key)} "
        f"-H 'Content-Type: application/json' -d {shlex.quote(payload)}"
    )


class Replicas:
    """The scoring child processes."""

    def __init__(self, model_repository: Path, host: str, urls: Sequence[str]) -> None:
        self.urls = list(urls)
        self.procs: list[subprocess.Popen[bytes]] = []
        for url in self.urls:
            port = url.rsplit(":", 1)[1]
            cmd = [
                sys.executable, "-m", "server.cli", "serve",
                "--model-repository", str(model_repository), "--host", host, "--port", port,
                # Nothing to drain behind a stopped router: no need to stay unready for 5 s.
                "--drain-delay-s", "0",
                "--log-level", "warning",  # keep the lines printed below readable
            ]  # fmt: skip
            # Own session: a terminal's Ctrl-C reaches the launcher, which stops replicas in order.
            self.procs.append(subprocess.Popen(cmd, start_new_session=True))

    async def wait_ready(self, session: aiohttp.ClientSession, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        pending = set(range(len(self.urls)))
        while pending:
            for i in list(pending):
                code = self.procs[i].poll()
                if code is not None:
                    raise RuntimeError(f"scoring replica {self.urls[i]} exited with status {code}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(self.urls[i] + "/v2/health/ready", timeout=aiohttp.ClientTimeout(total=2)) as r:
                        if r.status == 200:
                            pending.discard(i)
            if pending:
                if loop.time() > deadline:
                    raise RuntimeError(f"scoring replicas not ready after {timeout_s:.0f} s: {[self.urls[i] for i in pending]}")
                await asyncio.sleep(0.1)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _model_example(session: aiohttp.ClientSession, replica: str) -> dict[str, Any]:
    async with session.post(replica + "/v2/repository/index", json={"ready": True}) as r:
        index = await r.json()
    names = sorted({str(m["name"]) for m in index if m.get("state", "READY") == "READY"})
    if not names:
        raise RuntimeError(f"no ready model on {replica}")
    async with session.get(f"{replica}/v2/models/{names[0]}") as r:
        metadata = await r.json()
    return example_input(metadata)


async def run(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    config_path = state_dir / CONFIG_FILE
    urls = replica_urls(args.host, args.scoring_port, args.replicas)
    existing = load_config(config_path) if config_path.exists() else None
    config = launcher_config(existing, urls)
    save_config(config, config_path)
    config = load_config(config_path)

    replicas = Replicas(args.model_repository, args.host, urls)
    stop = asyncio.Event()
    stop_now = asyncio.Event()  # a second signal: no more drain delay

    def on_signal() -> None:
        (stop_now if stop.is_set() else stop).set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    server: RouterServer | None = None
    try:
        async with aiohttp.ClientSession() as session:
            waiting = asyncio.create_task(replicas.wait_ready(session, READY_TIMEOUT_S))
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                waiting.cancel()
                return 130
            stopping.cancel()
            waiting.result()
            server = RouterServer(RouterRuntime(config, state_dir), args.host, args.port, args.admin_port)
            await server.start()
            shown = f"[{args.host}]" if ":" in args.host else args.host
            uri = f"http://{shown}:{server.port}/api/v1/service/{ENDPOINT}/score"
            key = server.runtime.keys.get(ENDPOINT).primary
            example = await _model_example(session, urls[0])
            headers = {"Authorization": f"Bearer {key}"}
            async with session.post(uri, json=example, headers=headers) as r:
                answer = await r.text()
                if r.status != 200:
                    raise RuntimeError(f"the example did not score ({r.status}): {answer}")
            print(f"Scoring URI: {uri}")
            print(f"Key: {key}")
            print(curl_line(uri, key, example))
            print(f"Admin API: http://{shown}:{server.admin_port}/admin/endpoints (token in {state_dir}/admin-token)")
            print(f"Replicas: {', '.join(urls)}. Ctrl-C stops everything.", flush=True)
        await stop.wait()
        # The router first, while its replicas still answer what it has in flight.
        await server.drain_then_stop(args.drain_delay_s, stop_now)
        drained, server = server, None
        await drained.wait()
        return 0
    finally:
        if server is not None:  # start-up failed or was cut short: nothing to drain
            await server.stop()
        await loop.run_in_executor(None, replicas.stop)


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.replicas < 1:
        print(f"infergate up: --replicas: must be >= 1, got {args.replicas}", file=sys.stderr)
        return 2
    if not 0 <= args.drain_delay_s <= 600:
        print(f"infergate up: --drain-delay-s: must be between 0 and 600, got {args.drain_delay_s}", file=sys.stderr)
        return 2
    if not args.model_repository.is_dir():
        print(f"infergate up: --model-repository: not a directory: {args.model_repository}", file=sys.stderr)
        return 2
    configure_logging(args.log_level)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        return asyncio.run(run(args))
    except ConfigError as exc:
        print(f"infergate up: invalid {args.state_dir / CONFIG_FILE}: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError) as exc:
        print(f"infergate up: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
