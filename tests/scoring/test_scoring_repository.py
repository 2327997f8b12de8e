"""ModelRepository: discovery, version policy, broken models, get(), load/unload, validation."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from scoring import (
    InferenceFailed,
    InferRequest,
    InvalidInput,
    ModelLoadError,
    ModelNotFound,
    ModelNotReady,
    ModelRepository,
    ScoringConfig,
    TensorSpec,
    VersionNotFound,
)
from scoring import model_zoo
from scoring.batching import AUTO_BATCH_BYTES, AUTO_MAX_ROWS, AUTO_MIN_ROWS, AUTO_MODEL_BYTES, auto_max_batch_size

T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(_wrap(coro))


async def _wrap(coro: Awaitable[T]) -> T:
    return await coro


def with_repo(root: Path, body: Callable[[ModelRepository], Awaitable[T]], config: ScoringConfig | None = None) -> T:
    async def go() -> T:
        repo = ModelRepository(root, config)
        await repo.start()
        try:
            return await body(repo)
        finally:
            await repo.close()

    return asyncio.run(go())


def save(model: onnx.ModelProto, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for v in (1, 2, 3):
        save(model_zoo.tiny(), tmp_path / "tiny" / str(v) / "model.onnx")
    save(model_zoo.demo(), tmp_path / "demo" / "1" / "model.onnx")
    return tmp_path


def test_discovers_and_serves_latest(root: Path) -> None:
    async def body(repo: ModelRepository) -> None:
        assert repo.ready()
        assert repo.model_names() == ["demo", "tiny"]
        rows = {(r.name, r.version): r for r in repo.index()}
        assert rows[("tiny", 3)].state == "READY"
        assert rows[("tiny", 1)].state == "UNAVAILABLE" and "version_policy latest: 1" in rows[("tiny", 1)].reason
        model = repo.get("tiny")
        assert model.metadata.id.version == 3
        md = model.metadata
        assert md.inputs == (TensorSpec("x", "FP32", (-1, 4)),)
        assert md.outputs == (TensorSpec("y", "FP32", (-1, 4)),)
        assert md.providers == ("CPUExecutionProvider",)
        assert md.batched and md.max_batch_size > 0
        with pytest.raises(VersionNotFound):
            repo.get("tiny", 1)  # excluded by the policy
        with pytest.raises(VersionNotFound):
            repo.get("tiny", 9)
        with pytest.raises(ModelNotFound):
            repo.get("nope")
        x = np.arange(8, dtype=np.float32).reshape(2, 4)
        result = await model.infer(InferRequest({"x": x}))
        np.testing.assert_array_equal(result.outputs["y"], 2 * x + 1)

    with_repo(root, body)


def test_version_policy_all_and_specific(root: Path) -> None:
    (root / "tiny" / "config.yaml").write_text("version_policy: all\n")

    async def body(repo: ModelRepository) -> None:
        assert [repo.get("tiny", v).metadata.id.version for v in (1, 2, 3)] == [1, 2, 3]
        (root / "tiny" / "config.yaml").write_text("version_policy: {specific: [2]}\n")
        await repo.load("tiny")
        assert repo.get("tiny").metadata.id.version == 2
        with pytest.raises(VersionNotFound):
            repo.get("tiny", 3)

    with_repo(root, body)


def test_max_batch_size_follows_the_row_size_unless_configured(tmp_path: Path) -> None:
    model_zoo.write(tmp_path, ["tiny"])  # 16 bytes per row
    save(model_zoo.mlp(width=4096, hidden=8, classes=2), tmp_path / "wide" / "1" / "model.onnx")  # 16 KiB
    shutil.copytree(tmp_path / "wide", tmp_path / "wide_capped")
    (tmp_path / "wide_capped" / "config.yaml").write_text("batching: {max_batch_size: 48}\n")

    shutil.copytree(tmp_path / "tiny", tmp_path / "heavy")  # external weights beside the graph
    (tmp_path / "heavy" / "1" / "weights.bin").write_bytes(b"\0" * (AUTO_MODEL_BYTES + 1))

    async def body(repo: ModelRepository) -> None:
        assert repo.get("tiny").metadata.max_batch_size == AUTO_MAX_ROWS
        assert repo.get("wide").metadata.max_batch_size == AUTO_BATCH_BYTES // (4096 * 4)
        assert repo.get("wide_capped").metadata.max_batch_size == 48
        assert repo.get("heavy").metadata.max_batch_size == AUTO_MIN_ROWS

    with_repo(tmp_path, body)


def test_auto_max_batch_size_bounds_a_batch_by_bytes() -> None:
    def spec(datatype: str, *dims: int) -> tuple[TensorSpec, ...]:
        return (TensorSpec("x", datatype, (-1, *dims)),)

    small = 5 << 20  # model bytes
    assert auto_max_batch_size(spec("FP32", 4), small) == AUTO_MAX_ROWS
    assert auto_max_batch_size(spec("FP32", 1024), small) == AUTO_BATCH_BYTES // 4096
    assert auto_max_batch_size(spec("FP32", 3, 224, 224), small) == AUTO_MIN_ROWS  # images: the floor
    assert auto_max_batch_size(spec("FP32", -1, 128), small) == AUTO_MIN_ROWS  # row size unknown
    assert auto_max_batch_size(spec("BYTES", 1), small) == AUTO_MIN_ROWS
    two = (TensorSpec("a", "FP32", (-1, 512)), TensorSpec("b", "INT64", (-1, 512)))
    assert auto_max_batch_size(two, small) == AUTO_BATCH_BYTES // (512 * 4 + 512 * 8)
    # A large model (a transformer's token ids are small rows): its activations are not.
    assert auto_max_batch_size(spec("INT64", 128), AUTO_MODEL_BYTES + 1) == AUTO_MIN_ROWS


def test_broken_config_and_model_do_not_stop_the_others(root: Path) -> None:
    (root / "tiny" / "config.yaml").write_text("batching:\n  max_queue_delay_ms: -5\n")
    bad = root / "broken" / "1" / "model.onnx"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not onnx")
    (root / "empty").mkdir()

    async def body(repo: ModelRepository) -> None:
        assert not repo.ready()
        assert repo.get("demo").metadata.id.version == 1
        rows = {(r.name, r.version): r for r in repo.index()}
        tiny = rows[("tiny", None)]
        assert tiny.state == "UNAVAILABLE"
        assert tiny.reason == "model 'tiny': config.yaml: batching.max_queue_delay_ms: must be >= 0, got -5"
        broken = rows[("broken", 1)]
        assert broken.state == "UNAVAILABLE"
        assert broken.reason.startswith("model 'broken' version 1: model.onnx: ")
        assert "no version folders" in rows[("empty", None)].reason
        with pytest.raises(ModelNotReady, match="model.onnx"):
            repo.get("broken", 1)
        with pytest.raises(ModelNotReady, match="max_queue_delay_ms"):
            repo.get("tiny")
        # Fix it and reload at run time.
        (root / "tiny" / "config.yaml").write_text("batching:\n  max_queue_delay_ms: 1\n")
        await repo.load("tiny")
        assert repo.get("tiny").metadata.id.version == 3
        shutil.rmtree(root / "broken")
        shutil.rmtree(root / "empty")
        await repo.unload("broken")
        await repo.unload("empty")
        assert repo.ready()

    with_repo(root, body)


def test_strict_device_failure_names_the_config_file(root: Path) -> None:
    (root / "demo" / "config.json").write_text('{"device": "gpu", "strict_device": true}')

    async def body(repo: ModelRepository) -> None:
        row = [r for r in repo.index() if r.name == "demo"][0]
        assert row.state == "UNAVAILABLE"
        assert row.reason.startswith("model 'demo' version 1: config.json: strict_device: device 'gpu' needs CUDAExecutionProvider")
        with pytest.raises(ModelLoadError, match="strict_device"):
            await repo.load("demo")

    with_repo(root, body)


def test_load_new_model_and_unload_at_run_time(root: Path) -> None:
    async def body(repo: ModelRepository) -> None:
        with pytest.raises(ModelNotFound):
            await repo.load("identity")
        model_zoo.write(root, ["identity"])
        await repo.load("identity")
        out = await repo.get("identity").infer(InferRequest({"input": np.ones((2, 3), np.float32)}))
        np.testing.assert_array_equal(out.outputs["output"], np.ones((2, 3)))
        model = repo.get("tiny")
        await repo.unload("tiny")
        rows = {(r.name, r.version): r for r in repo.index()}
        assert rows[("tiny", 3)].state == "UNAVAILABLE" and rows[("tiny", 3)].reason == "unloaded"
        with pytest.raises(ModelNotReady, match="unloaded"):
            repo.get("tiny")
        with pytest.raises(ModelNotReady):
            await model.infer(InferRequest({"x": np.ones((1, 4), np.float32)}))
        assert repo.ready()  # an unloaded model is not expected to be ready
        await repo.load("tiny")
        assert repo.get("tiny").metadata.id.version == 3

    with_repo(root, body)


@pytest.mark.parametrize("name", ["../etc", "..", "a/b", "/abs", "", "a\\b", ".hidden"])
def test_path_traversal_is_refused(root: Path, name: str) -> None:
    async def body(repo: ModelRepository) -> None:
        with pytest.raises(InvalidInput) as info:
            await repo.load(name)
        assert info.value.field == "name"
        with pytest.raises(InvalidInput):
            await repo.unload(name)

    with_repo(root, body)


@pytest.mark.parametrize(
    ("inputs", "outputs", "field", "message"),
    [
        ({"x": np.ones((1, 4), np.float32), "z": np.ones(1)}, None, "z", "unknown input 'z'"),
        ({}, None, "x", "missing input 'x'"),
        ({"x": np.ones((1, 4), np.float64)}, None, "x", "datatype FP64 does not match the model's FP32"),
        ({"x": np.ones((4,), np.float32)}, None, "x", "has 1 dimensions, the model wants 2"),
        ({"x": np.ones((1, 5), np.float32)}, None, "x", "does not match the model's [-1, 4]"),
        ({"x": np.ones((1, 4), np.float32)}, ("nope",), "outputs", "unknown output 'nope'"),
    ],
)
def test_input_validation(root: Path, inputs: dict[str, Any], outputs: tuple[str, ...] | None, field: str, message: str) -> None:
    async def body(repo: ModelRepository) -> None:
        with pytest.raises(InvalidInput) as info:
            await repo.get("tiny").infer(InferRequest(inputs, outputs))
        assert info.value.field == field
        assert message in str(info.value)

    with_repo(root, body)


def _failing_model() -> onnx.ModelProto:
    """Reshape to a shape read from the input: valid graph, fails at run time on bad values."""
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
    return model


def test_runtime_error_is_inference_failed_and_unbatched(tmp_path: Path) -> None:
    save(_failing_model(), tmp_path / "reshape" / "1" / "model.onnx")

    async def body(repo: ModelRepository) -> None:
        model = repo.get("reshape")
        assert not model.metadata.batched  # fixed dim 0: bypasses the batcher
        x = np.ones((2, 3), np.float32)
        ok = await model.infer(InferRequest({"x": x, "shape": np.array([3, 2])}))
        assert ok.outputs["y"].shape == (3, 2)
        with pytest.raises(InferenceFailed) as info:
            await model.infer(InferRequest({"x": x, "shape": np.array([4, 4])}))
        assert isinstance(info.value.__cause__, Exception)
        assert "reshape" in str(info.value)

    with_repo(tmp_path, body)


def test_demo_model_classifies_iris(tmp_path: Path) -> None:
    model_zoo.write(tmp_path, ["demo"])

    async def body(repo: ModelRepository) -> None:
        x = np.array([[5.1, 3.5, 1.4, 0.2], [6.0, 2.9, 4.5, 1.5], [6.5, 3.0, 5.5, 2.1]], np.float32)
        out = await repo.get("demo").infer(InferRequest({"input": x}))
        assert out.outputs["label"].tolist() == [0, 1, 2]
        np.testing.assert_allclose(out.outputs["probabilities"].sum(axis=1), 1.0, rtol=1e-5)

    with_repo(tmp_path, body)


def test_model_zoo_cli(tmp_path: Path) -> None:
    assert model_zoo.main([str(tmp_path), "tiny", "mlp"]) == 0
    assert (tmp_path / "tiny" / "1" / "model.onnx").is_file()
    mlp = onnx.load(str(tmp_path / "mlp" / "1" / "model.onnx"))
    assert [n.op_type for n in mlp.graph.node] == ["Gemm", "Relu", "Gemm", "Relu", "Gemm", "Softmax"]
    assert model_zoo.mlp().SerializeToString() == mlp.SerializeToString()  # deterministic
    assert model_zoo.main([str(tmp_path), "nope"]) == 2
