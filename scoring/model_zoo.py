"""Deterministic ONNX models built with ``onnx.helper`` (nothing is downloaded).

- ``mlp``      benchmark model: float32 ``input`` [N, 256] -> Gemm 1024 -> Relu -> Gemm 1024
               -> Relu -> Gemm 16 -> Softmax -> ``output`` [N, 16] (seeded weights)
- ``demo``     what ``make up`` serves: an Iris flower classifier. ``input`` float32 [N, 4] =
               sepal length, sepal width, petal length, petal width (cm) -> ``probabilities``
               float32 [N, 3] (setosa, versicolor, virginica) and ``label`` int64 [N]. It is the
               classic CART tree on Iris (petal length < 2.45 -> setosa, else petal width < 1.75
               -> versicolor, else virginica) with soft (sigmoid) splits.
- ``identity`` the null model: float32 ``input`` [N, M] -> ``output`` (same values)
- ``tiny``     float32 ``x`` [N, 4] -> ``y`` = 2x + 1

Usage: ``python -m scoring.model_zoo DIR [names...]`` writes ``DIR/<name>/1/model.onnx``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # readable by every ONNX Runtime >= 1.14


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="infergate")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(array, name)


def mlp(seed: int = 0, width: int = 256, hidden: int = 1024, classes: int = 16) -> onnx.ModelProto:
    """The benchmark model (He-initialised weights from a fixed seed)."""
    rng = np.random.default_rng(seed)
    dims = [width, hidden, hidden, classes]
    inits, nodes = [], []
    x = "input"
    for i, (n_in, n_out) in enumerate(zip(dims, dims[1:], strict=False)):
        w = (rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in)).astype(np.float32)
        b = (rng.standard_normal(n_out) * 0.01).astype(np.float32)
        inits += [_init(f"w{i}", w), _init(f"b{i}", b)]
        nodes.append(helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [f"g{i}"]))
        x = f"g{i}"
        if i < len(dims) - 2:
            nodes.append(helper.make_node("Relu", [x], [f"r{i}"]))
            x = f"r{i}"
    nodes.append(helper.make_node("Softmax", [x], ["output"], axis=1))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", classes])],
        inits,
    )
    return _model(graph)


def demo(sharpness: float = 20.0) -> onnx.ModelProto:
    """Iris classifier: the CART tree with sigmoid splits (see the module docstring)."""
    # gates = sigmoid(k * (x[:, [2, 3]] - [2.45, 1.75])): "petal long", "petal wide"
    select = np.zeros((4, 2), dtype=np.float32)
    select[2, 0] = select[3, 1] = sharpness
    bias = np.array([-2.45 * sharpness, -1.75 * sharpness], dtype=np.float32)
    inits = [
        _init("select", select),
        _init("bias", bias),
        _init("one", np.array(1.0, dtype=np.float32)),
        _init("i0", np.array([0], dtype=np.int64)),
        _init("i1", np.array([1], dtype=np.int64)),
        _init("i2", np.array([2], dtype=np.int64)),
    ]
    nodes = [
        helper.make_node("Gemm", ["input", "select", "bias"], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["gates"]),
        helper.make_node("Slice", ["gates", "i0", "i1", "i1"], ["long"]),  # [N, 1]
        helper.make_node("Slice", ["gates", "i1", "i2", "i1"], ["wide"]),
        helper.make_node("Sub", ["one", "long"], ["p_setosa"]),
        helper.make_node("Sub", ["one", "wide"], ["narrow"]),
        helper.make_node("Mul", ["long", "narrow"], ["p_versicolor"]),
        helper.make_node("Mul", ["long", "wide"], ["p_virginica"]),
        helper.make_node("Concat", ["p_setosa", "p_versicolor", "p_virginica"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "iris",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4])],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
        ],
        inits,
    )
    graph.doc_string = "Iris classifier. input [N,4]: sepal length, sepal width, petal length, petal width (cm)"
    return _model(graph)


def identity() -> onnx.ModelProto:
    """The null model: returns its input."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["output"])],
        "identity",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", "M"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", "M"])],
    )
    return _model(graph)


def tiny() -> onnx.ModelProto:
    """y = 2x + 1 on float32 [N, 4]: small enough for any test."""
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "two"], ["twice"]),
            helper.make_node("Add", ["twice", "one"], ["y"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [_init("two", np.array(2.0, dtype=np.float32)), _init("one", np.array(1.0, dtype=np.float32))],
    )
    return _model(graph)


BUILDERS: dict[str, Callable[[], onnx.ModelProto]] = {
    "mlp": mlp,
    "demo": demo,
    "identity": identity,
    "tiny": tiny,
}


def write(root: Path, names: list[str] | None = None, version: int = 1) -> list[Path]:
    """Write ``root/<name>/<version>/model.onnx`` for each name (default: all)."""
    written = []
    for name in names or list(BUILDERS):
        if name not in BUILDERS:
            raise KeyError(f"unknown model '{name}' (known: {', '.join(BUILDERS)})")
        path = Path(root) / name / str(version) / "model.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(BUILDERS[name](), str(path))
        written.append(path)
    return written


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: python -m scoring.model_zoo DIR [{'|'.join(BUILDERS)} ...]")
        return 0 if argv else 2
    try:
        paths = write(Path(argv[0]), argv[1:] or None)
    except KeyError as exc:
        print(exc.args[0], file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
