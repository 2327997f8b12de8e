"""Helpers for the reliability suites: real ``infergate serve`` and ``infergate route``
processes on 127.0.0.1 (port 0, real port read from their JSON logs), a bounded load generator,
and the soak switch.

Short form (``make test``): each scenario runs for a couple of seconds. ``make soak`` sets
``INFERGATE_SOAK=1`` and selects the ``soak`` marker: the same scenarios, longer and heavier.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SOAK = os.environ.get("INFERGATE_SOAK", "") not in ("", "0")
ADMIN_TOKEN = "reliability-admin-token-0123456789abcdef"


def scaled(short: float, soak: float) -> float:
    """``short`` in ``make test``, ``soak`` under ``make soak``."""
    return soak if SOAK else short


def write_models(root: Path, names: list[str]) -> Path:
    from scoring import model_zoo

    model_zoo.write(root, names)
    return root


class Process:
    """A child process whose merged stdout/stderr is pumped into ``log`` by a thread; the
    first JSON line accepted by ``port_of`` gives its port(s)."""

    def __init__(self, argv: list[str], port_of: Callable[[dict[str, Any]], Any], env: dict[str, str] | None = None,
                 deadline_s: float = 60.0) -> None:
        full_env = {**os.environ, **(env or {})}
        full_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.argv = argv
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server.cli", *argv],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=full_env,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self._log: list[str] = []
        self._lock = threading.Lock()
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()
        self.info = self._wait_for(port_of, deadline_s)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self._log.append(line)
            self.lines.put(line)
        self.lines.put("")

    def log(self) -> str:
        with self._lock:
            return "".join(self._log)

    def _wait_for(self, accept: Callable[[dict[str, Any]], Any], deadline_s: float) -> Any:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line == "":
                break
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            found = accept(doc) if isinstance(doc, dict) else None
            if found is not None:
                return found
        self.kill()
        raise AssertionError(f"{self.argv[0]} did not start:\n" + self.log())

    def signal(self, sig: signal.Signals) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._close()

    def _close(self) -> None:
        self._pump_thread.join(timeout=30)
        if self.proc.stdout is not None and not self._pump_thread.is_alive():
            self.proc.stdout.close()

    def stop(self, timeout_s: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a SIGSTOPped child cannot see SIGTERM
            self.proc.terminate()
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._close()
        return code

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")


class Replica(Process):
    """``infergate serve`` on a model repository."""

    def __init__(self, repo: Path, *extra: str, port: int = 0, drain_delay_s: float = 0.5,
                 env: dict[str, str] | None = None) -> None:
        self.repo = repo
        self.extra = extra
        argv = ["serve", "--model-repository", str(repo), "--host", "127.0.0.1", "--port", str(port),
                "--drain-delay-s", str(drain_delay_s), "--graceful-timeout-s", "10", *extra]
        super().__init__(argv, lambda d: int(d["port"]) if d.get("event") == "listening" else None, env=env)
        self.port = int(self.info)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, deadline_s: float = 60.0) -> None:
        wait_http(self.url + "/v2/health/ready", deadline_s, self)


class Router(Process):
    """``infergate route`` with a config file and a state dir, admin token from the env."""

    def __init__(self, config_path: Path, state_dir: Path, port: int = 0, admin_port: int = 0,
                 head_timeout_s: float = 10.0) -> None:
        self.config_path = config_path
        self.state_dir = state_dir
        argv = ["route", "--config", str(config_path), "--host", "127.0.0.1", "--port", str(port),
                "--admin-port", str(admin_port), "--state-dir", str(state_dir),
                "--request-head-timeout-s", str(head_timeout_s)]

        def ports(doc: dict[str, Any]) -> tuple[int, int] | None:
            if doc.get("message") == "router ready":
                return int(doc["port"]), int(doc["admin_port"])
            return None

        super().__init__(argv, ports, env={"INFERGATE_ADMIN_TOKEN": ADMIN_TOKEN})
        self.port, self.admin_port = self.info
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"

    def keys(self, endpoint: str) -> tuple[str, str]:
        doc = json.loads((self.state_dir / "keys.json").read_text())
        entry = doc.get("endpoints", doc).get(endpoint) if isinstance(doc, dict) else None
        assert isinstance(entry, dict), doc.keys()
        return str(entry["primary"]), str(entry["secondary"])

    def scoring_url(self, endpoint: str, path: str = "score") -> str:
        return f"{self.url}/api/v1/service/{endpoint}/{path}"


def router_config(path: Path, endpoint: str, upstreams: list[str], **endpoint_fields: Any) -> Path:
    doc = {
        "endpoints": [
            {
                "name": endpoint,
                **endpoint_fields,
                "versions": [{"name": "v1", "upstreams": upstreams, "is_default": True, "traffic_percentile": 100}],
            }
        ]
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def wait_http(url: str, deadline_s: float, proc: Process | None = None, status: int = 200) -> None:
    import httpx

    deadline = time.monotonic() + deadline_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = httpx.get(url, timeout=2.0).status_code
            if last == status:
                return
        except httpx.TransportError as exc:
            last = exc
        if proc is not None and proc.proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"{url} never answered {status} (last: {last!r})\n" + (proc.log() if proc else ""))


IDENTITY_BODY = json.dumps({"data": [[1.0, 2.0, 3.0, 4.0]]}).encode()


@dataclass
class LoadResult:
    """What a load run saw: status counts (0 = transport error), latencies of 200s."""

    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    ok_latencies_s: list[float] = field(default_factory=list)
    retry_after: Counter[str] = field(default_factory=Counter)
    fail_times: list[float] = field(default_factory=list)  # time.monotonic() of each non-200 answer
    # Failed without a clear signal: not a 4xx, not 503 + Retry-After, not 504 (scoring_timeout_ms
    # passed), not a refused connection (nothing sent): a cut connection, a 502, a 500.
    lost: int = 0

    @property
    def sent(self) -> int:
        return sum(self.statuses.values())

    @property
    def failed(self) -> int:
        return self.sent - self.statuses[200]

    def p99_s(self) -> float:
        values = sorted(self.ok_latencies_s)
        return values[min(len(values) - 1, int(len(values) * 0.99))] if values else 0.0

    def summary(self) -> str:
        return f"sent={self.sent} statuses={dict(self.statuses)} errors={dict(self.errors)}"


def _signalled(status: int, retry_after: bool) -> bool:
    return 400 <= status < 500 or status == 504 or (status == 503 and retry_after)


class Load:
    """``concurrency`` clients posting ``body`` to ``url`` in a loop until ``stop()``; every
    answer counted. Bounded by the caller's stop (and each request by ``timeout_s``)."""

    def __init__(self, url: str, headers: dict[str, str] | None = None, body: bytes = IDENTITY_BODY,
                 concurrency: int = 8, timeout_s: float = 10.0) -> None:
        self.url = url
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.body = body
        self.concurrency = concurrency
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.result = LoadResult()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Load:
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        self._tasks = [asyncio.create_task(self._client()) for _ in range(self.concurrency)]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        assert self._session is not None
        await self._session.close()

    async def _client(self) -> None:
        while not self._stop.is_set():
            await self._send()

    async def _send(self) -> None:
        """Send one request and count its answer (closed- and open-loop clients alike)."""
        assert self._session is not None
        started = time.monotonic()
        try:
            async with self._session.post(self.url, data=self.body, headers=self.headers, timeout=self.timeout) as r:
                await r.read()
                status = r.status
                if status == 200:
                    self.result.ok_latencies_s.append(time.monotonic() - started)
                elif "Retry-After" in r.headers:
                    self.result.retry_after[r.headers["Retry-After"]] += 1
        except (aiohttp.ClientError, TimeoutError) as exc:
            status = 0
            self.result.errors[type(exc).__name__] += 1
            retryable = isinstance(exc, aiohttp.ClientConnectorError)
        else:
            retryable = _signalled(status, "Retry-After" in r.headers)
        self.result.statuses[status] += 1
        if status != 200:
            self.result.fail_times.append(time.monotonic())
            self.result.lost += not retryable

    async def until_sent(self, n: int, deadline_s: float = 60.0) -> None:
        """Wait until ``n`` more answers have come back."""
        target = self.result.sent + n
        await until(lambda: self.result.sent >= target, deadline_s)


async def until(condition: Callable[[], bool], deadline_s: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.01)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


class OpenLoad(Load):
    """Open-loop load: requests start at ``rate_per_s`` whatever the answers (as independent
    clients would send them), at most ``max_inflight`` at once (beyond it a start is skipped
    and counted in ``skipped``, so the test sees when the client itself became the limit)."""

    def __init__(self, url: str, rate_per_s: float, headers: dict[str, str] | None = None, body: bytes = IDENTITY_BODY,
                 max_inflight: int = 512, timeout_s: float = 30.0) -> None:
        super().__init__(url, headers, body, concurrency=0, timeout_s=timeout_s)
        self.rate_per_s = rate_per_s
        self.max_inflight = max_inflight
        self.inflight = 0
        self.skipped = 0
        self._requests: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> OpenLoad:
        await super().__aenter__()
        self._tasks = [asyncio.create_task(self._schedule())]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        await asyncio.gather(*self._requests)
        assert self._session is not None
        await self._session.close()

    async def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        interval = 1.0 / self.rate_per_s
        next_at = loop.time()
        while not self._stop.is_set():
            now = loop.time()
            while next_at <= now:
                next_at += interval
                if self.inflight >= self.max_inflight:
                    self.skipped += 1
                    continue
                task = asyncio.create_task(self._one())
                self._requests.add(task)
                task.add_done_callback(self._requests.discard)
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    async def _one(self) -> None:
        self.inflight += 1
        try:
            await self._send()
        finally:
            self.inflight -= 1
