"""Helpers shared by tests/server: a small fake repository (unit tests of the HTTP layer)
and tiny real ONNX models (end-to-end tests against the real ModelRepository)."""

from __future__ import annotations

import asyncio
import os
import queue
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scoring import (
    InferenceFailed,
    InferRequest,
    InferResult,
    InvalidInput,
    ModelId,
    ModelMetadata,
    ModelNotFound,
    ModelNotReady,
    ModelStatus,
    Overloaded,
    TensorSpec,
    VersionNotFound,
)
from server.config import ServerConfig

with warnings.catch_warnings():  # starlette prefers httpx2; httpx is what we have
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient  # noqa: F401  (re-exported to the tests)

REPO_ROOT = Path(__file__).resolve().parents[2]


def fake_metadata(name: str = "double", version: int = 1, datatype: str = "FP32") -> ModelMetadata:
    return ModelMetadata(
        id=ModelId(name, version),
        platform="onnxruntime_onnx",
        inputs=(TensorSpec("x", datatype, (-1, 3)),),
        outputs=(TensorSpec("y", datatype, (-1, 3)),),
        providers=("CPUExecutionProvider",),
        batched=False,
        max_batch_size=0,
    )


class FakeModel:
    """y = 2 * x; a few magic first values trigger scoring errors."""

    def __init__(self, metadata: ModelMetadata) -> None:
        self.metadata = metadata
        self.calls = 0
        self.enforces_deadline = False  # the server times its requests out itself

    def queue_depth(self) -> int:
        return 0

    def check_capacity(self) -> None:
        pass

    async def infer(self, request: InferRequest) -> InferResult:
        self.calls += 1
        if set(request.inputs) != {"x"}:
            raise InvalidInput(f"inputs: expected ['x'], got {sorted(request.inputs)}", field="inputs")
        x = request.inputs["x"]
        if x.ndim != 2 or x.shape[1] != 3:
            raise InvalidInput(f"x: expected shape [-1, 3], got {list(x.shape)}", field="x")
        if request.outputs is not None and set(request.outputs) - {"y"}:
            raise InvalidInput("outputs: unknown output", field="outputs")
        if x.size and x.dtype.kind == "f":
            first = float(x.reshape(-1)[0])
            if first == 666:
                raise Overloaded("queue full", retry_after_s=2.0)
            if first == 500:
                raise InferenceFailed("model exploded")
            if first == 999:
                raise RuntimeError("secret internal detail")
            if first == 777:
                await asyncio.sleep(10)
        return InferResult({"y": x * 2}, queue_s=0.001, compute_s=0.002, batch_rows=int(x.shape[0]))


@dataclass
class FakeRepository:
    models: dict[str, FakeModel] = field(default_factory=lambda: {"double": FakeModel(fake_metadata())})
    started: bool = False
    closed: bool = False
    is_ready: bool = True

    async def start(self) -> None:
        self.started = True

    async def close(self, timeout_s: float = 30.0) -> None:
        self.closed = True

    def index(self) -> list[ModelStatus]:
        return [ModelStatus(n, m.metadata.id.version, "READY") for n, m in self.models.items()]

    def model_names(self) -> list[str]:
        return list(self.models)

    def ready(self) -> bool:
        return self.is_ready

    def get(self, name: str, version: int | None = None) -> FakeModel:
        model = self.models.get(name)
        if model is None:
            raise ModelNotFound(name)
        if version is not None and version != model.metadata.id.version:
            raise VersionNotFound(name, version)
        if name == "loading":
            raise ModelNotReady(name, 1, "loading")
        return model

    async def load(self, name: str) -> None:
        if name not in self.models:
            raise ModelNotFound(name)

    async def unload(self, name: str) -> None:
        if name not in self.models:
            raise ModelNotFound(name)


def fake_config(**overrides: Any) -> ServerConfig:
    values: dict[str, Any] = {"model_repository": Path("/nonexistent"), "port": 0}
    values.update(overrides)
    return ServerConfig(**values)


def v2_body(data: Any, shape: list[int], datatype: str = "FP32", name: str = "x", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]}
    body.update(extra)
    return body


def assert_json_error(response: Any, status: int, key: str = "error") -> str:
    assert response.status_code == status, response.text
    doc = response.json()
    assert isinstance(doc, dict) and isinstance(doc.get(key), str), doc
    assert "Traceback" not in response.text
    return str(doc[key])


def write_models(root: Path, names: list[str]) -> Path:
    """Real tiny ONNX models from scoring.model_zoo under ``root``."""
    from scoring import model_zoo

    model_zoo.write(root, names)
    return root


def write_mixed_model(root: Path, name: str = "mixed") -> Path:
    """Identity over FP16 [N,2], INT64 [N,2], BOOL [N,2] and STRING [N] inputs."""
    import onnx
    from onnx import TensorProto, helper

    kinds = [("f16", TensorProto.FLOAT16, ["N", 2]), ("i64", TensorProto.INT64, ["N", 2]),
             ("flag", TensorProto.BOOL, ["N", 2]), ("s", TensorProto.STRING, ["N"])]  # fmt: skip
    graph = helper.make_graph(
        [helper.make_node("Identity", [n], [n + "_out"]) for n, _, _ in kinds],
        name,
        [helper.make_tensor_value_info(n, t, shape) for n, t, shape in kinds],
        [helper.make_tensor_value_info(n + "_out", t, shape) for n, t, shape in kinds],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = root / name / "1" / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return root


class ServerProcess:
    """``infergate serve`` in a subprocess on 127.0.0.1 port 0; the port read from its log."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, deadline_s: float = 60.0) -> None:
        full_env = {**os.environ, **(env or {})}
        full_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "serve", "--host", "127.0.0.1", "--port", "0", *args],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=full_env,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()
        self.port = self._wait_port(deadline_s)
        self.url = f"http://127.0.0.1:{self.port}"

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put("")

    def _wait_port(self, deadline_s: float) -> int:
        import json

        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line == "":
                break
            self.log.append(line)
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if doc.get("event") == "listening":
                return int(doc["port"])
        self.stop()
        raise AssertionError("server did not report its port:\n" + "".join(self.log))

    def wait_ready(self, deadline_s: float = 60.0) -> None:
        import httpx

        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/v2/health/ready", timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError("server never became ready:\n" + self.drain_log())

    def drain_log(self) -> str:
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                break
            if line:
                self.log.append(line)
        return "".join(self.log)

    def stop(self, timeout_s: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._pump_thread.join(timeout=timeout_s)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code
