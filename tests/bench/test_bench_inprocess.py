"""benchmarks/inprocess.py: the in-process limit is measured at every batch size."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

from benchmarks.inprocess import measure_limit
from benchmarks.payloads import read_model_info


def test_limit_reports_rows_per_second_for_each_batch_size(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    )
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    result = measure_limit(read_model_info("relu", path), seconds_per_batch=0.05, batch_sizes=(1, 16), callers=(1, 2))
    assert set(result.rows_per_s) == {1, 16}
    assert all(rate > 0 for rate in result.rows_per_s.values())
    assert result.best_rows_per_s == max(result.rows_per_s.values())
    assert result.callers is not None and result.callers[result.best_batch] in (1, 2)
