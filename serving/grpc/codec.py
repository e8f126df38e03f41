"""gRPC messages <-> the data plane's v2 infer payload and answer.

An input's values come either from `raw_input_contents` (one entry per input, in order: the
layout of the binary tensor extension, decoded by `serving.binary`; what tritonclient's
`set_data_from_numpy` sends) or from its typed `contents` field for its datatype. FP16 has no
typed field, so it always travels raw. BYTES values that are valid UTF-8 become strings, as JSON
strings do over REST, except for `binary` columns of the signature, which take the bytes.
The answer is raw (`raw_output_contents`) when the request was, or when an output is FP16;
otherwise typed `contents`.

Every mistake in the message layout is a `BadRequest` naming the input; the values themselves
are then validated by `serving.v2.decode` exactly as for REST.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from serving import binary
from serving.dataplane import InferAnswer
from serving.errors import BadRequest
from serving.grpc import predict_v2_pb2 as pb
from serving.signature import InputSchema

# v2 datatype -> the InferTensorContents field holding its values (FP16: raw only)
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def parameters(params: Any) -> dict[str, Any]:
    """map<string, InferParameter> -> plain values (the oneof that is set)."""
    out: dict[str, Any] = {}
    for key, param in params.items():
        which = param.WhichOneof("parameter_choice")
        if which is not None:
            out[key] = getattr(param, which)
    return out


def _binary_columns(schema: InputSchema | None) -> set[str]:
    if schema is None or not schema.is_columns:
        return set()
    return {c.name for c in schema.columns if c.kind == "binary"}


def _text(values: list, keep_bytes: bool) -> list:
    """BYTES elements as strings where they are UTF-8 text (REST sends strings), else bytes."""
    if keep_bytes:
        return values
    out = []
    for value in values:
        try:
            out.append(value.decode() if isinstance(value, bytes) else value)
        except UnicodeDecodeError:
            out.append(value)
    return out


def request_payload(request: pb.ModelInferRequest, schema: InputSchema | None) -> dict:
    """A ModelInferRequest as the v2 payload `serving.v2.decode` validates."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise BadRequest(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs: "
            "give one per input, in order, or none"
        )
    keep = _binary_columns(schema)
    inputs: list[dict] = []
    for index, tensor in enumerate(request.inputs):
        name = tensor.name or f"inputs[{index}]"
        entry: dict[str, Any] = {
            "name": tensor.name,
            "shape": list(tensor.shape),
            "datatype": tensor.datatype,
        }
        if raw:
            if tensor.HasField("contents"):
                raise BadRequest(
                    f"{name}: give its values in contents or in raw_input_contents, not both"
                )
            data: Any = binary.decode_tensor(memoryview(raw[index]), entry, name)
        else:
            field = CONTENTS_FIELD.get(tensor.datatype)
            if field is None:
                if tensor.datatype == "FP16":
                    raise BadRequest(f"{name}: FP16 values travel in raw_input_contents only")
                field = "fp64_contents"  # an unknown datatype: v2.decode names the valid ones
            data = list(getattr(tensor.contents, field))
        if tensor.datatype == "BYTES":
            data = _text(list(data), tensor.name in keep)
        entry["data"] = data
        inputs.append(entry)
    payload: dict[str, Any] = {
        "model_name": request.model_name,
        "model_version": request.model_version or None,
        "inputs": inputs,
        "parameters": parameters(request.parameters) or None,
    }
    if request.id:
        payload["id"] = request.id
    if request.outputs:
        payload["outputs"] = [{"name": o.name} for o in request.outputs]
    return payload


def wants_raw(request: pb.ModelInferRequest) -> bool:
    return len(request.raw_input_contents) > 0


def response(answer: InferAnswer) -> pb.ModelInferResponse:
    """The data plane's answer as a ModelInferResponse (raw when its outputs are binary)."""
    message = pb.ModelInferResponse(
        model_name=answer.model.name, model_version=answer.model.version, id=answer.request_id
    )
    raw = bool(answer.blobs) or any(t["datatype"] == "FP16" and "data" in t for t in answer.outputs)
    blobs = iter(answer.blobs)
    for tensor in answer.outputs:
        datatype = tensor["datatype"]
        out = message.outputs.add(name=tensor["name"], datatype=datatype, shape=tensor["shape"])
        data = tensor.get("data")
        if raw:
            if data is None:
                message.raw_output_contents.append(next(blobs))
            else:  # FP16 beside typed outputs: the whole answer goes raw
                arr = np.asarray(data, dtype=object if datatype == "BYTES" else None)
                message.raw_output_contents.append(binary.encode_tensor(arr, datatype))
        elif datatype == "BYTES":
            values = [v if isinstance(v, bytes) else str(v).encode() for v in data]
            out.contents.bytes_contents.extend(values)
        else:
            values = np.asarray(data).reshape(-1).tolist()
            getattr(out.contents, CONTENTS_FIELD[datatype]).extend(values)
    return message
