"""server/codec.py: v2 JSON and binary tensors <-> numpy, strict validation."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson
import pytest

from scoring import InvalidInput
from server import codec


def _doc(*inputs: dict[str, Any], **extra: Any) -> bytes:
    return orjson.dumps({"inputs": list(inputs), **extra})


def _t(data: Any, shape: list[int], datatype: str = "FP32", name: str = "x", **kw: Any) -> dict[str, Any]:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data, **kw}


@pytest.mark.parametrize(
    ("datatype", "data", "expected"),
    [
        ("FP32", [1, 2.5, 3, 4], np.array([[1, 2.5], [3, 4]], np.float32)),
        ("FP16", [1, 2, 3, 4], np.array([[1, 2], [3, 4]], np.float16)),
        ("FP64", [[0.1, 0.2], [0.3, 0.4]], np.array([[0.1, 0.2], [0.3, 0.4]])),
        ("INT64", [9223372036854775807, -1, 0, 1], np.array([[2**63 - 1, -1], [0, 1]], np.int64)),
        ("UINT64", [18446744073709551615, 1, 0, 2], np.array([[2**64 - 1, 1], [0, 2]], np.uint64)),
        ("INT8", [-128, 127, 0, 1], np.array([[-128, 127], [0, 1]], np.int8)),
        ("UINT8", [[0, 255], [1, 2]], np.array([[0, 255], [1, 2]], np.uint8)),
        ("INT32", [1, 2, 3, 4], np.array([[1, 2], [3, 4]], np.int32)),
        ("BOOL", [True, False, True, True], np.array([[True, False], [True, True]])),
        ("BYTES", ["a", "bé", "", "d"], np.array([[b"a", "bé".encode()], [b"", b"d"]], dtype=object)),
    ],
)
def test_json_tensors_decode_row_major_flat_or_nested(datatype: str, data: Any, expected: np.ndarray) -> None:
    decoded = codec.decode_infer_request(_doc(_t(data, [2, 2], datatype)))
    arr = decoded.inputs["x"]
    assert arr.dtype == expected.dtype
    assert arr.shape == (2, 2)
    assert arr.tolist() == expected.tolist()


@pytest.mark.parametrize(
    "data",
    [
        [0.5, 1, -2.25, 3e38],
        [[0.5, 1], [-2.25, 3e38]],
        [1.5, True, 3, False],  # a boolean after a number: numpy made it 1.0 / 0.0, still so
        [[1, 2], [True, 4]],
        [2**63, -(2**63)],
        [],
        [[], []],
        # From 32 values on the lists are packed another way (struct); the same values come out.
        [0.25] * 36 + [1, -2.5, 3e38, True, 2**63, -(2**63)],
        [[0.5] * 36, [1] * 35 + [False]],
    ],
)
@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
def test_float_lists_decode_as_numpy_reads_them(data: list[Any], datatype: str) -> None:
    # Float tensors take a faster path than np.asarray; the values must be the same.
    expected = np.asarray(data).astype(codec.DATATYPE_TO_NUMPY[datatype])
    arr = codec.array_from_json(data, datatype, None, "x")
    assert arr.dtype == expected.dtype and arr.shape == expected.shape
    assert arr.tolist() == expected.tolist()


# FP32: "=" packing up to codec._STRICT_MAX values (1024), native packing and np.isinf past it.
@pytest.mark.parametrize("count", [4, 32, 36, 256, 1024, 1028])
@pytest.mark.parametrize(
    ("datatype", "bad"),
    [("FP32", 3.5e38), ("FP32", -3.5e38), ("FP16", 65520.0), ("FP16", -7e4)],
)
@pytest.mark.parametrize("nested", [False, True])
def test_float_values_past_the_datatype_range_are_400_at_any_size(
    count: int, datatype: str, bad: float, nested: bool
) -> None:
    limit = float(np.finfo(codec.DATATYPE_TO_NUMPY[datatype]).max)
    fine = [0.5] * (count - 2) + [limit, -limit]  # the extremes themselves are in range
    assert codec.array_from_json(fine, datatype, (count,), "x").tolist()[-2:] == [limit, -limit]
    values = fine[:-1] + [bad]
    data: list[Any] = [values[i : i + 4] for i in range(0, count, 4)] if nested else values
    with pytest.raises(InvalidInput, match=f"out of {datatype} range") as info:
        codec.array_from_json(data, datatype, (count // 4, 4), "inputs[0].data")
    assert info.value.field == "inputs[0].data"


@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64"])
@pytest.mark.parametrize("nested", [False, True])
@pytest.mark.parametrize("leading_bool", [False, True])  # True: the np.asarray path decides
@pytest.mark.parametrize("strict_max", [1024, 0])  # FP32: "=" packing, or native and np.isinf
def test_float_values_decode_as_numpy_casts_them_or_400_where_the_cast_overflows(
    monkeypatch: pytest.MonkeyPatch, datatype: str, nested: bool, leading_bool: bool, strict_max: int
) -> None:
    # Random magnitudes across the type's whole range, its rounding boundaries, denormals and
    # ints: each value alone must decode exactly as numpy casts it, or be 400 exactly where
    # that cast gives inf.
    monkeypatch.setattr(codec, "_STRICT_MAX", strict_max)
    dtype = codec.DATATYPE_TO_NUMPY[datatype]
    info = np.finfo(dtype)
    top = float(info.max)
    rng = np.random.default_rng(7)
    values: list[Any] = [float(v) for v in rng.uniform(-1, 1, 200) * 10.0 ** rng.uniform(-50, 40, 200)]
    values += [top, -top, 3.4028235e38, 3.4028235677973366e38, 3.4028235677973362e38, 65504.0, 65519.99,
               65520.0, -65520.0, 1e-45, 7e-46, 6e-8, 2e-8, 0.0, -0.0, 1, -7, 2**63, 2**200]  # fmt: skip
    for value in values:
        if leading_bool and isinstance(value, int) and abs(value) >= 2**63:
            continue  # that path reads ints past int64 as non-numbers (another test)
        row = [True, value] if leading_bool else [0.5, value]
        data: list[Any] = [row[:1], row[1:]] if nested else row
        shape = (2, 1) if nested else (2,)
        with np.errstate(over="ignore"):
            expected = np.asarray([1.0 if leading_bool else 0.5, value], dtype=np.float64).astype(dtype)
        if np.isinf(expected[1]):
            with pytest.raises(InvalidInput, match=f"out of {datatype} range"):
                codec.array_from_json(data, datatype, shape, "x")
        else:
            got = codec.array_from_json(data, datatype, shape, "x").reshape(-1)
            assert got.dtype == dtype and got.flags.writeable
            assert got.tobytes() == expected.tobytes(), (datatype, value)


@pytest.mark.parametrize("count", [4, 5, 6, 11])
@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64"])
def test_long_float_lists_are_packed_in_pieces_with_the_same_result(
    monkeypatch: pytest.MonkeyPatch, count: int, datatype: str
) -> None:
    monkeypatch.setattr(codec, "_PACK_CHUNK", 5)  # pieces of 5: none, exactly one, two, three
    flat = [float(v) for v in np.random.default_rng(count).uniform(-100, 100, count)]
    expected = np.asarray(flat).astype(codec.DATATYPE_TO_NUMPY[datatype])
    assert codec.array_from_json(flat, datatype, (count,), "x").tobytes() == expected.tobytes()
    nested = [flat, flat[::-1]]
    both = np.asarray(nested).astype(codec.DATATYPE_TO_NUMPY[datatype])
    assert codec.array_from_json(nested, datatype, None, "x").tobytes() == both.tobytes()
    # A bad last value is found past a piece too: out of range, or (FP64) not a number.
    bad, words = (1e300, f"out of {datatype} range") if datatype != "FP64" else ("1", "numbers only")
    with pytest.raises(InvalidInput, match=words):
        codec.array_from_json([*flat[:-1], bad], datatype, None, "x")


def test_float32_bytes_that_look_like_inf_across_two_values_are_not_inf() -> None:
    # 0.0 then a value whose low bytes are 80 7f: the bytes of +inf straddle the two values.
    straddler = struct.unpack("f", struct.pack("I", 0x3F807F80))[0]
    got = codec.array_from_json([0.0, straddler], "FP32", (2,), "x")
    assert got.tolist() == [0.0, straddler]


def test_float32_overflow_both_ways_in_one_tensor_is_400() -> None:
    # +inf and -inf together (their sum is nan), and the largest finite values summed.
    with pytest.raises(InvalidInput, match="out of FP32 range"):
        codec.array_from_json([3.5e38, -3.5e38], "FP32", (2,), "x")
    top = float(np.finfo(np.float32).max)
    assert codec.array_from_json([top] * 4, "FP32", (4,), "x").tolist() == [top] * 4


@pytest.mark.parametrize(
    ("tensor", "field", "words"),
    [
        (_t([1, 2, 3], [2, 2]), "inputs[0].data", "needs 4 values, got 3"),
        (_t([1, 2, 3, 4], [2, -2]), "inputs[0].shape", "non-negative"),
        (_t([1, 2], "2"), "inputs[0].shape", "list"),
        (_t([1], [True]), "inputs[0].shape", None),
        (_t(["1", "2"], [2]), "inputs[0].data", "numbers only"),
        (_t(None, [2], "INT64"), "inputs[0].data", "missing"),
        (_t([1.5, 2], [2], "INT32"), "inputs[0].data", "integers only"),
        (_t([9223372036854775808, 1], [2], "INT64"), "inputs[0].data", "INT64 range"),
        (_t([300, 1], [2], "INT8"), "inputs[0].data", "INT8 range"),
        (_t([-1, 1], [2], "UINT8"), "inputs[0].data", "UINT8 range"),
        (_t([1e10, 1], [2], "FP16"), "inputs[0].data", "FP16 range"),
        (_t([1e300, 1], [2], "FP32"), "inputs[0].data", "FP32 range"),
        (_t([1, 0], [2], "BOOL"), "inputs[0].data", "true/false"),
        (_t([1, 2], [2], "BYTES"), "inputs[0].data", "strings"),
        (_t([[1, 2], [3]], [3], "FP32"), "inputs[0].data", "same length"),
        (_t([None, 1], [2], "FP32"), "inputs[0].data", "numbers only"),
        (_t([True, False], [2], "FP32"), "inputs[0].data", "numbers only"),
        (_t([[1, "2"], [3, 4]], [2, 2], "FP32"), "inputs[0].data", "numbers only"),
        (_t([[1, 2], [3, None]], [2, 2], "FP64"), "inputs[0].data", "numbers only"),
        (_t([0.5] * 35 + ["1"], [36]), "inputs[0].data", "numbers only"),
        (_t([[0.5] * 36, [0.5] * 35 + [None]], [2, 36], "FP64"), "inputs[0].data", "numbers only"),
        (_t([[1, 2], [3, [4]]], [2, 2], "FP32"), "inputs[0].data", "same length"),
        (_t([[1, 2], {"a": 1, "b": 2}], [2, 2], "FP32"), "inputs[0].data", None),
        (_t([[1, 2], "ab"], [2, 2], "FP32"), "inputs[0].data", None),
        (_t([1, 2], [2], "FLOAT"), "inputs[0].datatype", "one of"),
        ({"shape": [1], "datatype": "FP32", "data": [1]}, "inputs[0].name", "name"),
        (_t(5, [1]), "inputs[0].data", "list"),
    ],
)
def test_bad_tensors_name_the_field(tensor: dict[str, Any], field: str, words: str | None) -> None:
    if tensor.get("data", 0) is None:
        tensor = {k: v for k, v in tensor.items() if k != "data"}
    with pytest.raises(InvalidInput) as info:
        codec.decode_infer_request(_doc(tensor))
    assert info.value.field == field
    assert str(info.value).startswith(field)
    if words:
        assert words in str(info.value)


@pytest.mark.parametrize(
    "body",
    [b"{", b"[1]", b'{"inputs": []}', b'{"inputs": {}}', b"[NaN]", b'{"inputs": [{"name":"x","shape":[1],"datatype":"FP32","data":[NaN]}]}',
     b'{"inputs": [{"name":"x","shape":[1],"datatype":"FP32","data":[Infinity]}]}',
     b'{"inputs": [{"name":"x","shape":[1],"datatype":"FP64","data":[1e400]}]}', b"", b"\xff\xfe"],
)
def test_malformed_bodies_are_invalid_input(body: bytes) -> None:
    with pytest.raises(InvalidInput):
        codec.decode_infer_request(body)


def test_duplicate_inputs_and_outputs_rejected() -> None:
    with pytest.raises(InvalidInput, match="given twice"):
        codec.decode_infer_request(_doc(_t([1], [1]), _t([1], [1])))
    with pytest.raises(InvalidInput, match="asked twice"):
        codec.decode_infer_request(_doc(_t([1], [1]), outputs=[{"name": "y"}, {"name": "y"}]))


def test_request_id_parameters_and_output_selection() -> None:
    decoded = codec.decode_infer_request(
        _doc(
            _t([1], [1]),
            id="req-7",
            parameters={"binary_data_output": True},
            outputs=[{"name": "a", "parameters": {"binary_data": False}}, {"name": "b"}],
        )
    )
    assert decoded.id == "req-7"
    assert decoded.outputs == ("a", "b")
    assert decoded.binary_outputs == frozenset({"b"})
    with pytest.raises(InvalidInput, match="parameters.binary_data_output"):
        codec.decode_infer_request(_doc(_t([1], [1]), parameters={"binary_data_output": "yes"}))


def _binary_request(tensors: list[tuple[dict[str, Any], bytes]]) -> tuple[bytes, int]:
    header = orjson.dumps({"inputs": [t for t, _ in tensors]})
    return header + b"".join(raw for _, raw in tensors), len(header)


def test_binary_inputs_are_zero_copy_views_of_the_body() -> None:
    x = np.arange(6, dtype=np.float16).reshape(2, 3)
    ids = np.array([1, -2], dtype=np.int64)
    words = [b"ab", b"", b"\xff"]
    packed = b"".join(struct.pack("<I", len(w)) + w for w in words)
    body, header_length = _binary_request(
        [
            ({"name": "x", "shape": [2, 3], "datatype": "FP16", "parameters": {"binary_data_size": x.nbytes}}, x.tobytes()),
            ({"name": "ids", "shape": [2], "datatype": "INT64", "parameters": {"binary_data_size": 16}}, ids.tobytes()),
            ({"name": "w", "shape": [3], "datatype": "BYTES", "parameters": {"binary_data_size": len(packed)}}, packed),
        ]
    )
    decoded = codec.decode_infer_request(body, header_length)
    assert np.array_equal(decoded.inputs["x"], x)
    assert np.shares_memory(decoded.inputs["x"], np.frombuffer(body, np.uint8))
    assert decoded.inputs["ids"].tolist() == [1, -2]
    assert decoded.inputs["w"].tolist() == words


@pytest.mark.parametrize(
    ("size", "extra", "match"),
    [(12, b"", "needs 16 bytes"), (16, b"\x00", "not claimed"), (20, b"", "left in the body")],
)
def test_binary_size_mismatches_are_400(size: int, extra: bytes, match: str) -> None:
    body, header_length = _binary_request(
        [({"name": "x", "shape": [4], "datatype": "FP32", "parameters": {"binary_data_size": size}}, bytes(16) + extra)]
    )
    with pytest.raises(InvalidInput, match=match):
        codec.decode_infer_request(body, header_length)


def test_a_stale_header_length_on_a_json_body_names_the_header() -> None:
    # tritonclient writes Inference-Header-Content-Length into the headers dict it is given,
    # so a caller reusing that dict sends the last binary request's length with pure JSON.
    body = orjson.dumps({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]}]})
    with pytest.raises(InvalidInput) as info:
        codec.decode_infer_request(body, 20)
    assert info.value.field == "Inference-Header-Content-Length"
    assert f"the first 20 of {len(body)} body bytes, per Inference-Header-Content-Length" in str(info.value)


def test_header_length_past_the_body_is_400() -> None:
    with pytest.raises(InvalidInput, match="Inference-Header-Content-Length"):
        codec.decode_infer_request(b"{}", 10)


def test_encode_json_and_binary_outputs() -> None:
    outputs = {
        "y": np.array([[1.5, 2.0]], np.float32),
        "n": np.array([3], np.int64),
        "s": np.array([b"hi", b"yo"], dtype=object),
    }
    body, header_length = codec.encode_infer_response("m", "1", "id-1", outputs)
    assert header_length is None
    doc = orjson.loads(body)
    assert doc["id"] == "id-1" and doc["model_version"] == "1"
    assert doc["outputs"][0] == {"name": "y", "datatype": "FP32", "shape": [1, 2], "data": [1.5, 2.0]}
    assert doc["outputs"][2]["data"] == ["hi", "yo"]

    body, header_length = codec.encode_infer_response("m", "1", None, outputs, frozenset({"y", "s"}))
    assert header_length is not None
    doc = orjson.loads(body[:header_length])
    assert "id" not in doc
    y_size = doc["outputs"][0]["parameters"]["binary_data_size"]
    assert y_size == 8
    assert np.frombuffer(body[header_length : header_length + 8], np.float32).tolist() == [1.5, 2.0]
    assert doc["outputs"][1]["data"] == [3]
    assert body[header_length + 8 :] == struct.pack("<I", 2) + b"hi" + struct.pack("<I", 2) + b"yo"


@pytest.mark.parametrize("view", ["transposed", "strided", "fortran", "scalar", "row slice"])
@pytest.mark.parametrize("binary", [False, True])
def test_outputs_that_are_not_c_contiguous_encode_row_major(view: str, binary: bool) -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    arr = {"transposed": a.T, "strided": a[:, ::2], "fortran": np.asfortranarray(a),
           "scalar": np.float32(3) * np.ones((), np.float32), "row slice": a[1:]}[view]  # fmt: skip
    body, header_len = codec.encode_infer_response("m", "1", None, {"y": arr}, binary_default=binary)
    tensor = orjson.loads(body[:header_len])["outputs"][0]
    assert tensor["shape"] == list(arr.shape)
    values = np.frombuffer(body[header_len:], np.float32).tolist() if binary else tensor["data"]
    assert values == arr.reshape(-1).tolist()


def test_non_utf8_bytes_output_must_be_asked_binary() -> None:
    with pytest.raises(InvalidInput, match="binary_data"):
        codec.encode_infer_response("m", "1", None, {"s": np.array([b"\xff"], dtype=object)})


def test_array_from_json_without_shape_takes_the_nesting() -> None:
    arr = codec.array_from_json([[1, 2], [3, 4]], "FP32", None, "data")
    assert arr.shape == (2, 2) and arr.dtype == np.float32
    words = codec.array_from_json([["a"], ["b"]], "BYTES", None, "data")
    assert words.shape == (2, 1) and words[1, 0] == b"b"
    with pytest.raises(InvalidInput):
        codec.array_from_json([["a"], ["b", "c"]], "BYTES", None, "data")
