"""benchmarks/payloads.py: request bodies for each protocol and the response checks that
stop a wrong answer from being measured."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from benchmarks.payloads import (
    ResponseMismatch,
    build_request,
    check_outputs,
    make_inputs,
    parse_response,
    read_model_info,
)


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    """y = x @ W with x float32 [N, 4] and W all ones: y = [sum(x)] * 2."""
    weight = helper.make_tensor("W", TensorProto.FLOAT, [4, 2], [1.0] * 8)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        [weight],
    )
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_model_info_comes_from_the_onnx_file(model_path: Path) -> None:
    info = read_model_info("tiny", model_path)
    assert [(t.name, t.dtype, t.shape) for t in info.inputs] == [("x", "float32", (-1, 4))]
    assert [(t.name, t.dtype, t.shape) for t in info.outputs] == [("y", "float32", (-1, 2))]


def test_inputs_are_deterministic_and_batched(model_path: Path) -> None:
    info = read_model_info("tiny", model_path)
    a, b = make_inputs(info, 3), make_inputs(info, 3)
    assert a["x"].shape == (3, 4) and a["x"].dtype == np.float32
    np.testing.assert_array_equal(a["x"], b["x"])


def test_v2_json_body_round_trips_exact_float32_values(model_path: Path) -> None:
    info = read_model_info("tiny", model_path)
    inputs = make_inputs(info, 2)
    request = build_request("v2-json", info, inputs)
    body = json.loads(request.body)
    (tensor,) = body["inputs"]
    assert (tensor["name"], tensor["shape"], tensor["datatype"]) == ("x", [2, 4], "FP32")
    np.testing.assert_array_equal(np.asarray(tensor["data"], dtype=np.float32).reshape(2, 4), inputs["x"])
    assert ("Content-Type", "application/json") in request.headers


def test_score_body_is_azureml_data_list(model_path: Path) -> None:
    info = read_model_info("tiny", model_path)
    inputs = make_inputs(info, 2)
    body = json.loads(build_request("score", info, inputs).body)
    np.testing.assert_array_equal(np.asarray(body["data"], dtype=np.float32), inputs["x"])


def test_v2_binary_body_has_json_header_then_raw_tensor(model_path: Path) -> None:
    info = read_model_info("tiny", model_path)
    inputs = make_inputs(info, 2)
    request = build_request("v2-binary", info, inputs)
    headers = dict(request.headers)
    length = int(headers["Inference-Header-Content-Length"])
    header = json.loads(request.body[:length])
    assert header["inputs"][0]["parameters"] == {"binary_data_size": 32}
    assert header["outputs"] == [{"name": "y", "parameters": {"binary_data": True}}]
    np.testing.assert_array_equal(np.frombuffer(request.body[length:], dtype=np.float32).reshape(2, 4), inputs["x"])


def test_unknown_protocol_names_the_field(model_path: Path) -> None:
    info = read_model_info("tiny", model_path)
    with pytest.raises(ValueError, match="protocol"):
        build_request("grpc", info, make_inputs(info, 1))  # type: ignore[arg-type]


def _expected() -> dict[str, np.ndarray]:
    return {"y": np.array([[1.0, 1.0], [2.0, 2.0]], dtype=np.float32)}


def test_parse_v2_json_and_binary_and_score(model_path: Path) -> None:
    info = read_model_info("tiny", model_path)
    v2 = json.dumps({"outputs": [{"name": "y", "shape": [2, 2], "datatype": "FP32", "data": [1, 1, 2, 2]}]}).encode()
    check_outputs(parse_response("v2-json", info, v2), _expected())
    head = json.dumps({"outputs": [{"name": "y", "shape": [2, 2], "datatype": "FP32",
                                    "parameters": {"binary_data_size": 16}}]}).encode()
    raw = _expected()["y"].tobytes()
    check_outputs(parse_response("v2-binary", info, head + raw, len(head)), _expected())
    check_outputs(parse_response("score", info, b"[[1, 1], [2, 2]]"), _expected())


def test_wrong_values_are_a_mismatch() -> None:
    with pytest.raises(ResponseMismatch, match="differ"):
        check_outputs({"y": np.array([[1.0, 1.0], [2.0, 2.5]])}, _expected())


def test_missing_output_and_wrong_size_are_mismatches() -> None:
    with pytest.raises(ResponseMismatch, match="missing"):
        check_outputs({"z": np.zeros((2, 2))}, _expected())
    with pytest.raises(ResponseMismatch, match="3 values"):
        check_outputs({"y": np.zeros(3)}, _expected())


def test_unreadable_body_is_a_mismatch(model_path: Path) -> None:
    info = read_model_info("tiny", model_path)
    with pytest.raises(ResponseMismatch, match="could not be read"):
        parse_response("v2-json", info, b"<html>oops</html>")
    with pytest.raises(ResponseMismatch, match="outputs"):
        parse_response("v2-json", info, b'{"error": "bad"}')
