"""OrtRunner: session metadata, and ONNX Runtime errors translated at the boundary."""

from __future__ import annotations

from pathlib import Path

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
