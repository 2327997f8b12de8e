"""The in-process ONNX Runtime limit: rows/s of ``InferenceSession.run`` called in a loop
with no server at all, at the best batch size and the best number of concurrent callers
(a server's thread pool calls ``run`` concurrently too, and that can beat one caller).
No server can beat it on the same cores."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from benchmarks.payloads import ModelInfo, make_inputs

BATCH_SIZES = (1, 8, 32, 64, 128, 256)
CALLERS = (1, 2)


@dataclass(frozen=True)
class LimitResult:
    """Rows/s at each batch size tried (best over caller counts), and the best of them."""

    model: str
    rows_per_s: dict[int, float]
    callers: dict[int, int] | None = None

    @property
    def best_batch(self) -> int:
        return max(self.rows_per_s, key=lambda b: self.rows_per_s[b])

    @property
    def best_rows_per_s(self) -> float:
        return self.rows_per_s[self.best_batch]


def _rows_per_s(session: object, feeds: Mapping[str, object], batch: int, callers: int, seconds: float) -> float:
    """``callers`` threads each calling ``run`` until the deadline; total rows / elapsed."""
    counts = [0] * callers
    start = time.perf_counter()
    deadline = start + seconds

    def loop(index: int) -> None:
        while time.perf_counter() < deadline:
            session.run(None, feeds)  # type: ignore[attr-defined]
            counts[index] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) * batch / (time.perf_counter() - start)


def measure_limit(model: ModelInfo, seconds_per_batch: float = 1.0, batch_sizes: tuple[int, ...] = BATCH_SIZES,
                  callers: tuple[int, ...] = CALLERS) -> LimitResult:
    """Time ``session.run`` for ``seconds_per_batch`` at each batch size and caller count."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(Path(model.path)), providers=["CPUExecutionProvider"])
    results: dict[int, float] = {}
    best_callers: dict[int, int] = {}
    for batch in batch_sizes:
        feeds = make_inputs(model, batch)
        session.run(None, feeds)  # warm-up: first-run allocations are not part of the limit
        for n in callers:
            rate = _rows_per_s(session, feeds, batch, n, seconds_per_batch)
            if rate > results.get(batch, 0.0):
                results[batch], best_callers[batch] = rate, n
    return LimitResult(model.name, results, best_callers)
