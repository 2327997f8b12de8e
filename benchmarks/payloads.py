"""Request bodies for each wire protocol, and checks that a response carries the right answer.

Everything here is pure (bytes and numpy in, bytes and numpy out) so it is unit-tested
without sockets. The model's input and output names come from the ONNX file itself, never
from any server's internals, so the same request shapes work for every peer:

- ``v2-json``: Open Inference Protocol JSON (infergate, MLServer, Triton, KServe v2);
- ``v2-binary``: the binary tensor data extension (infergate, Triton);
- ``score``: AzureML's ``/score`` with ``{"data": [[...]]}`` (infergate, the AzureML server).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

Protocol = Literal["v2-json", "v2-binary", "score"]

V2_DATATYPES: dict[str, str] = {
    "float32": "FP32", "float64": "FP64", "float16": "FP16",
    "int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64",
    "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64", "bool": "BOOL",
}
V2_TO_NUMPY: dict[str, str] = {v: k for k, v in V2_DATATYPES.items()}


class ResponseMismatch(AssertionError):
    """A server answered 2xx but with the wrong outputs (or an unreadable body)."""


@dataclass(frozen=True)
class TensorInfo:
    """One graph input or output: name, numpy dtype name, shape (-1 for dynamic dims)."""

    name: str
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelInfo:
    """What a client needs to know about a model, read from its ONNX file."""

    name: str
    path: Path
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]


@dataclass(frozen=True)
class Request:
    """A fully built HTTP request body plus the headers that go with it."""

    body: bytes
    headers: tuple[tuple[str, str], ...]


def read_model_info(name: str, path: Path) -> ModelInfo:
    """Input/output names, dtypes and shapes from an ONNX file (no session needed)."""
    import onnx
    from onnx import helper

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {init.name for init in graph.initializer}

    def info(value: "onnx.ValueInfoProto") -> TensorInfo:
        ttype = value.type.tensor_type
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(ttype.elem_type)).name
        shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in ttype.shape.dim)
        return TensorInfo(value.name, dtype, shape)

    inputs = tuple(info(v) for v in graph.input if v.name not in initializers)
    return ModelInfo(name, path, inputs, tuple(info(v) for v in graph.output))


def make_inputs(model: ModelInfo, rows: int, seed: int = 0) -> dict[str, npt.NDArray[np.generic]]:
    """Deterministic inputs with ``rows`` along the first (batch) dimension.

    Float values sit on a 1/1000 grid so their JSON text is short and parses back to
    exactly the same float32 values on every server.
    """
    rng = np.random.default_rng(seed)
    arrays: dict[str, npt.NDArray[np.generic]] = {}
    for spec in model.inputs:
        shape = tuple(rows if i == 0 else (d if d > 0 else 1) for i, d in enumerate(spec.shape))
        if not shape:
            shape = ()
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            arrays[spec.name] = (rng.integers(0, 1000, size=shape) / 1000).astype(dtype)
        elif dtype.kind == "b":
            arrays[spec.name] = rng.integers(0, 2, size=shape).astype(dtype)
        else:
            arrays[spec.name] = rng.integers(0, 100, size=shape).astype(dtype)
    return arrays


def _v2_tensor(name: str, array: npt.NDArray[np.generic]) -> dict[str, object]:
    return {
        "name": name,
        "shape": list(array.shape),
        "datatype": V2_DATATYPES[array.dtype.name],
        "data": _shortest(array).reshape(-1).tolist(),
    }


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), default=float).encode()


def _shortest(array: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
    """float32 -> float64 holding the float32's shortest decimal, so JSON text stays short."""
    if array.dtype == np.float32:
        values = array.reshape(-1).tolist()
        as32 = np.asarray(values, dtype=np.float32)
        return np.array([float(np.format_float_positional(v, unique=True)) for v in as32]).reshape(array.shape)
    return array


def build_request(protocol: Protocol, model: ModelInfo, inputs: dict[str, npt.NDArray[np.generic]]) -> Request:
    """The body and headers of one request for ``protocol``."""
    if protocol == "v2-json":
        body = {"inputs": [_v2_tensor(n, a) for n, a in inputs.items()]}
        return Request(_dumps(body), (("Content-Type", "application/json"),))
    if protocol == "score":
        if len(inputs) == 1:
            (array,) = inputs.values()
            payload: dict[str, object] = {"data": _shortest(array).tolist()}
        else:
            payload = {n: _shortest(a).tolist() for n, a in inputs.items()}
        return Request(_dumps(payload), (("Content-Type", "application/json"),))
    if protocol == "v2-binary":
        header = {
            "inputs": [
                {
                    "name": n,
                    "shape": list(a.shape),
                    "datatype": V2_DATATYPES[a.dtype.name],
                    "parameters": {"binary_data_size": a.nbytes},
                }
                for n, a in inputs.items()
            ],
            "outputs": [{"name": o.name, "parameters": {"binary_data": True}} for o in model.outputs],
        }
        head = _dumps(header)
        raw = b"".join(np.ascontiguousarray(a).tobytes() for a in inputs.values())
        return Request(
            head + raw,
            (("Content-Type", "application/octet-stream"), ("Inference-Header-Content-Length", str(len(head)))),
        )
    raise ValueError(f"protocol: must be one of v2-json, v2-binary, score, got {protocol!r}")


def _v2_outputs(header: dict[str, object], tail: bytes) -> dict[str, npt.NDArray[np.generic]]:
    outputs = header.get("outputs")
    if not isinstance(outputs, list):
        raise ResponseMismatch(f"v2 response has no 'outputs' list: {str(header)[:300]}")
    found: dict[str, npt.NDArray[np.generic]] = {}
    offset = 0
    for out in outputs:
        dtype = np.dtype(V2_TO_NUMPY[out["datatype"]])
        shape = tuple(out["shape"])
        params = out.get("parameters") or {}
        if "binary_data_size" in params:
            size = int(params["binary_data_size"])
            found[out["name"]] = np.frombuffer(tail[offset:offset + size], dtype=dtype).reshape(shape)
            offset += size
        else:
            found[out["name"]] = np.asarray(out["data"], dtype=dtype).reshape(shape)
    return found


def parse_response(
    protocol: Protocol, model: ModelInfo, body: bytes, header_length: int | None = None
) -> dict[str, npt.NDArray[np.generic]]:
    """The outputs a response carries, by output name."""
    try:
        if protocol == "v2-binary" and header_length is not None:
            return _v2_outputs(json.loads(body[:header_length]), body[header_length:])
        decoded = json.loads(body)
        if protocol in ("v2-json", "v2-binary"):
            return _v2_outputs(decoded, b"")
        # /score: a list for one output, an object keyed by output name for several.
        if isinstance(decoded, dict) and len(model.outputs) > 1:
            return {o.name: np.asarray(decoded[o.name]) for o in model.outputs}
        if isinstance(decoded, dict) and "result" in decoded:
            decoded = decoded["result"]
        return {model.outputs[0].name: np.asarray(decoded)}
    except (ValueError, KeyError, TypeError) as exc:
        raise ResponseMismatch(f"{protocol} response could not be read ({exc}): {body[:300]!r}") from exc


def check_outputs(
    got: dict[str, npt.NDArray[np.generic]],
    expected: dict[str, npt.NDArray[np.generic]],
    rtol: float = 1e-3,
    atol: float = 1e-4,
) -> None:
    """Raise ResponseMismatch unless every expected output is present and close."""
    for name, want in expected.items():
        if name not in got:
            raise ResponseMismatch(f"output {name!r} missing; got {sorted(got)}")
        have = np.asarray(got[name])
        if have.size != want.size:
            raise ResponseMismatch(f"output {name!r}: {have.size} values, expected {want.size} (shape {want.shape})")
        if not np.allclose(have.reshape(want.shape).astype(np.float64), want.astype(np.float64), rtol=rtol, atol=atol):
            worst = float(np.max(np.abs(have.reshape(want.shape).astype(np.float64) - want.astype(np.float64))))
            raise ResponseMismatch(f"output {name!r}: values differ from the in-process result (max abs diff {worst:g})")
