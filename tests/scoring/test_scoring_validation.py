"""RequestValidator: the fast path agrees with the thorough one."""

from __future__ import annotations

import numpy as np
import pytest

from scoring import InferRequest, InvalidInput, TensorSpec
from scoring.batching import batch_key
from scoring.config import SessionConfig
from scoring.providers import intra_op_threads
from scoring.validation import RequestValidator

INPUTS = (TensorSpec("b", "FP32", (-1, 3)), TensorSpec("a", "INT64", (-1,)))
OUTPUTS = (TensorSpec("y", "FP32", (-1, 3)),)


def test_key_ignores_the_order_inputs_were_sent_in() -> None:
    v = RequestValidator(INPUTS, OUTPUTS, batched=True)
    a, b = np.arange(2, dtype=np.int64), np.ones((2, 3), np.float32)
    rows1, key1 = v.check(InferRequest({"a": a, "b": b}))
    rows2, key2 = v.check(InferRequest({"b": b, "a": a}))
    assert rows1 == rows2 == 2
    assert key1 == key2 == batch_key({"a": a, "b": b})


def test_ndarray_subclass_takes_the_thorough_path() -> None:
    class Sub(np.ndarray):
        pass

    v = RequestValidator(INPUTS, OUTPUTS, batched=True)
    b = np.ones((2, 3), np.float32).view(Sub)
    rows, key = v.check(InferRequest({"a": np.arange(2, dtype=np.int64), "b": b}))
    assert rows == 2 and key == batch_key({"a": np.arange(2, dtype=np.int64), "b": b})


@pytest.mark.parametrize(
    ("inputs", "field"),
    [
        ({"a": np.arange(2, dtype=np.int64), "b": np.ones((3, 3), np.float32)}, "a"),  # rows differ
        ({"a": np.arange(2, dtype=np.int64), "b": np.ones((2, 4), np.float32)}, "b"),
        ({"a": np.arange(2, dtype=np.int32), "b": np.ones((2, 3), np.float32)}, "a"),
        ({"a": [1, 2], "b": np.ones((2, 3), np.float32)}, "a"),
    ],
)
def test_errors_name_the_input(inputs: dict[str, object], field: str) -> None:
    v = RequestValidator(INPUTS, OUTPUTS, batched=True)
    with pytest.raises(InvalidInput) as info:
        v.check(InferRequest(inputs))  # type: ignore[arg-type]
    assert info.value.field == field


def test_intra_op_threads_share_the_cores() -> None:
    assert intra_op_threads(SessionConfig(), instances=2, cpus=8) == 4
    assert intra_op_threads(SessionConfig(), instances=4, cpus=2) == 1
    assert intra_op_threads(SessionConfig(intra_op_threads=3), instances=2, cpus=8) == 3
