"""End to end: `infergate serve` as a real process on 127.0.0.1 (port 0, read back from its
log), driven by tritonclient.http, plus the drain sequence and multi-worker metrics."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from server_testkit import REPO_ROOT, ServerProcess, write_mixed_model, write_models
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_models(tmp_path_factory.mktemp("models"), ["tiny"])
    return write_mixed_model(root)


@pytest.fixture(scope="module")
def server(model_root: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(["--model-repository", str(model_root), "--drain-delay-s", "0"])
    try:
        proc.wait_ready()
        yield proc
    finally:
        assert proc.stop() == 0, proc.drain_log()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
    yield c
    c.close()


def test_tritonclient_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tiny") and client.is_model_ready("tiny", "1")
    assert not client.is_model_ready("nope")
    meta = client.get_model_metadata("mixed")
    assert {i["name"]: i["datatype"] for i in meta["inputs"]} == {"f16": "FP16", "i64": "INT64", "flag": "BOOL", "s": "BYTES"}
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_infer_all_datatypes(client: triton.InferenceServerClient, binary: bool) -> None:
    values = {
        "f16": np.array([[0.5, -2.0], [65504.0, 1e-3]], dtype=np.float16),
        "i64": np.array([[2**62, -(2**62)], [0, 7]], dtype=np.int64),
        "flag": np.array([[True, False], [False, True]]),
        "s": np.array(["héllo".encode(), b"world"], dtype=object),
    }
    inputs = []
    for name, arr in values.items():
        datatype = {"f16": "FP16", "i64": "INT64", "flag": "BOOL", "s": "BYTES"}[name]
        tensor = triton.InferInput(name, list(arr.shape), datatype)
        tensor.set_data_from_numpy(arr, binary_data=binary)
        inputs.append(tensor)
    outputs = [triton.InferRequestedOutput(n + "_out", binary_data=binary) for n in values]
    result = client.infer(
        "mixed", inputs, outputs=outputs, request_id="rq-9", request_compression_algorithm="gzip" if binary else None
    )
    assert result.get_response()["id"] == "rq-9"
    for name, arr in values.items():
        got = result.as_numpy(name + "_out")
        assert got is not None and got.shape == arr.shape
        if name == "s":  # tritonclient gives JSON BYTES back as str
            got = np.array([v.encode() if isinstance(v, str) else v for v in got.tolist()], dtype=object)
        assert got.tolist() == arr.tolist()


def test_tritonclient_errors_and_repository(client: triton.InferenceServerClient) -> None:
    bad = triton.InferInput("x", [1, 3], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 3), np.float32))
    with pytest.raises(InferenceServerException, match="shape"):
        client.infer("tiny", [bad])
    names = {(m["name"], m["state"]) for m in client.get_model_repository_index()}
    assert ("tiny", "READY") in names
    client.unload_model("tiny")
    assert not client.is_model_ready("tiny")
    client.load_model("tiny")
    assert client.is_model_ready("tiny")
    ok = triton.InferInput("x", [1, 4], "FP32")
    ok.set_data_from_numpy(np.ones((1, 4), np.float32), binary_data=True)
    assert client.infer("tiny", [ok]).as_numpy("y").tolist() == [[3.0, 3.0, 3.0, 3.0]]


def test_invalid_flags_exit_nonzero_naming_the_flag(tmp_path: Path) -> None:
    for args, words in (
        (["--model-repository", str(tmp_path / "nope")], "--model-repository"),
        (["--model-repository", str(tmp_path), "--port", "x"], "--port"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "server.cli", "serve", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
        )
        assert done.returncode != 0 and words in done.stderr


def _queued(url: str, model: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(f'infergate_queue_depth{{model="{model}"'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_sigterm_drains_without_losing_accepted_requests(tmp_path: Path) -> None:
    # "slow" batches for 3 s: its requests are queued when SIGTERM arrives.
    root = write_models(tmp_path, ["tiny"])
    (root / "slow" / "1").mkdir(parents=True)
    (root / "slow" / "1" / "model.onnx").write_bytes((root / "tiny" / "1" / "model.onnx").read_bytes())
    (root / "slow" / "config.yaml").write_text(
        "batching: {enabled: true, max_batch_size: 64, max_queue_delay_ms: 3000}\n"
    )
    proc = ServerProcess(["--model-repository", str(root), "--drain-delay-s", "1", "--graceful-timeout-s", "30"])
    try:
        proc.wait_ready()
        url = proc.url
        body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
        answers: list[str] = []

        def queued_request() -> None:
            try:
                r = httpx.post(url + "/v2/models/slow/infer", json=body, timeout=60.0)
                answers.append(f"{r.status_code} {r.text}")
            except httpx.HTTPError as exc:
                answers.append(repr(exc))

        threads = [threading.Thread(target=queued_request) for _ in range(3)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while _queued(url, "slow") < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _queued(url, "slow") == 3

        proc.proc.send_signal(signal.SIGTERM)
        # readiness flips at once, while inference is still served during the drain delay
        assert httpx.get(url + "/v2/health/ready", headers={"connection": "close"}).status_code == 503
        r = httpx.post(url + "/v2/models/tiny/infer", json=body, headers={"connection": "close"})
        assert r.status_code == 200
        assert proc.proc.wait(timeout=60) == 0
        for t in threads:
            t.join(timeout=60)
        # the queued requests were answered after the listener closed, before the exit
        assert answers == [answers[0]] * 3 and answers[0].startswith("200 "), answers
        log = proc.drain_log()
        assert log.index('"event":"draining"') < log.index('"event":"stopping"') < log.index('"event":"stopped"')
        with pytest.raises(httpx.ConnectError):
            httpx.get(url + "/v2/health/live")
    finally:
        proc.stop()


def test_workers_share_the_port_and_merge_metrics(model_root: Path) -> None:
    proc = ServerProcess(["--model-repository", str(model_root), "--workers", "2", "--drain-delay-s", "0"])
    try:
        proc.wait_ready()
        body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
        for _ in range(20):  # new connections spread over both workers
            r = httpx.post(proc.url + "/v2/models/tiny/infer", json=body, headers={"connection": "close"})
            assert r.status_code == 200
        text = httpx.get(proc.url + "/metrics").text
        line = next(
            ln for ln in text.splitlines()
            if ln.startswith("infergate_requests_total{") and 'code="200"' in ln and 'model="tiny"' in ln
        )
        assert float(line.rsplit(" ", 1)[1]) == 20.0, text
        assert "infergate_model_ready" in text
    finally:
        assert proc.stop() == 0, proc.drain_log()
