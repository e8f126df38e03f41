"""Open Inference Protocol (KServe v2) REST codec: infer requests <-> ModelInput.

As MLServer does for MLflow models: with a column-based signature each column is one named
1-D input; with a tensor signature the request carries one tensor input (any name) or one input
per named tensor. Data may be flat (row-major) or nested; it is reshaped to `shape`.

Every mistake in a request is a 422 naming the input: `name`, `shape` (a list of non-negative
integers), `datatype` (a string from `DATATYPES`), `data` (a list whose values fill `shape`), and
`parameters` (an object). Values are converted by `serving.ranges`: INT8 300, UINT8 -1 or FP16
70000 are refused with the datatype's range, never wrapped or turned into inf.

Inputs may also come from the binary part of the body (`serving.binary`, the
`binary_tensor_data` extension): the HTTP layer puts them into `data` as arrays before `decode`.
Answers honour the request's `outputs` list and binary flags (`encode_answer`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from serving import binary
from serving.data import ModelInput
from serving.errors import BadRequest, InvalidInput, preview
from serving.ranges import to_dtype
from serving.signature import (
    InputSchema,
    check_params,
    describe,
    untyped_columns,
    untyped_tensor,
)

# request parameters the protocol defines, never passed to the model: the binary tensor
# extension's, and the two MLServer reserves (`mlserver.types.Parameters`): its codecs send
# `content_type` ("pd", "np", ...) on every request they build, and `headers`
PROTOCOL_PARAMETERS = frozenset({"binary_data_output", "content_type", "headers"})

# v2 datatype -> numpy dtype
DATATYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": object,
}
_COLUMN_DATATYPE = {
    "double": "FP64",
    "float": "FP32",
    "long": "INT64",
    "integer": "INT32",
    "boolean": "BOOL",
    "string": "BYTES",
    "binary": "BYTES",
    "datetime": "BYTES",
    "any": "BYTES",
}


def datatype_of(dtype: np.dtype) -> str:
    """numpy dtype -> v2 datatype name (strings and objects are BYTES)."""
    for name, np_type in DATATYPES.items():
        if np_type is not object and dtype == np.dtype(np_type):
            return name
    return "BYTES"


def _tensor(entry: Any, index: int) -> tuple[str, np.ndarray | list]:
    field = f"inputs[{index}]"
    if not isinstance(entry, dict):
        raise InvalidInput(
            f"{field} must be an object with name, shape, datatype, data", field=field
        )
    name = entry.get("name")
    shape = entry.get("shape")
    datatype = entry.get("datatype")
    data = entry.get("data")
    if not isinstance(name, str):
        raise InvalidInput(f"{field}.name must be a string", field=f"{field}.name")
    # type(), not isinstance(): JSON true is an int to Python but no dimension
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise InvalidInput(
            f"{name}: shape must be a list of non-negative integers, got {describe(shape)}",
            field=name,
        )
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise InvalidInput(
            f"{name}: datatype must be one of {', '.join(DATATYPES)}, got {describe(datatype)}",
            field=name,
        )
    if not isinstance(data, (list, np.ndarray)):  # an ndarray: cut from the binary part
        raise InvalidInput(f"{name}: data must be a list, got {describe(data)}", field=name)
    if datatype == "BYTES":
        flat = _flatten(data) if isinstance(data, list) else data.tolist()
        if len(flat) != math.prod(shape):
            raise InvalidInput(f"{name}: {len(flat)} values do not fill shape {shape}", field=name)
        return name, flat if len(shape) <= 1 else np.asarray(flat, dtype=object).reshape(shape)
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError):
        raise InvalidInput(f"{name}: ragged data", field=name) from None
    if arr.dtype.kind not in "biufO" or (
        arr.dtype == object and not all(type(v) is int for v in arr.flat)  # ints > 64 bits
    ):
        raise InvalidInput(f"{name}: datatype {datatype} needs numeric data", field=name)
    if arr.size != math.prod(shape):
        raise InvalidInput(f"{name}: {arr.size} values do not fill shape {shape}", field=name)
    want = np.dtype(DATATYPES[datatype])
    if want.kind in "iub" and arr.dtype.kind == "f" and (arr != np.trunc(arr)).any():
        raise InvalidInput(f"{name}: datatype {datatype} cannot hold fractional values", field=name)
    return name, to_dtype(arr.reshape(shape), want, name)


def _flatten(data: list) -> list:
    out: list = []
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            out.append(item)
    return out


def decode(payload: Any, schema: InputSchema | None) -> tuple[ModelInput, dict | None]:
    """Validated model input (and `parameters`) from a v2 infer request body."""
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list):
        raise InvalidInput('the body must be an object with "inputs": [...]', field="inputs")
    if not payload["inputs"]:
        raise InvalidInput("inputs must not be empty", field="inputs")
    tensors = dict(_tensor(entry, i) for i, entry in enumerate(payload["inputs"]))
    params = check_params(_model_parameters(payload.get("parameters")), schema, "parameters")
    if schema is not None and not schema.is_columns:
        if schema.single_tensor is not None:
            if len(tensors) != 1:
                raise InvalidInput("the model takes exactly one input tensor", field="inputs")
            return schema.check_tensors(next(iter(tensors.values())), next(iter(tensors))), params
        return schema.check_tensors(tensors, "inputs"), params
    if schema is None and len(tensors) == 1:
        name, value = next(iter(tensors.items()))
        if not (isinstance(value, np.ndarray) and value.ndim == 1):
            return untyped_tensor(value, name), params
    columns: dict[str, list] = {}
    for name, value in tensors.items():
        if isinstance(value, np.ndarray):
            if value.ndim == 2 and value.shape[1] == 1:
                value = value[:, 0]
            if value.ndim != 1:
                raise InvalidInput(
                    f"{name}: a column input must have shape [N] or [N, 1], "
                    f"got {list(value.shape)}",
                    field=name,
                )
            value = value.tolist()
        columns[name] = value
    lengths = {len(v) for v in columns.values()}
    if len(lengths) != 1:
        raise InvalidInput("column inputs have different lengths", field="inputs")
    rows = lengths.pop()
    if schema is None:
        return untyped_columns(columns, rows), params
    return schema.check_columns(columns, rows), params


def _model_parameters(parameters: Any) -> Any:
    """Request `parameters` less the protocol's own (they steer the answer, not the model)."""
    if not isinstance(parameters, dict) or not PROTOCOL_PARAMETERS & parameters.keys():
        return parameters
    rest = {k: v for k, v in parameters.items() if k not in PROTOCOL_PARAMETERS}
    return rest or None


def _output(name: str, value: Any) -> dict:
    arr = value if isinstance(value, np.ndarray) else np.asarray(value)
    datatype = datatype_of(arr.dtype)
    data = arr.reshape(-1)
    if datatype == "BYTES":
        data = [v if isinstance(v, (str, bytes)) else str(v) for v in data.tolist()]
    return {"name": name, "shape": list(arr.shape), "datatype": datatype, "data": data}


def encode_outputs(output: Any) -> list[dict]:
    """Model output -> v2 output tensors: one per DataFrame column / dict key, else `output-0`."""
    if hasattr(output, "columns") and hasattr(output, "iloc"):  # DataFrame
        return [_output(str(c), output[c].to_numpy()) for c in output.columns]
    if isinstance(output, dict):
        return [_output(str(k), v) for k, v in output.items()]
    if hasattr(output, "to_numpy"):  # Series
        output = output.to_numpy()
    return [_output("output-0", output)]


def encode_answer(output: Any, payload: dict) -> tuple[list[dict], list[bytes]]:
    """Output tensors the request asked for, and the binary part (empty for an all-JSON answer).

    `outputs` absent: every output, in the model's order. `outputs` given: exactly those, in that
    order; a name the model does not produce is a 400 naming it. An output goes into the binary
    part when its `parameters.binary_data` says so, else when the request parameter
    `binary_data_output` is true (what tritonclient sends when it names no outputs).
    """
    tensors = {t["name"]: t for t in encode_outputs(output)}
    parameters = payload.get("parameters")
    default = isinstance(parameters, dict) and parameters.get("binary_data_output") is True
    requested = payload.get("outputs")
    if requested is None:
        chosen = [(t, default) for t in tensors.values()]
    else:
        if not isinstance(requested, list) or not all(
            isinstance(r, dict) and isinstance(r.get("name"), str) for r in requested
        ):
            raise BadRequest('outputs must be a list of objects {"name": ...}')
        unknown = [r["name"] for r in requested if r["name"] not in tensors]
        if unknown:
            raise BadRequest(
                f"requested output(s) {preview(unknown)} do not exist; "
                f"the model's outputs are {preview(tensors)}"
            )
        chosen = [
            (tensors[r["name"]], binary.wants_binary(r.get("parameters"), default))
            for r in requested
        ]
    blobs: list[bytes] = []
    answer: list[dict] = []
    for tensor, as_binary in chosen:
        if as_binary:
            data = tensor["data"]
            arr = data if isinstance(data, np.ndarray) else np.asarray(data, dtype=object)
            blob = binary.encode_tensor(arr, tensor["datatype"])
            blobs.append(blob)
            tensor = {k: v for k, v in tensor.items() if k != "data"}
            tensor["parameters"] = {"binary_data_size": len(blob)}
        answer.append(tensor)
    return answer, blobs


def platform(flavor: str) -> str:
    """Model metadata `platform` in the protocol's `<project>_<format>` form: the project is
    MLflow, the format the model's flavor (`mlflow_sklearn`, `mlflow_pytorch`, and
    `mlflow_pyfunc` for a plain python_function model)."""
    fmt = "pyfunc" if flavor == "python_function" else flavor
    return f"mlflow_{fmt.replace('-', '_').lower()}"


def tensor_metadata(schema: InputSchema | None, prefix: str = "input") -> list[dict]:
    """`inputs` (or `outputs`) of the v2 model metadata answer, from the signature."""
    if schema is None:
        return []
    if schema.is_columns:
        return [
            {"name": c.name, "datatype": _COLUMN_DATATYPE.get(c.kind, "BYTES"), "shape": [-1]}
            for c in schema.columns
        ]
    return [
        {
            "name": t.name or f"{prefix}-{i}",
            "datatype": datatype_of(t.dtype),
            "shape": list(t.shape),
        }
        for i, t in enumerate(schema.tensors)
    ]
