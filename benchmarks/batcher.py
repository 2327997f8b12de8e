"""In-process micro-batcher benchmark (no HTTP) on the ``mlp`` model.

Measures, in rows/s:
  1. the ONNX Runtime limit: one thread calling ``session.run`` on batches of 1..128 rows
     (and two threads at the best batch size);
  2. the repository + batcher with 64 concurrent asyncio submitters of 1-row requests,
     with the default batching config, and with ``max_batch_size: 1`` (no batching).

Usage: python benchmarks/batcher.py [--seconds 3] [--submitters 64] [--set KEY=VALUE ...]
  --set takes batching/model config overrides for the batched run, e.g.
  --set batching.max_batch_size=64 --set instance_count=2 --set session.intra_op_threads=1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is not built for Windows
    uvloop = None  # type: ignore[assignment]

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scoring import InferRequest, ModelRepository, ScoringConfig  # noqa: E402
from scoring import model_zoo  # noqa: E402
from scoring.config import ModelConfig, parse_model_config  # noqa: E402
from scoring.providers import session_options  # noqa: E402

BATCHES = (1, 2, 4, 8, 16, 32, 64, 128)


def ort_limit(path: Path, seconds: float, config: ModelConfig) -> tuple[dict[int, float], int, float]:
    """rows/s of bare ``session.run`` per batch size (one thread, a session using every
    core), the best size, and two threads at that size (a session using half the cores
    each, as two instances do)."""
    sess = ort.InferenceSession(str(path), session_options(config.session, instances=1), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    per_size = max(seconds / 4, 0.4)
    table: dict[int, float] = {}
    for n in BATCHES:
        x = rng.standard_normal((n, 256)).astype(np.float32)
        sess.run(None, {"input": x})  # warm up
        rows, start = 0, time.perf_counter()
        while time.perf_counter() - start < per_size:
            sess.run(None, {"input": x})
            rows += n
        table[n] = rows / (time.perf_counter() - start)
    best = max(table, key=lambda k: table[k])
    x = rng.standard_normal((best, 256)).astype(np.float32)
    sess = ort.InferenceSession(str(path), session_options(config.session, instances=2), providers=["CPUExecutionProvider"])
    sess.run(None, {"input": x})
    counts = [0, 0]
    stop = time.perf_counter() + per_size * 2

    def worker(i: int) -> None:
        while time.perf_counter() < stop:
            sess.run(None, {"input": x})
            counts[i] += best

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    two = sum(counts) / (time.perf_counter() - start)
    return table, best, two


async def submitters(root: Path, seconds: float, n: int) -> tuple[float, float]:
    """rows/s and mean batch rows with ``n`` concurrent 1-row submitters."""
    repo = ModelRepository(root, ScoringConfig())
    await repo.start()
    model = repo.get("mlp")
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((1, 256)).astype(np.float32) for _ in range(n)]
    done = 0
    batch_rows = 0
    stop = 0.0

    async def client(i: int) -> None:
        nonlocal done, batch_rows
        req = InferRequest({"input": xs[i]})
        while time.perf_counter() < stop:
            result = await model.infer(req)
            done += 1
            batch_rows += result.batch_rows

    stop = time.perf_counter() + 0.5  # warm up
    await asyncio.gather(*(client(i) for i in range(n)))
    done = batch_rows = 0
    start = time.perf_counter()
    stop = start + seconds
    await asyncio.gather(*(client(i) for i in range(n)))
    elapsed = time.perf_counter() - start
    await repo.close()
    return done / elapsed, batch_rows / max(done, 1)


def config_overrides(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, _, raw = item.partition("=")
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = json.loads(raw)
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per configuration")
    parser.add_argument("--submitters", type=int, default=64)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop" if uvloop else "asyncio",
                        help="event loop (the server runs on uvloop)")
    args = parser.parse_args(argv)
    overrides = config_overrides(args.set)
    config = parse_model_config(overrides, ModelConfig())

    with tempfile.TemporaryDirectory() as tmp:
        batched_root, single_root = Path(tmp, "batched"), Path(tmp, "single")
        model_zoo.write(batched_root, ["mlp"])
        model_zoo.write(single_root, ["mlp"])
        (batched_root / "mlp" / "config.json").write_text(json.dumps(overrides))
        single = dict(overrides)
        single["batching"] = {**overrides.get("batching", {}), "max_batch_size": 1, "preferred_batch_sizes": []}
        (single_root / "mlp" / "config.json").write_text(json.dumps(single))
        path = batched_root / "mlp" / "1" / "model.onnx"

        print(f"cpus: {os.cpu_count()}  onnxruntime {ort.__version__}  config overrides: {overrides or 'none'}")
        table, best, two = ort_limit(path, args.seconds, config)
        limit = max(max(table.values()), two)
        print("\nONNX Runtime limit, one thread calling session.run:")
        print("| batch rows | rows/s |\n|---:|---:|")
        for n, rate in table.items():
            print(f"| {n} | {rate:,.0f} |")
        print(f"two threads at batch {best}: {two:,.0f} rows/s;  limit = {limit:,.0f} rows/s")

        run = uvloop.run if args.loop == "uvloop" and uvloop else asyncio.run
        batched, mean_batch = run(submitters(batched_root, args.seconds, args.submitters))
        unbatched, _ = run(submitters(single_root, args.seconds, args.submitters))
    print(f"\n{args.submitters} submitters of 1-row requests through ModelRepository/Model.infer ({args.loop}):")
    print("| configuration | rows/s | mean batch rows |\n|---|---:|---:|")
    print(f"| batching (defaults{' + overrides' if overrides else ''}) | {batched:,.0f} | {mean_batch:.1f} |")
    print(f"| max_batch_size: 1 | {unbatched:,.0f} | 1.0 |")
    print(f"| ORT limit (best of 1 and 2 threads) | {limit:,.0f} | {best} |")
    print(f"\nbatched / unbatched = {batched / unbatched:.2f}x (target >= 3x);  "
          f"batched / limit = {batched / limit:.2f} (target >= 0.6)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
