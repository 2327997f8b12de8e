"""The in-process ONNX Runtime limit: rows/s of ``InferenceSession.run`` called in a loop
with no server at all, at the best batch size. No server can beat it on the same cores."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.payloads import ModelInfo, make_inputs

BATCH_SIZES = (1, 8, 32, 64, 128, 256)


@dataclass(frozen=True)
class LimitResult:
    """Rows/s at each batch size tried, and the best of them."""

    model: str
    rows_per_s: dict[int, float]

    @property
    def best_batch(self) -> int:
        return max(self.rows_per_s, key=lambda b: self.rows_per_s[b])

    @property
    def best_rows_per_s(self) -> float:
        return self.rows_per_s[self.best_batch]


def measure_limit(model: ModelInfo, seconds_per_batch: float = 1.0, batch_sizes: tuple[int, ...] = BATCH_SIZES) -> LimitResult:
    """Time ``session.run`` for ``seconds_per_batch`` at each batch size (after one warm-up call)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(Path(model.path)), providers=["CPUExecutionProvider"])
    results: dict[int, float] = {}
    for batch in batch_sizes:
        feeds = make_inputs(model, batch)
        session.run(None, feeds)
        calls = 0
        start = time.perf_counter()
        deadline = start + seconds_per_batch
        now = start
        while now < deadline:
            session.run(None, feeds)
            calls += 1
            now = time.perf_counter()
        results[batch] = calls * batch / (now - start)
    return LimitResult(model.name, results)
