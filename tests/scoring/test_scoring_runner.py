"""OrtRunner: session metadata, ONNX Runtime errors translated at the boundary, and runs on
its instance threads."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from scoring import InferenceFailed, InvalidInput, ModelConfig, ModelLoadError, TensorSpec
from scoring import model_zoo
from scoring.runner import OrtRunner


def _reshape_model(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        "reshape",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
            helper.make_tensor_value_info("shape", TensorProto.INT64, [2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_metadata_from_the_graph(tmp_path: Path) -> None:
    (path,) = model_zoo.write(tmp_path, ["demo"])
    runner = OrtRunner.load(path, ModelConfig(device="cpu"), "demo")
    assert runner.inputs == (TensorSpec("input", "FP32", (-1, 4)),)
    assert runner.outputs == (TensorSpec("probabilities", "FP32", (-1, 3)), TensorSpec("label", "INT64", (-1,)))
    assert runner.providers == ("CPUExecutionProvider",)


def test_wrong_input_is_invalid_input(tmp_path: Path) -> None:
    (path,) = model_zoo.write(tmp_path, ["tiny"])
    runner = OrtRunner.load(path, ModelConfig(device="cpu"), "tiny")
    with pytest.raises(InvalidInput) as info:
        runner.run_sync({"x": np.ones((1, 4), np.float64)}, None)
    assert info.value.__cause__ is not None and "tiny" in str(info.value)


def test_runtime_failure_is_inference_failed(tmp_path: Path) -> None:
    runner = OrtRunner.load(_reshape_model(tmp_path / "r.onnx"), ModelConfig(device="cpu"), "reshape")
    x = np.ones((2, 3), np.float32)
    assert runner.run_sync({"x": x, "shape": np.array([3, 2])}, None)["y"].shape == (3, 2)
    with pytest.raises(InferenceFailed) as info:
        runner.run_sync({"x": x, "shape": np.array([4, 4])}, None)
    assert info.value.__cause__ is not None and "ONNX Runtime failed" in str(info.value)


def test_unloadable_file_is_model_load_error(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(ModelLoadError, match="model.onnx: ONNX Runtime cannot load it"):
        OrtRunner.load(bad, ModelConfig(device="cpu"), "bad")


def _gated_runner(tmp_path: Path, instances: int) -> tuple[OrtRunner, list[str], threading.Event, threading.Semaphore]:
    """A tiny-model runner whose runs record their thread and wait for ``gate``."""
    (path,) = model_zoo.write(tmp_path, ["tiny"])
    runner = OrtRunner.load(path, ModelConfig(device="cpu", instance_count=instances), "model 'tiny' version 1")
    threads: list[str] = []
    gate = threading.Event()
    entered = threading.Semaphore(0)
    real = runner.run_sync

    def gated(inputs: dict[str, np.ndarray], names: Any) -> dict[str, np.ndarray]:
        threads.append(threading.current_thread().name)
        entered.release()
        assert gate.wait(10)
        return real(inputs, names)

    runner.run_sync = gated  # type: ignore[method-assign, assignment]
    return runner, threads, gate, entered


async def _computing(runner: OrtRunner, x: dict[str, np.ndarray], entered: threading.Semaphore) -> asyncio.Future[Any]:
    """A run of ``x``, once an instance thread has started computing it."""
    run = asyncio.ensure_future(runner.run(x, None))
    assert await asyncio.to_thread(entered.acquire, True, 10)
    return run


def test_runs_compute_on_instance_threads_at_most_instance_count_at_once(tmp_path: Path) -> None:
    runner, threads, gate, entered = _gated_runner(tmp_path, instances=2)
    x = {"x": np.ones((1, 4), np.float32)}

    async def body() -> None:
        calls = [asyncio.ensure_future(runner.run(x, None)) for _ in range(3)]
        for _ in range(2):
            assert await asyncio.to_thread(entered.acquire, True, 10)
        await asyncio.sleep(0.05)
        assert len(threads) == 2  # the third waits in the queue for a free instance
        gate.set()
        results = await asyncio.gather(*calls)
        assert [sorted(r) for r in results] == [["y"]] * 3
        np.testing.assert_allclose(results[0]["y"], OrtRunner.run_sync(runner, x, None)["y"])

    asyncio.run(body())
    runner.close()
    assert set(threads) <= {"infergate-tiny-1_0", "infergate-tiny-1_1"} and len(threads) == 3


def test_run_errors_reach_the_caller(tmp_path: Path) -> None:
    (path,) = model_zoo.write(tmp_path, ["tiny"])
    runner = OrtRunner.load(path, ModelConfig(device="cpu"), "tiny")

    async def body() -> None:
        with pytest.raises(InvalidInput, match="does not fit the model"):
            await runner.run({"x": np.ones((1, 4), np.float64)}, None)
        assert (await runner.run({"x": np.ones((1, 4), np.float32)}, None))["y"].shape == (1, 4)

    asyncio.run(body())
    runner.close()


def test_close_cancels_queued_runs_and_lets_the_running_one_finish(tmp_path: Path) -> None:
    runner, threads, gate, entered = _gated_runner(tmp_path, instances=1)
    x = {"x": np.ones((1, 4), np.float32)}

    async def body() -> None:
        running = await _computing(runner, x, entered)
        queued = asyncio.ensure_future(runner.run(x, None))
        await asyncio.sleep(0.01)
        runner.close()
        gate.set()
        assert (await running)["y"].shape == (1, 4)
        with pytest.raises(asyncio.CancelledError):
            await queued

    asyncio.run(body())
    assert len(threads) == 1  # the queued run was never computed


def test_a_caller_that_gives_up_does_not_break_the_instance(tmp_path: Path) -> None:
    runner, threads, gate, entered = _gated_runner(tmp_path, instances=1)
    x = {"x": np.ones((1, 4), np.float32)}

    async def body() -> None:
        abandoned = await _computing(runner, x, entered)
        abandoned.cancel()
        gate.set()
        assert (await runner.run(x, None))["y"].shape == (1, 4)  # its result was dropped quietly
        assert abandoned.cancelled()

    asyncio.run(body())
    runner.close()
