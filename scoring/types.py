"""Public value types of the scoring runtime (numpy in, numpy out; no HTTP)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

# Open Inference Protocol (v2) datatype names <-> numpy dtypes. BYTES tensors are numpy
# object arrays holding ``bytes`` (ONNX ``tensor(string)``).
DATATYPE_TO_NUMPY: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}
NUMPY_TO_DATATYPE: dict[np.dtype[Any], str] = {v: k for k, v in DATATYPE_TO_NUMPY.items()}

# ONNX Runtime's type strings (``NodeArg.type``) -> v2 datatype.
ONNX_TYPE_TO_DATATYPE: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}

ModelState = Literal["LOADING", "READY", "UNAVAILABLE", "UNLOADING"]


@dataclass(frozen=True, order=True)
class ModelId:
    name: str
    version: int

    def __str__(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output. ``shape`` uses -1 for a dynamic dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    @property
    def dtype(self) -> np.dtype[Any]:
        return DATATYPE_TO_NUMPY[self.datatype]


@dataclass(frozen=True)
class ModelMetadata:
    """What a loaded model version looks like from the outside."""

    id: ModelId
    platform: str  # "onnxruntime_onnx" or "azureml_entry_script"
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    providers: tuple[str, ...]  # execution providers the session really uses
    batched: bool  # dim 0 of every input is a dynamic batch dimension and batching is on
    max_batch_size: int  # 0 when not batched
    entry_script: bool = False
    swagger: dict[str, Any] | None = None  # OpenAPI fragments from an entry script's schema


@dataclass(frozen=True)
class ModelStatus:
    """A row of the repository index."""

    name: str
    version: int | None
    state: ModelState
    reason: str = ""


@dataclass
class InferRequest:
    """Named input arrays for one request; ``deadline`` is a ``time.monotonic()`` instant."""

    inputs: dict[str, np.ndarray]
    outputs: tuple[str, ...] | None = None  # None: every output
    deadline: float | None = None
    request_id: str | None = None


@dataclass
class InferResult:
    """Named output arrays, plus how the time was spent (for metrics and tracing)."""

    outputs: dict[str, np.ndarray]
    queue_s: float = 0.0
    compute_s: float = 0.0
    batch_rows: int = 0  # rows in the executed batch this request rode in
    extra: dict[str, Any] = field(default_factory=dict)
