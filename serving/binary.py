"""The Open Inference Protocol's binary tensor data extension (`binary_tensor_data`).

The default of Triton's `tritonclient` and KServe's client (`set_data_from_numpy`): the body is
a JSON inference header followed by the raw tensor bytes, and the HTTP header
`Inference-Header-Content-Length` gives the size of the JSON part. An input whose data is in the
binary part says so with `parameters.binary_data_size` (its byte count) instead of `data`; the
binary part holds those inputs back to back, in the order they appear in `inputs`.

Element layout (the extension's, as Triton writes it): numeric tensors are row-major, little
endian, at the datatype's width (BOOL is one byte); BYTES tensors are a sequence of elements, each
a 4-byte little-endian length followed by that many bytes.

Answers use the same form when asked for (`binary_data_output` request parameter, or per output
`parameters.binary_data`): each such output carries `parameters.binary_data_size` and no `data`.

Every mistake is a 400 naming the input: a byte count that does not match the shape and datatype
is a malformed body, not a value the model refused.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np

from serving.errors import BadRequest

HEADER = "inference-header-content-length"  # HTTP headers are case-insensitive
EXTENSION = "binary_tensor_data"
_LENGTH = struct.Struct("<I")

# v2 datatype -> little-endian numpy dtype of one element in the binary part
_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}


def header_length(value: str | None, body_size: int) -> int | None:
    """The JSON header's size from `Inference-Header-Content-Length` (None when absent)."""
    if value is None:
        return None
    value = value.strip()
    if not value.isdigit() or int(value) > body_size:
        raise BadRequest(
            f"Inference-Header-Content-Length must be a byte count of at most the body's "
            f"{body_size} bytes, got {value[:40]!r}"
        )
    return int(value)


def attach_inputs(payload: Any, raw: memoryview) -> None:
    """Replace the `data` of every input that has `parameters.binary_data_size` by its tensor,
    cut from `raw` (the bytes after the JSON header). The sizes must account for every byte."""
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list):
        return  # the v2 codec reports the missing `inputs` with its usual message
    offset = 0
    for index, entry in enumerate(payload["inputs"]):
        if not isinstance(entry, dict):
            continue
        params = entry.get("parameters")
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is None:
            continue
        name = entry.get("name") if isinstance(entry.get("name"), str) else f"inputs[{index}]"
        if type(size) is not int or size < 0:
            raise BadRequest(f"{name}: parameters.binary_data_size must be a byte count")
        if "data" in entry:
            raise BadRequest(f"{name}: give either data or parameters.binary_data_size, not both")
        if offset + size > len(raw):
            raise BadRequest(
                f"{name}: binary_data_size {size} goes past the end of the binary part "
                f"({len(raw)} bytes after the JSON header)"
            )
        entry["data"] = decode_tensor(raw[offset : offset + size], entry, name)
        offset += size
    if offset != len(raw):
        raise BadRequest(
            f"the binary part has {len(raw)} bytes but the inputs' binary_data_size "
            f"add up to {offset}"
        )


def decode_tensor(raw: memoryview, entry: dict, name: str) -> np.ndarray | list:
    """One input's bytes -> a flat array (numeric) or list of bytes (BYTES)."""
    datatype = entry.get("datatype")
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise BadRequest(f"{name}: shape must be a list of non-negative integers")
    count = math.prod(shape)
    if datatype == "BYTES":
        values = decode_bytes(raw, name)
        if len(values) != count:
            raise BadRequest(f"{name}: {len(values)} BYTES elements do not fill shape {shape}")
        return values
    dtype = _DTYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise BadRequest(f"{name}: datatype must be one of {', '.join(_DTYPES)}, BYTES")
    if len(raw) != count * dtype.itemsize:
        raise BadRequest(
            f"{name}: {len(raw)} bytes do not hold shape {shape} of {datatype} "
            f"({count * dtype.itemsize} bytes)"
        )
    return np.frombuffer(raw, dtype=dtype).copy()  # writable: frameworks may write in place


def decode_bytes(raw: memoryview, name: str) -> list[bytes]:
    """BYTES elements: each a 4-byte little-endian length, then that many bytes."""
    values: list[bytes] = []
    offset, end = 0, len(raw)
    while offset < end:
        if offset + 4 > end:
            raise BadRequest(f"{name}: a BYTES element's 4-byte length is cut off")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > end:
            raise BadRequest(f"{name}: a BYTES element of {length} bytes goes past its data")
        values.append(bytes(raw[offset : offset + length]))
        offset += length
    return values


def encode_tensor(arr: np.ndarray, datatype: str) -> bytes:
    """One output tensor -> its bytes in the binary part."""
    if datatype == "BYTES":
        parts: list[bytes] = []
        for value in arr.reshape(-1).tolist():
            data = value if isinstance(value, bytes) else str(value).encode()
            parts += [_LENGTH.pack(len(data)), data]
        return b"".join(parts)
    return np.ascontiguousarray(arr, dtype=_DTYPES[datatype]).tobytes()


def wants_binary(parameters: Any, default: bool) -> bool:
    """`parameters.binary_data` of a requested output, else the request-wide default."""
    if isinstance(parameters, dict) and "binary_data" in parameters:
        value = parameters["binary_data"]
        if not isinstance(value, bool):
            raise BadRequest("outputs[].parameters.binary_data must be true or false")
        return value
    return default
