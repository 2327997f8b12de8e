"""On a real ONNX model: results with micro-batching equal results without it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import onnx

from scoring import InferRequest, ModelRepository, Overloaded, ScoringConfig
from scoring import model_zoo


def test_batched_equals_unbatched_under_concurrent_submitters(tmp_path: Path) -> None:
    small_mlp = model_zoo.mlp(seed=3, width=16, hidden=32, classes=5)
    for name, batching in (("batched", "{enabled: true, max_batch_size: 16, max_queue_delay_ms: 5}"),
                           ("plain", "{enabled: false}")):
        (tmp_path / name / "1").mkdir(parents=True)
        onnx.save(small_mlp, str(tmp_path / name / "1" / "model.onnx"))
        (tmp_path / name / "config.yaml").write_text(f"batching: {batching}\ninstance_count: 2\n")
    rng = np.random.default_rng(7)
    requests = [rng.standard_normal((int(rng.integers(1, 4)), 16)).astype(np.float32) for _ in range(96)]

    async def body() -> None:
        repo = ModelRepository(tmp_path, ScoringConfig(executor_threads=4))
        await repo.start()
        try:
            batched, plain = repo.get("batched"), repo.get("plain")
            assert batched.metadata.batched and not plain.metadata.batched
            got = await asyncio.gather(*(batched.infer(InferRequest({"input": x})) for x in requests))
            want = await asyncio.gather(*(plain.infer(InferRequest({"input": x})) for x in requests))
            assert max(r.batch_rows for r in got) > 3  # requests really shared batches
            for x, g, w in zip(requests, got, want, strict=True):
                assert g.outputs["output"].shape == (len(x), 5)
                np.testing.assert_allclose(g.outputs["output"], w.outputs["output"], rtol=1e-5, atol=1e-6)
        finally:
            await repo.close()

    asyncio.run(body())


def test_unbatched_queue_is_bounded_too(tmp_path: Path) -> None:
    model_zoo.write(tmp_path, ["tiny"])
    (tmp_path / "tiny" / "config.yaml").write_text("batching: {enabled: false, max_queue_size: 2}\ninstance_count: 1\n")

    async def body() -> None:
        repo = ModelRepository(tmp_path)
        await repo.start()
        try:
            model = repo.get("tiny")
            x = np.ones((1, 4), np.float32)
            # One computes, two wait; every further one is refused at once.
            results = await asyncio.gather(*(model.infer(InferRequest({"x": x})) for _ in range(6)), return_exceptions=True)
            assert sum(isinstance(r, Overloaded) for r in results) >= 3
            assert any(not isinstance(r, Exception) for r in results)
        finally:
            await repo.close()

    asyncio.run(body())
