"""Helpers shared by tests/server: a small fake repository (unit tests of the HTTP layer)
and tiny real ONNX models (end-to-end tests against the real ModelRepository)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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

    def queue_depth(self) -> int:
        return 0

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


def close_enough(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.allclose(a, b, rtol=1e-3, atol=1e-3))


def iter_lines(path: Path) -> Iterator[str]:
    yield from path.read_text().splitlines()
