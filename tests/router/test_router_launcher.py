"""``infergate up``: config for the demo endpoint, the example built from metadata, and (when the
scoring server is installed alongside) a real run: replicas, router, curl line, clean stop."""

from __future__ import annotations

import importlib.util
import os
import queue
import random
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from router.config import load_config, save_config
from router.launcher import curl_line, example_input, launcher_config, replica_urls, main

ROOT = Path(__file__).resolve().parents[2]


def test_fresh_config_has_one_demo_endpoint_on_the_replicas(tmp_path: Path) -> None:
    urls = replica_urls("127.0.0.1", 8001, 3)
    assert urls == ["http://127.0.0.1:8001", "http://127.0.0.1:8002", "http://127.0.0.1:8003"]
    config = launcher_config(None, urls)
    (ep,) = config.endpoints
    assert ep.name == "demo" and ep.auth_enabled
    assert ep.default_version.upstreams == tuple(urls)
    save_config(config, tmp_path / "router.yaml")
    assert load_config(tmp_path / "router.yaml") == config


def test_existing_config_keeps_admin_changes_and_follows_the_replicas() -> None:
    first = launcher_config(None, replica_urls("127.0.0.1", 8001, 1))
    import dataclasses

    ep = dataclasses.replace(first.endpoints[0], scoring_timeout_ms=1234)
    edited = dataclasses.replace(first, endpoints=(ep,))
    again = launcher_config(edited, replica_urls("127.0.0.1", 9001, 2))
    assert again.endpoints[0].scoring_timeout_ms == 1234
    assert again.endpoints[0].default_version.upstreams == ("http://127.0.0.1:9001", "http://127.0.0.1:9002")


def test_example_from_metadata() -> None:
    iris = {"name": "demo", "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]}
    assert example_input(iris) == {"data": [[1.0, 1.0, 1.0, 1.0]]}
    two = {
        "name": "m",
        "inputs": [
            {"name": "ids", "datatype": "INT64", "shape": [-1, 2]},
            {"name": "text", "datatype": "BYTES", "shape": [-1]},
        ],
    }
    assert example_input(two) == {"ids": [[1, 1]], "text": ["example"]}
    with pytest.raises(ValueError, match="no inputs"):
        example_input({"name": "x", "inputs": []})
    line = curl_line("http://127.0.0.1:8000/api/v1/service/demo/score", "k'ey", {"data": [[1.0]]})
    argv = shlex.split(line)
    assert argv[:4] == ["curl", "-sS", "-X", "POST"]
    assert "Authorization: Bearer k'ey" in argv and '{"data": [[1.0]]}' in argv


def test_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--replicas", "0", "--model-repository", str(tmp_path)]) == 2
    assert main(["--model-repository", str(tmp_path / "missing")]) == 2
    assert "--model-repository" in capsys.readouterr().err
    assert main(["--model-repository", str(tmp_path), "--drain-delay-s", "-1"]) == 2
    assert "--drain-delay-s: must be between 0 and 600, got -1" in capsys.readouterr().err


def _free_port_block(n: int) -> int:
    """A base port with n free ports after it (best effort: bound and released), below the
    ephemeral range, so no client socket on the machine is given one of them meanwhile."""
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    rng = random.Random()
    for _ in range(50):
        base = rng.randrange(10000, max(10001, ephemeral_low - n))
        socks = []
        try:
            for i in range(n):
                t = socket.socket()
                socks.append(t)
                t.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
        finally:
            for t in socks:
                t.close()
    raise AssertionError("no free port block")


needs_server = pytest.mark.skipif(
    importlib.util.find_spec("server.__main__") is None or importlib.util.find_spec("scoring.model_zoo") is None,
    reason="needs the scoring server (server/__main__.py) and scoring.model_zoo",
)


def _start_up(tmp_path: Path, base: int, replicas: int, extra: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    """``infergate up`` on the demo model, router on ``base``, admin ``base + 1``, replicas
    from ``base + 2``; output (merged) on ``proc.stdout``."""
    models = tmp_path / "models"
    subprocess.run([sys.executable, "-m", "scoring.model_zoo", str(models), "demo"], check=True, cwd=ROOT)
    cmd = [
        sys.executable, "-m", "server.cli", "up", "--model-repository", str(models), "--replicas", str(replicas),
        "--port", str(base), "--admin-port", str(base + 1), "--scoring-port", str(base + 2),
        "--state-dir", str(tmp_path / "state"), *extra,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


@pytest.mark.e2e
@needs_server
def test_up_serves_the_demo_model_and_stops_cleanly(tmp_path: Path) -> None:
    base = _free_port_block(5)
    proc = _start_up(tmp_path, base, replicas=2)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        assert proc.stdout is not None
        while not any(line.startswith("curl ") for line in lines):
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "".join(lines)
            lines.append(line)
            assert time.monotonic() < deadline, "".join(lines)
        text = "".join(lines)
        assert f"Scoring URI: http://127.0.0.1:{base}/api/v1/service/demo/score" in text
        key = re.search(r"^Key: (\S+)$", text, re.M)
        assert key is not None
        curl = next(line for line in lines if line.startswith("curl "))
        argv = shlex.split(curl)
        import httpx

        body = argv[argv.index("-d") + 1]
        r = httpx.post(argv[4], content=body, headers={"Authorization": f"Bearer {key.group(1)}", "Content-Type": "application/json"})
        assert r.status_code == 200, r.text
        assert r.headers["azureml-model-deployment"] == "v1"
        admin_token = (tmp_path / "state" / "admin-token").read_text().strip()
        r = httpx.get(f"http://127.0.0.1:{base + 1}/admin/endpoints/demo", headers={"Authorization": f"Bearer {admin_token}"})
        assert [rep["url"] for rep in r.json()["live"][0]["replicas"]] == [
            f"http://127.0.0.1:{base + 2}",
            f"http://127.0.0.1:{base + 3}",
        ]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        for port in (base, base + 2, base + 3):
            with socket.socket() as s:
                s.bind(("127.0.0.1", port))  # every listener is gone
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


class _Lines:
    """A child's merged output, line by line, read by a thread (so waits have deadlines)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(proc,), daemon=True)
        self._thread.start()

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self._queue.put(line)
        self._queue.put("")

    def wait_for(self, wanted: Callable[[str], bool], deadline_s: float) -> str:
        deadline = time.monotonic() + deadline_s
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError("not seen before the deadline:\n" + "".join(self.seen)) from None
            assert line, "the process ended:\n" + "".join(self.seen)
            self.seen.append(line)
            if wanted(line):
                return line


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str]]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a whole answer: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk, "connection closed in the middle of a body"
        body += chunk
    return int(status_line.split()[1]), headers


@pytest.mark.e2e
@needs_server
def test_up_drains_the_router_on_sigterm_then_stops_the_replicas_and_exits_0(tmp_path: Path) -> None:
    """SIGTERM on ``infergate up``: a request in flight is answered 200, and so is one sent on
    an idle keep-alive connection during the drain (each with ``Connection: close``, then a
    clean close); a second SIGTERM ends the drain delay; exit 0, every port free."""
    base = _free_port_block(3)
    # The drain delay is ended by the second SIGTERM, once the checks are done.
    proc = _start_up(tmp_path, base, replicas=1, extra=("--log-level", "info", "--drain-delay-s", "600"))
    connections: list[socket.socket] = []
    try:
        lines = _Lines(proc)
        argv = shlex.split(lines.wait_for(lambda line: line.startswith("curl "), 120))
        key = argv[argv.index("-H") + 1].removeprefix("Authorization: ")
        body = argv[argv.index("-d") + 1].encode()
        head = (
            f"POST /api/v1/service/demo/score HTTP/1.1\r\nHost: router\r\nAuthorization: {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        busy, idle = (socket.create_connection(("127.0.0.1", base), timeout=30) for _ in range(2))
        connections += [busy, idle]
        for sock in (busy, idle):
            sock.sendall(head + body)
            status, headers = _read_response(sock)
            assert status == 200 and "connection" not in headers  # kept alive
        busy.sendall(head + body[:1])  # in flight: its body is still coming

        proc.send_signal(signal.SIGTERM)
        lines.wait_for(lambda line: "draining: answering with Connection: close" in line, 60)
        busy.sendall(body[1:])
        idle.sendall(head + body)  # an idle keep-alive connection, reused during the drain
        for sock in (busy, idle):
            status, headers = _read_response(sock)
            assert status == 200 and headers["connection"] == "close"
            assert sock.recv(1) == b""  # a clean close (EOF), not a reset

        proc.send_signal(signal.SIGTERM)  # the second signal: no more drain delay
        assert proc.wait(timeout=60) == 0, "".join(lines.seen)
        for port in range(base, base + 3):
            with socket.socket() as s:
                # SO_REUSEADDR: the router's closed connections leave TIME_WAIT on its port;
                # a listener still there would refuse the bind all the same.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", port))  # router, admin and replica listeners are gone
                s.listen()
    finally:
        for sock in connections:
            sock.close()
        if proc.poll() is None:  # stop the replicas too (they run in their own session)
            proc.send_signal(signal.SIGTERM)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
