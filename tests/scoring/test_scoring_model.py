"""Model-level behaviour on real tiny models: fallback visibility, deadlines, draining,
version folder rules, entry scripts off the event loop."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from scoring import DeadlineExceeded, InferRequest, ModelNotReady, ModelRepository, ScoringConfig
from scoring import model_zoo


def test_gpu_fallback_is_logged_and_visible(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model_zoo.write(tmp_path, ["tiny"])
    (tmp_path / "tiny" / "config.yaml").write_text("device: gpu\n")

    async def body() -> None:
        repo = ModelRepository(tmp_path)
        await repo.start()
        try:
            assert repo.get("tiny").metadata.providers == ("CPUExecutionProvider",)
        finally:
            await repo.close()

    with caplog.at_level(logging.WARNING, logger="infergate.scoring"):
        asyncio.run(body())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("device 'gpu' wanted CUDAExecutionProvider" in m and "running on CPU" in m for m in warnings)


def test_only_positive_integer_version_folders(tmp_path: Path) -> None:
    model_zoo.write(tmp_path, ["tiny"], version=2)
    for name in ("0", "v3", "latest"):
        model_zoo.write(tmp_path / "_x", ["tiny"])
        (tmp_path / "_x" / "tiny" / "1").rename(tmp_path / "tiny" / name)
        (tmp_path / "_x" / "tiny").rmdir()

    async def body() -> None:
        repo = ModelRepository(tmp_path)
        await repo.start()
        try:
            assert [(r.name, r.version, r.state) for r in repo.index()] == [("tiny", 2, "READY")]
        finally:
            await repo.close()

    asyncio.run(body())


@pytest.mark.parametrize("batching", ["{enabled: true}", "{enabled: false}"])
def test_past_deadline_is_not_computed(tmp_path: Path, batching: str) -> None:
    model_zoo.write(tmp_path, ["tiny"])
    (tmp_path / "tiny" / "config.yaml").write_text(f"batching: {batching}\n")

    async def body() -> None:
        repo = ModelRepository(tmp_path)
        await repo.start()
        try:
            model = repo.get("tiny")
            x = np.ones((1, 4), np.float32)
            with pytest.raises(DeadlineExceeded):
                await model.infer(InferRequest({"x": x}, deadline=time.monotonic() - 1))
            ok = await model.infer(InferRequest({"x": x}, deadline=time.monotonic() + 60))
            np.testing.assert_array_equal(ok.outputs["y"], 3 * x)
        finally:
            await repo.close()

    asyncio.run(body())


def test_unload_drains_unbatched_waiters(tmp_path: Path) -> None:
    (tmp_path / "slow" / "1").mkdir(parents=True)
    (tmp_path / "slow" / "1" / "score.py").write_text(
        "import threading\ngate = threading.Event()\n\ndef init():\n    pass\n\n"
        "def run(raw):\n    gate.wait(10)\n    return raw\n"
    )

    async def body() -> None:
        repo = ModelRepository(tmp_path)
        await repo.start()
        try:
            model = repo.get("slow")
            assert model.entry is not None
            calls = [asyncio.ensure_future(model.run_entry_script(str(i).encode())) for i in range(3)]
            await asyncio.sleep(0)
            unloading = asyncio.ensure_future(repo.unload("slow"))
            await asyncio.sleep(0)
            with pytest.raises(ModelNotReady):
                await model.run_entry_script(b"late")
            model.entry.module.gate.set()
            await unloading
            assert await asyncio.gather(*calls) == ["0", "1", "2"]  # queued work finished
            assert [(r.state, r.reason) for r in repo.index()] == [("UNAVAILABLE", "unloaded")]
        finally:
            await repo.close()

    asyncio.run(body())


def test_entry_script_runs_off_the_event_loop(tmp_path: Path) -> None:
    (tmp_path / "where" / "1").mkdir(parents=True)
    (tmp_path / "where" / "1" / "score.py").write_text(
        "import threading\n\ndef init():\n    global init_thread\n    init_thread = threading.current_thread().name\n\n"
        "def run(raw):\n    return [init_thread, threading.current_thread().name]\n"
    )

    async def body() -> None:
        repo = ModelRepository(tmp_path, ScoringConfig(executor_threads=2))
        await repo.start()
        try:
            init_thread, run_thread = await repo.get("where").run_entry_script(b"")  # type: ignore[misc]
            loop_thread = threading.current_thread().name
            assert init_thread != loop_thread and run_thread != loop_thread
            assert run_thread.startswith("infergate-run")
        finally:
            await repo.close()

    asyncio.run(body())


def test_entry_script_batching_can_be_turned_off(tmp_path: Path) -> None:
    (tmp_path / "b" / "1").mkdir(parents=True)
    (tmp_path / "b" / "1" / "score.py").write_text(
        "def init():\n    pass\n\ndef run(raw):\n    return 'single'\n\ndef run_batch(raws):\n    return ['batch'] * len(raws)\n"
    )
    (tmp_path / "b" / "config.yaml").write_text("batching: {enabled: false}\n")

    async def body() -> None:
        repo = ModelRepository(tmp_path)
        await repo.start()
        try:
            model = repo.get("b")
            assert not model.metadata.batched
            assert await model.run_entry_script(b"x") == "single"
        finally:
            await repo.close()

    asyncio.run(body())
