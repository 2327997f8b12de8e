"""Open Inference Protocol (v2) bodies <-> numpy, JSON through orjson.

Decoding is strict and every error is a ``scoring.InvalidInput`` naming the field
(``inputs[0].shape``, ``inputs[1].data``, ...) and what was expected, so the error table
answers 400. It covers the JSON tensor form (nested or flat ``data``, row-major) and the
binary tensor data extension (``Inference-Header-Content-Length``, ``binary_data_size``):
binary tensors are ``np.frombuffer`` views of the request body, no copy. Encoding writes
numeric outputs straight from numpy (orjson's numpy support, no Python floats) and
binary outputs as views joined once into the body.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from scoring import DATATYPE_TO_NUMPY, NUMPY_TO_DATATYPE, InvalidInput

_DUMPS_OPTS = orjson.OPT_SERIALIZE_NUMPY
_INT_DATATYPES = {k for k, v in DATATYPE_TO_NUMPY.items() if v.kind in "iu"}
_MAX_RANK = 64
_FLOAT_DATATYPES = frozenset(("FP16", "FP32", "FP64"))
# The smallest magnitude each narrower float type rounds to inf: half an ulp past its largest
# finite value (65504 and ~3.4028234664e38), where a tie rounds to inf. Anything smaller
# rounds to a finite value, 3.4028235e38 (how float32's maximum prints) included.
_OVERFLOWS_AT = {"FP16": 65520.0, "FP32": 3.4028235677973366e38}
_LEN = struct.Struct("<I")


@dataclass(slots=True)
class DecodedRequest:
    """A parsed v2 infer request."""

    id: str | None
    inputs: dict[str, np.ndarray]
    outputs: tuple[str, ...] | None  # None: every output
    binary_outputs: frozenset[str]  # outputs asked for as binary (``binary_data``)
    binary_default: bool  # request parameter ``binary_data_output``


def loads(body: bytes | memoryview, what: str = "body", field: str | None = None) -> Any:
    """orjson.loads with the error as InvalidInput. orjson rejects NaN/Infinity and 1e400."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"{what}: malformed JSON: {exc}", field=field or what) from None


def decode_infer_request(body: bytes, header_length: int | None = None) -> DecodedRequest:
    """Parse a v2 infer request; ``header_length`` is Inference-Header-Content-Length."""
    if header_length is None:
        doc = loads(body)
        binary_at = len(body)
    else:
        if not 0 <= header_length <= len(body):
            raise InvalidInput(
                f"Inference-Header-Content-Length: must be between 0 and the body length "
                f"{len(body)}, got {header_length}",
                field="Inference-Header-Content-Length",
            )
        # Name the header: a client that reuses its headers dict after a binary request
        # (tritonclient adds this header to the dict it is given) sends a stale length with a
        # pure-JSON body, and "malformed JSON" alone would send its user to the wrong place.
        doc = loads(
            memoryview(body)[:header_length],
            f"the inference header (the first {header_length} of {len(body)} body bytes, "
            "per Inference-Header-Content-Length)",
            field="Inference-Header-Content-Length",
        )
        binary_at = header_length
    if not isinstance(doc, dict):
        raise InvalidInput("body: must be a JSON object", field="body")

    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("id: must be a string", field="id")
    params = _parameters(doc.get("parameters"), "parameters")
    binary_default = _flag(params, "binary_data_output", "parameters.binary_data_output")

    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("inputs: must be a non-empty list of tensors", field="inputs")
    inputs: dict[str, np.ndarray] = {}
    offset = binary_at
    for i, item in enumerate(raw_inputs):
        where = f"inputs[{i}]"
        if not isinstance(item, dict):
            raise InvalidInput(f"{where}: must be an object", field=where)
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"{where}.name: must be a non-empty string", field=f"{where}.name")
        if name in inputs:
            raise InvalidInput(f"{where}.name: input '{name}' given twice", field=f"{where}.name")
        datatype = item.get("datatype")
        if datatype not in DATATYPE_TO_NUMPY:
            raise InvalidInput(
                f"{where}.datatype: must be one of {', '.join(DATATYPE_TO_NUMPY)}, got {datatype!r}",
                field=f"{where}.datatype",
            )
        shape = _shape(item.get("shape"), f"{where}.shape")
        tensor_params = _parameters(item.get("parameters"), f"{where}.parameters")
        size = tensor_params.get("binary_data_size") if tensor_params else None
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise InvalidInput(
                    f"{where}.parameters.binary_data_size: must be a non-negative integer, got {size!r}",
                    field=f"{where}.parameters.binary_data_size",
                )
            if offset + size > len(body):
                raise InvalidInput(
                    f"{where}.parameters.binary_data_size: {size} bytes announced, only "
                    f"{len(body) - offset} left in the body",
                    field=f"{where}.parameters.binary_data_size",
                )
            inputs[name] = _from_binary(body, offset, size, datatype, shape, where)
            offset += size
        else:
            if "data" not in item:
                raise InvalidInput(
                    f"{where}.data: missing (give data, or binary_data_size with a binary body)",
                    field=f"{where}.data",
                )
            inputs[name] = array_from_json(item["data"], datatype, shape, f"{where}.data")
    if offset != len(body):
        raise InvalidInput(
            f"body: {len(body) - offset} bytes of binary data not claimed by any input's "
            "binary_data_size",
            field="body",
        )

    outputs, binary_outputs = _outputs(doc.get("outputs"), binary_default)
    return DecodedRequest(request_id, inputs, outputs, binary_outputs, binary_default)


def _parameters(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{where}: must be an object", field=where)
    return value


def _flag(params: Mapping[str, Any], key: str, where: str) -> bool:
    value = params.get(key, False)
    if not isinstance(value, bool):
        raise InvalidInput(f"{where}: must be true or false, got {value!r}", field=where)
    return value


_MAX_ELEMENTS = 2**40  # per tensor; far past any memory, well inside numpy's index range


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if value.__class__ is not list or len(value) > _MAX_RANK:
        raise InvalidInput(f"{where}: must be a list of at most {_MAX_RANK} integers", field=where)
    # numpy refuses shapes whose non-zero dimensions multiply past its index range even when
    # another dimension is 0 ([2**62, 0]: a ValueError at reshape, a 500 without this check).
    elements = 1
    for dim in value:
        if dim.__class__ is not int or dim < 0:  # JSON gives exact ints; a bool's class is bool
            raise InvalidInput(
                f"{where}: dimensions must be non-negative integers, got {value!r}", field=where
            )
        if dim:
            elements *= dim
    if elements > _MAX_ELEMENTS:
        raise InvalidInput(f"{where}: {value!r} has more than {_MAX_ELEMENTS} elements", field=where)
    return tuple(value)


def _outputs(value: Any, binary_default: bool) -> tuple[tuple[str, ...] | None, frozenset[str]]:
    if value is None:
        return None, frozenset()
    if not isinstance(value, list):
        raise InvalidInput("outputs: must be a list", field="outputs")
    names: list[str] = []
    binary: set[str] = set()
    for i, item in enumerate(value):
        where = f"outputs[{i}]"
        if not isinstance(item, dict):
            raise InvalidInput(f"{where}: must be an object", field=where)
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"{where}.name: must be a non-empty string", field=f"{where}.name")
        if name in names:
            raise InvalidInput(f"{where}.name: output '{name}' asked twice", field=f"{where}.name")
        params = _parameters(item.get("parameters"), f"{where}.parameters")
        if "binary_data" in params:
            if _flag(params, "binary_data", f"{where}.parameters.binary_data"):
                binary.add(name)
        elif binary_default:
            binary.add(name)
        names.append(name)
    return tuple(names), frozenset(binary)


def _from_binary(
    body: bytes, offset: int, size: int, datatype: str, shape: tuple[int, ...], where: str
) -> np.ndarray:
    count = math.prod(shape)
    if datatype == "BYTES":
        return _bytes_from_binary(memoryview(body)[offset : offset + size], count, shape, where)
    dtype = DATATYPE_TO_NUMPY[datatype]
    if size != count * dtype.itemsize:
        raise InvalidInput(
            f"{where}.parameters.binary_data_size: shape {list(shape)} of {datatype} needs "
            f"{count * dtype.itemsize} bytes, got {size}",
            field=f"{where}.parameters.binary_data_size",
        )
    # A read-only view of the body: no copy. Little-endian on the wire, as on x86/arm.
    return np.frombuffer(body, dtype=dtype, count=count, offset=offset).reshape(shape)


def _bytes_from_binary(view: memoryview, count: int, shape: tuple[int, ...], where: str) -> np.ndarray:
    if count * 4 > len(view):
        # Checked before allocating: a shape of 2**31 elements would otherwise allocate and
        # fill 16 GiB of object pointers, on the event loop, to find out the data is short.
        raise InvalidInput(
            f"{where}: binary BYTES data of {len(view)} bytes cannot hold {count} elements (4-byte length each)",
            field=where,
        )
    out = np.empty(count, dtype=object)
    pos, end = 0, len(view)
    for i in range(count):
        if pos + 4 > end:
            raise InvalidInput(
                f"{where}: binary BYTES data ends after {i} of {count} elements", field=where
            )
        (length,) = _LEN.unpack_from(view, pos)
        pos += 4
        if pos + length > end:
            raise InvalidInput(
                f"{where}: binary BYTES element {i} announces {length} bytes past the end",
                field=where,
            )
        out[i] = bytes(view[pos : pos + length])
        pos += length
    if pos != end:
        raise InvalidInput(
            f"{where}: {end - pos} bytes left after {count} BYTES elements of shape {list(shape)}",
            field=where,
        )
    return out.reshape(shape)


def array_from_json(
    data: Any, datatype: str, shape: tuple[int, ...] | None, where: str
) -> np.ndarray:
    """A JSON value (flat or nested list) as an array of ``datatype``.

    With ``shape`` the element count must match and the data is read row-major into it;
    without (AzureML /score) the nesting gives the shape.
    """
    if not isinstance(data, list):
        raise InvalidInput(f"{where}: must be a list", field=where)
    if datatype == "BYTES":
        return _bytes_from_json(data, shape, where)
    if datatype in _FLOAT_DATATYPES:
        floats = _float_array(data, datatype, where)
        if floats is not None:
            arr, rows_shape = floats
            _check_count(shape, arr.size, where)
            return arr.reshape(shape if shape is not None else rows_shape)
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError, OverflowError):
        raise InvalidInput(f"{where}: nested lists must all have the same length", field=where) from None
    count = arr.size
    _check_count(shape, count, where)
    dtype = DATATYPE_TO_NUMPY[datatype]
    kind = arr.dtype.kind
    if count:
        if datatype == "BOOL":
            if kind != "b":
                raise InvalidInput(f"{where}: BOOL tensor takes true/false values", field=where)
        elif datatype in _INT_DATATYPES:
            if kind not in "iu":
                arr = _exact_ints(data, datatype, where)
            info = np.iinfo(dtype)
            if arr.min() < info.min or arr.max() > info.max:
                raise InvalidInput(
                    f"{where}: values must be within {datatype} range [{info.min}, {info.max}]",
                    field=where,
                )
        else:  # floating point
            if kind not in "iuf":
                raise InvalidInput(f"{where}: {datatype} tensor takes numbers only", field=where)
            # JSON has no NaN/Infinity (orjson refuses them, and 1e400), so a value is out of
            # range only when a narrowing cast would make it inf: checked before the cast
            # (two reductions; cheaper per request than an np.errstate block and a sum).
            at = _OVERFLOWS_AT.get(datatype)
            if at is not None and (kind == "f" or datatype == "FP16") and (arr.max() >= at or arr.min() <= -at):
                raise InvalidInput(f"{where}: values out of {datatype} range", field=where)
    arr = arr.astype(dtype, copy=False)
    return arr.reshape(shape) if shape is not None else arr


def _check_count(shape: tuple[int, ...] | None, count: int, where: str) -> None:
    """400 unless ``count`` values fill ``shape`` (None: the nesting gives the shape)."""
    if shape is not None and count != math.prod(shape):
        raise InvalidInput(f"{where}: shape {list(shape)} needs {math.prod(shape)} values, got {count}", field=where)


def _float_array(data: list[Any], datatype: str, where: str) -> tuple[np.ndarray, tuple[int, ...]] | None:
    """A flat or once-nested list of JSON numbers as an FP16/FP32/FP64 array (flat) and the
    shape its nesting gives, or None to hand the list to ``np.asarray``, whose checks then
    decide and name the fault.

    ``struct.pack_into`` writes the values straight into an FP32 or FP64 array: one C loop,
    no float64 intermediate and no cast (FP32, 256 values: ~5 us against ~12 us
    for ``array.array`` plus numpy's range check and cast; 2-3x cheaper than ``np.asarray``'s
    type discovery on the 8,192 floats of a 32-row ``mlp`` request). It rounds as numpy's
    cast does, and like ``np.asarray`` it refuses strings and null. A value the cast makes
    inf is 400. None is returned for a row that starts with a boolean (an all-boolean
    tensor stays refused), deeper or ragged nesting, non-numbers and integers past float64.
    """
    if datatype == "FP32":
        # Up to _STRICT_MAX values, "=" (native order, standard size), which refuses exactly
        # the values the float32 cast makes inf: no pass over the result. Past it, and for
        # anything "=" refuses, native packing, which stores such values (and ints too large
        # for "=") as inf, then one np.isinf pass: cheaper per value, dearer per call.
        first = data[0] if data else None
        if (len(data) * len(first) if first.__class__ is list else len(data)) <= _STRICT_MAX:
            try:
                return _packed(data, "=", "f", np.float32)
            except (TypeError, OverflowError, struct.error):
                pass
        try:
            packed = _packed(data, "", "f", np.float32)
        except (TypeError, OverflowError, struct.error):
            return None
        if packed is not None and _isinf(packed[0]).any():
            raise InvalidInput(f"{where}: values out of {datatype} range", field=where)
        return packed
    try:  # FP16 via float64: struct's "e" refuses large ints
        packed = _packed(data, "", "d", np.float64)
    except (TypeError, OverflowError, struct.error):
        return None
    if packed is not None and datatype == "FP16":
        arr, shape = packed
        if arr.size and _max(_abs(arr)) >= _OVERFLOWS_AT["FP16"]:
            raise InvalidInput(f"{where}: values out of {datatype} range", field=where)
        return arr.astype(np.float16), shape
    return packed


def _packed(
    data: list[Any], order: str, fmt: str, dtype: type[np.floating[Any]]
) -> tuple[np.ndarray, tuple[int, ...]] | None:
    """``data`` packed with struct format ``order`` + count + ``fmt`` into a new flat array,
    and its shape; None where the nesting is not one the packing takes. Raises what
    ``struct.pack_into`` raises for a value it refuses."""
    if data and data[0].__class__ is list:
        width = len(data[0])
        for row in data:
            if row.__class__ is not list or len(row) != width or (width and row[0].__class__ is bool):
                return None
        arr = np.empty(len(data) * width, dtype=dtype)
        if width <= _PACK_CHUNK:
            row_format, step = f"{order}{width}{fmt}", width * arr.itemsize
            for i, row in enumerate(data):
                _pack_into(row_format, arr, i * step, *row)
        else:
            for i, row in enumerate(data):
                _pack_chunks(order, fmt, arr, i * width, row)
        return arr, (len(data), width)
    if data and data[0].__class__ is bool:
        return None
    arr = np.empty(len(data), dtype=dtype)
    if len(data) <= _PACK_CHUNK:
        _pack_into(f"{order}{len(data)}{fmt}", arr, 0, *data)
    else:
        _pack_chunks(order, fmt, arr, 0, data)
    return arr, (len(data),)


# Typed loosely: numpy's stubs do not declare ndarray's buffer protocol, which pack_into uses.
_pack_into: Callable[..., None] = struct.pack_into
# pack_into takes the values as arguments, i.e. as a tuple: longer lists go in pieces of this
# many, so that a huge tensor does not need one more pointer array as long as itself.
_PACK_CHUNK = 65536
# FP32 lists of up to this many values are packed with "=" (see _float_array): it costs
# ~3.7 ns more per value than native "f", and saves np.isinf's ~3.5 us per call.
_STRICT_MAX = 1024


def _pack_chunks(order: str, fmt: str, arr: np.ndarray, first: int, values: list[Any]) -> None:
    """Pack ``values`` into ``arr`` from item ``first`` on, ``_PACK_CHUNK`` at a time."""
    for start in range(0, len(values), _PACK_CHUNK):
        part = values[start : start + _PACK_CHUNK]
        _pack_into(f"{order}{len(part)}{fmt}", arr, (first + start) * arr.itemsize, *part)


_abs = np.abs
_max = np.maximum.reduce
_isinf = np.isinf


def _exact_ints(data: list[Any], datatype: str, where: str) -> np.ndarray:
    """Slow path: numpy turned mixed ints into floats (or objects); check each value."""
    flat = _flatten(data, where)
    for value in flat:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput(
                f"{where}: {datatype} tensor takes integers only, got {value!r}", field=where
            )
    info = np.iinfo(DATATYPE_TO_NUMPY[datatype])
    if flat and (min(flat) < info.min or max(flat) > info.max):
        raise InvalidInput(
            f"{where}: values must be within {datatype} range [{info.min}, {info.max}]", field=where
        )
    return np.array(flat, dtype=DATATYPE_TO_NUMPY[datatype])


def _flatten(data: list[Any], where: str) -> list[Any]:
    """Row-major flattening without recursion (orjson allows deep nesting)."""
    out: list[Any] = []
    stack: list[Iterable[Any]] = [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            out.append(value)
        else:
            stack.pop()
    return out


def _bytes_from_json(data: list[Any], shape: tuple[int, ...] | None, where: str) -> np.ndarray:
    if shape is None:
        try:
            nested = np.array(data, dtype=object)
        except ValueError:
            raise InvalidInput(f"{where}: nested lists must all have the same length", field=where) from None
        shape = nested.shape
        flat = list(nested.reshape(-1))
        if any(isinstance(v, list) for v in flat):
            raise InvalidInput(f"{where}: nested lists must all have the same length", field=where)
    else:
        flat = _flatten(data, where)
        _check_count(shape, len(flat), where)
    out = np.empty(len(flat), dtype=object)
    for i, value in enumerate(flat):
        if not isinstance(value, str):
            raise InvalidInput(f"{where}: BYTES tensor takes strings, got {value!r}", field=where)
        out[i] = value.encode()
    return out.reshape(shape)


# --------------------------------------------------------------------------- encoding


def datatype_of(arr: np.ndarray) -> str:
    datatype = NUMPY_TO_DATATYPE.get(arr.dtype)
    if datatype is None:
        if arr.dtype.kind in "OSU":
            return "BYTES"
        raise TypeError(f"output dtype {arr.dtype} has no v2 datatype")
    return datatype


def _bytes_list(arr: np.ndarray, name: str) -> list[str]:
    out: list[str] = []
    for value in arr.reshape(-1):
        if isinstance(value, bytes):
            try:
                out.append(value.decode())
            except UnicodeDecodeError:
                raise InvalidInput(
                    f"output '{name}' holds bytes that are not UTF-8; ask for it with "
                    "parameters.binary_data=true",
                    field=f"outputs.{name}",
                ) from None
        else:
            out.append(str(value))
    return out


def _bytes_binary(arr: np.ndarray) -> bytes:
    parts: list[bytes] = []
    for value in arr.reshape(-1):
        raw = value if isinstance(value, bytes) else str(value).encode()
        parts.append(_LEN.pack(len(raw)))
        parts.append(raw)
    return b"".join(parts)


def encode_infer_response(
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: Mapping[str, np.ndarray],
    binary_outputs: frozenset[str] = frozenset(),
    binary_default: bool = False,
) -> tuple[bytes, int | None]:
    """(body, Inference-Header-Content-Length or None when the body is pure JSON)."""
    tensors: list[dict[str, Any]] = []
    blobs: list[Any] = []
    for name, arr in outputs.items():
        datatype = datatype_of(arr)
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
        if name in binary_outputs or binary_default:
            if datatype == "BYTES":
                blob: Any = _bytes_binary(arr)
                size = len(blob)
            else:
                blob = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
                size = blob.nbytes
            tensor["parameters"] = {"binary_data_size": size}
            blobs.append(blob)
        elif datatype == "BYTES":
            tensor["data"] = _bytes_list(arr, name)
        else:
            tensor["data"] = arr.ravel()  # a view when contiguous, else a C-order copy
        tensors.append(tensor)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        doc["id"] = request_id
    doc["outputs"] = tensors
    header = orjson.dumps(doc, option=_DUMPS_OPTS)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def dumps(value: Any) -> bytes:
    """JSON for /score answers and metadata: numpy arrays become nested lists."""
    return orjson.dumps(value, option=_DUMPS_OPTS, default=_default)


def _default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OSU":
            return [_default(v) if isinstance(v, (bytes, np.ndarray)) else v for v in value.tolist()]
        return np.ascontiguousarray(value).tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def tensor_specs(specs: Sequence[Any]) -> list[dict[str, Any]]:
    """Metadata form of TensorSpecs (-1 for a dynamic dimension)."""
    return [{"name": s.name, "datatype": s.datatype, "shape": list(s.shape)} for s in specs]
