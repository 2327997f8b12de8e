"""Check a request against a model's tensors before it is queued or computed."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from scoring.batching import BatchKey, batch_key
from scoring.errors import InvalidInput
from scoring.types import NUMPY_TO_DATATYPE, InferRequest, TensorSpec


class RequestValidator:
    """Checks requests against one model's tensors; precomputed so that the common,
    valid request costs a few attribute reads per input (it runs once per request on the
    event loop). Errors are explained by ``validate_request``."""

    def __init__(self, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], batched: bool) -> None:
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self.batched = batched
        # Sorted by name: the batch key must not depend on the order a client sent them.
        # dtype.str is computed anew on each read (about 1 us): read once here, for the key.
        self._checks = tuple(
            (s.name, s.dtype, s.dtype.str, len(s.shape), tuple((i, d) for i, d in enumerate(s.shape) if d >= 0))
            for s in sorted(inputs, key=lambda s: s.name)
        )
        self._output_names = frozenset(s.name for s in outputs)

    def check(self, request: InferRequest) -> tuple[int, BatchKey]:
        """(rows, batch key) of a valid request; InvalidInput otherwise."""
        given = request.inputs
        if len(given) == len(self._checks) and (
            request.outputs is None or self._output_names.issuperset(request.outputs)
        ):
            rows = -1
            key = []
            for name, dtype, dtype_str, ndim, fixed in self._checks:
                array = given.get(name)
                if type(array) is not np.ndarray or array.dtype != dtype or array.ndim != ndim:
                    break
                shape = array.shape
                mismatch = False
                for i, d in fixed:  # a plain loop: any(<genexpr>) costs more per request
                    if shape[i] != d:
                        mismatch = True
                if mismatch:
                    break
                if self.batched:
                    if rows < 0:
                        rows = shape[0]
                    elif shape[0] != rows:
                        break
                    key.append((name, dtype_str, shape[1:]))  # == batch_key's
            else:
                return max(rows, 0), tuple(key)
        # Something is off: let the thorough version say what.
        rows = validate_request(request, self.inputs, self.outputs, self.batched)
        return rows, batch_key(given) if self.batched else ()


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
