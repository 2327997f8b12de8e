"""Start servers under test in their own process groups, wait for readiness, always tear down.

Every server the benchmark starts listens on 127.0.0.1 only. Each runs in a new session
(``start_new_session``) so that stopping it signals the whole group: gunicorn, MLServer and
Triton fork workers, and none may outlive the benchmark.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


class ServerStartError(RuntimeError):
    """A server exited or did not become ready before its deadline."""


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1.

    Peers cannot report the port they bound (port 0), so the benchmark picks one; the
    window between closing this socket and the server binding it is small, and a lost
    race shows up as a start error, never as a wrong measurement.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Launch:
    """How to start one server process and how to tell it is ready."""

    name: str
    argv: tuple[str, ...]
    ready_url: str
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    ready_timeout_s: float = 120.0


def http_get(url: str, timeout_s: float = 2.0, headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
    """GET ``url``; (status, body); (0, b"") when the connection fails."""
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def http_post(
    url: str, body: bytes, headers: Sequence[tuple[str, str]] = (), timeout_s: float = 30.0
) -> tuple[int, dict[str, str], bytes]:
    """POST ``body``; (status, lower-cased headers, body). Raises OSError if unreachable."""
    request = urllib.request.Request(url, data=body, method="POST", headers=dict(headers))
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            return int(resp.status), {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process ``pid`` has used so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime, in ticks


def log_tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def stop_group(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """SIGTERM the process group, wait ``grace_s``, then SIGKILL what is left."""
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = None
    if pgid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    if pgid is not None:
        # Workers may linger after the parent exited: kill the whole group regardless.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


@contextlib.contextmanager
def running(launch: Launch, log_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``launch``, wait until its ready URL answers 200, stop it on exit."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{launch.name}.log"
    env = dict(os.environ)
    env.update(launch.env)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            list(launch.argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=str(launch.cwd) if launch.cwd else None,
            env=env,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + launch.ready_timeout_s
        delay = 0.05
        while True:
            if proc.poll() is not None:
                raise ServerStartError(
                    f"{launch.name} exited with {proc.returncode} before it was ready; log {log_path}:\n{log_tail(log_path)}"
                )
            status, _ = http_get(launch.ready_url, timeout_s=2.0)
            if status == 200:
                break
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"{launch.name} not ready at {launch.ready_url} after {launch.ready_timeout_s:.0f}s; "
                    f"log {log_path}:\n{log_tail(log_path)}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
        yield proc
    finally:
        stop_group(proc)


@contextlib.contextmanager
def running_all(launches: Sequence[Launch], log_dir: Path) -> Iterator[None]:
    """Start several servers in order (e.g. a scoring server, then the router in front)."""
    with contextlib.ExitStack() as stack:
        for launch in launches:
            stack.enter_context(running(launch, log_dir))
        yield
