"""``infergate up``: config for the demo endpoint, the example built from metadata, and (when the
scoring server is installed alongside) a real run: replicas, router, curl line, clean stop."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
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


def _free_port_block(n: int) -> int:
    """A base port with n free ports after it (best effort: bound and released)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base + n > 65000:
            continue
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


@pytest.mark.e2e
@pytest.mark.skipif(
    importlib.util.find_spec("server.__main__") is None or importlib.util.find_spec("scoring.model_zoo") is None,
    reason="needs the scoring server (server/__main__.py) and scoring.model_zoo",
)
def test_up_serves_the_demo_model_and_stops_cleanly(tmp_path: Path) -> None:
    models = tmp_path / "models"
    subprocess.run([sys.executable, "-m", "scoring.model_zoo", str(models), "demo"], check=True, cwd=ROOT)
    base = _free_port_block(5)
    cmd = [
        sys.executable, "-m", "server.cli", "up", "--model-repository", str(models), "--replicas", "2",
        "--port", str(base), "--admin-port", str(base + 1), "--scoring-port", str(base + 2),
        "--state-dir", str(tmp_path / "state"),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
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
