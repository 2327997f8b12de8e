"""Check a request against a model's tensors before it is queued or computed."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from scoring.errors import InvalidInput
from scoring.types import NUMPY_TO_DATATYPE, InferRequest, TensorSpec


def validate_request(
    request: InferRequest,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    batched: bool,
) -> int:
    """Raise InvalidInput (``field`` = the tensor name, or ``outputs``) when the request
    does not fit; return its row count (dim 0 shared by every input) when ``batched``,
    else 0."""
    given = request.inputs
    specs = {s.name: s for s in inputs}
    for name in given:
        if name not in specs:
            raise InvalidInput(
                f"unknown input '{name}' (the model takes {', '.join(specs)})", field=name
            )
    rows = -1
    for spec in inputs:
        array = given.get(spec.name)
        if array is None:
            raise InvalidInput(f"missing input '{spec.name}'", field=spec.name)
        if not isinstance(array, np.ndarray):
            raise InvalidInput(f"input '{spec.name}': not an array", field=spec.name)
        if array.dtype != spec.dtype:
            got = NUMPY_TO_DATATYPE.get(array.dtype, str(array.dtype))
            raise InvalidInput(
                f"input '{spec.name}': datatype {got} does not match the model's {spec.datatype}",
                field=spec.name,
            )
        shape = array.shape
        if len(shape) != len(spec.shape):
            raise InvalidInput(
                f"input '{spec.name}': shape {list(shape)} has {len(shape)} dimensions, "
                f"the model wants {len(spec.shape)} ({_fmt(spec.shape)})",
                field=spec.name,
            )
        for got_dim, want in zip(shape, spec.shape, strict=True):
            if want >= 0 and got_dim != want:
                raise InvalidInput(
                    f"input '{spec.name}': shape {list(shape)} does not match the model's "
                    f"{_fmt(spec.shape)}",
                    field=spec.name,
                )
        if batched:
            if rows < 0:
                rows = shape[0]
            elif shape[0] != rows:
                raise InvalidInput(
                    f"input '{spec.name}': {shape[0]} rows, other inputs have {rows}",
                    field=spec.name,
                )
    if request.outputs is not None:
        known = {s.name for s in outputs}
        for name in request.outputs:
            if name not in known:
                raise InvalidInput(
                    f"unknown output '{name}' (the model has {', '.join(sorted(known))})",
                    field="outputs",
                )
    return max(rows, 0)


def _fmt(shape: Sequence[int]) -> str:
    return "[" + ", ".join("-1" if d < 0 else str(d) for d in shape) + "]"
