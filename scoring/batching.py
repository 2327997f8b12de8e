"""Merge requests along axis 0 and split a batch's outputs back (pure numpy, no asyncio)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from scoring.errors import InferenceFailed
from scoring.types import TensorSpec

Arrays = dict[str, np.ndarray]
# What must agree for two requests to share a batch: per input, its name, dtype and
# every dimension after the first.
BatchKey = tuple[tuple[str, str, tuple[int, ...]], ...]


# ``batching.max_batch_size`` left unset: as many rows as fit in AUTO_BATCH_BYTES of input,
# within [AUTO_MIN_ROWS, AUTO_MAX_ROWS], for models of at most AUTO_MODEL_BYTES. Small models
# on small rows batch deeper: their cost per call is a large share of the work, so ONNX
# Runtime's cost per row keeps falling up to a few hundred rows, and clients that send many
# rows per request can then share a batch. Everything else stays at AUTO_MIN_ROWS, which
# bounds a batch's memory: large rows (images), rows of unknown size (dynamic or string
# dims), and large models, whose intermediate tensors per row (a transformer's attention)
# can dwarf their inputs.
AUTO_BATCH_BYTES = 1 << 20
AUTO_MODEL_BYTES = 16 << 20
AUTO_MIN_ROWS = 32
AUTO_MAX_ROWS = 256


def row_bytes(inputs: Sequence[TensorSpec]) -> int | None:
    """Bytes of one row over every input (dims after the first); None when unknown."""
    total = 0
    for spec in inputs:
        if spec.datatype == "BYTES" or any(d < 0 for d in spec.shape[1:]):
            return None
        total += spec.dtype.itemsize * int(np.prod(spec.shape[1:], dtype=np.int64))
    return total or None


def auto_max_batch_size(inputs: Sequence[TensorSpec], model_bytes: int) -> int:
    """The ``max_batch_size`` a model of ``model_bytes`` (its files) gets when its config
    sets none."""
    size = row_bytes(inputs)
    if size is None or model_bytes > AUTO_MODEL_BYTES:
        return AUTO_MIN_ROWS
    return max(AUTO_MIN_ROWS, min(AUTO_MAX_ROWS, AUTO_BATCH_BYTES // size))


def batch_key(inputs: Mapping[str, np.ndarray]) -> BatchKey:
    """Requests with equal keys can be concatenated along axis 0."""
    return tuple(sorted((name, a.dtype.str, a.shape[1:]) for name, a in inputs.items()))


def merge(parts: Sequence[Mapping[str, np.ndarray]]) -> Arrays:
    """Concatenate each input along axis 0 (all parts share one ``batch_key``)."""
    if len(parts) == 1:
        return dict(parts[0])
    return {name: np.concatenate([p[name] for p in parts], axis=0) for name in parts[0]}


def split(outputs: Mapping[str, np.ndarray], rows: Sequence[int], label: str = "model") -> list[Arrays]:
    """Cut every output back into per-request slices of ``rows`` rows each.

    Raises InferenceFailed when an output's dim 0 is not the batch's total rows: such a
    model cannot be batched, and guessing would hand one request another's results.
    """
    total = sum(rows)
    for name, value in outputs.items():
        if value.ndim == 0 or value.shape[0] != total:
            got = "a scalar" if value.ndim == 0 else f"{value.shape[0]} rows"
            raise InferenceFailed(
                f"{label}: output '{name}' has {got} for a batch of {total} rows; "
                "this model cannot be batched (set batching.enabled: false)"
            )
    if len(rows) == 1:
        return [dict(outputs)]
    pieces: list[Arrays] = []
    start = 0
    for n in rows:
        pieces.append({name: value[start : start + n] for name, value in outputs.items()})
        start += n
    return pieces
