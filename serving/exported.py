"""Run a `torch.export` archive (`model.pt2`) of plain ATen calls without `torch.export.load`.

Why: `torch.export.load` imports `torch._export.serde`, which imports torch._dynamo, inductor,
sympy and networkx (~1,200 modules: 1.5-4.5 s and ~90 MB on this project's machines) to rebuild
a graph that, for the models MLflow users export (MLPs and the like), is a short list of
`torch.ops.aten.*` calls on the weights and one input tensor. This module reads the archive's
JSON graph and raw weights and calls those ops in order.

Contract: `load(path)` returns an `nn.Module` (so `.to(device)` works) whose `forward(x)` gives
what the exported program's `module()(x)` gives, or raises `Unsupported` when the archive holds
anything outside the subset below; the caller then uses `torch.export.load`. Supported: archive
format `pt2`, serde schema major version 8, one model, weights stored raw (not pickled), no
constants, parameters and persistent buffers plus exactly one user input and one user output
tensor, nodes calling `torch.ops.aten.<op>.<overload>` with tensor / scalar / list / dtype /
layout / device / memory-format arguments and tensor outputs. Symbolic sizes (`as_sym_int`),
higher-order ops, custom objects and the like are not supported. The exported program's input
guards are not re-checked here: the server validates shape and dtype against the model's
signature before any call.
"""

from __future__ import annotations

import json
import keyword
import zipfile
from pathlib import Path
from typing import Any

import torch

_SCHEMA_MAJOR = 8
# torch/_export/serde/schema.py ScalarType, Layout, MemoryFormat (stable numbering)
_DTYPES = {
    1: torch.uint8,
    2: torch.int8,
    3: torch.int16,
    4: torch.int32,
    5: torch.int64,
    6: torch.float16,
    7: torch.float32,
    8: torch.float64,
    9: torch.complex32,
    10: torch.complex64,
    11: torch.complex128,
    12: torch.bool,
    13: torch.bfloat16,
}
_LAYOUTS = {7: torch.strided}
_MEMORY_FORMATS = {
    1: torch.contiguous_format,
    2: torch.channels_last,
    3: torch.channels_last_3d,
    4: torch.preserve_format,
}
_SCALARS = ("as_int", "as_float", "as_bool", "as_string")
_SCALAR_LISTS = ("as_ints", "as_floats", "as_bools", "as_strings")


class Unsupported(Exception):
    """The archive uses something this interpreter does not run (use torch.export.load)."""


class ExportedGraph(torch.nn.Module):
    """The archive's graph, interpreted: weights as buffers, nodes as (op, args, kwargs, outs)."""

    def __init__(
        self,
        weights: dict[str, torch.Tensor],
        input_name: str,
        output_name: str,
        nodes: list[tuple[Any, list, dict, list[str]]],
    ) -> None:
        super().__init__()
        self._names: dict[str, str] = {}
        for i, (graph_name, tensor) in enumerate(weights.items()):
            self.register_buffer(f"w{i}", tensor)
            self._names[graph_name] = f"w{i}"
        self._input = input_name
        self._output = output_name
        self._nodes = nodes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env: dict[str, Any] = {g: getattr(self, b) for g, b in self._names.items()}
        env[self._input] = x
        for op, args, kwargs, outs in self._nodes:
            result = op(
                *[_bind(a, env) for a in args], **{k: _bind(v, env) for k, v in kwargs.items()}
            )
            if len(outs) == 1:
                env[outs[0]] = result
            else:
                for name, value in zip(outs, result, strict=True):
                    env[name] = value
        return env[self._output]


class _Ref(str):
    """A tensor argument: the name of a value computed earlier (or a weight, or the input)."""


def _bind(arg: Any, env: dict[str, Any]) -> Any:
    if isinstance(arg, _Ref):
        return env[arg]
    if isinstance(arg, list) and arg and isinstance(arg[0], _Ref | type(None)):
        return [None if a is None else env[a] for a in arg]
    return arg


def load(path: Path) -> ExportedGraph:
    """Read `path` (a .pt2 archive); `Unsupported` for anything outside the module docstring."""
    try:
        return _load(path)
    except Unsupported:
        raise
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:
        raise Unsupported(f"{type(exc).__name__}: {exc}") from exc


def _load(path: Path) -> ExportedGraph:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        root = names[0].split("/", 1)[0] + "/" if names else ""
        if archive.read(root + "archive_format").decode().strip() != "pt2":
            raise Unsupported("not a pt2 archive")
        models = [n for n in names if n.startswith(root + "models/") and n.endswith(".json")]
        if models != [root + "models/model.json"]:
            raise Unsupported(f"expected one model, found {models}")
        program = json.loads(archive.read(models[0]))
        constants = json.loads(
            archive.read(root + "data/constants/model_constants_config.json") or b"{}"
        )
        if constants.get("config"):
            raise Unsupported("the program has constants")
        config = json.loads(archive.read(root + "data/weights/model_weights_config.json"))
        raw = {
            name: _tensor(archive.read(root + "data/weights/" + entry["path_name"]), entry)
            for name, entry in config.get("config", {}).items()
        }
    if (program.get("schema_version") or {}).get("major") != _SCHEMA_MAJOR:
        raise Unsupported(f"serde schema {program.get('schema_version')}")
    graph_module = program["graph_module"]
    weights, input_name, output_name = _signature(graph_module["signature"], raw)
    graph = graph_module["graph"]
    for key in ("sym_int_values", "sym_bool_values", "sym_float_values", "custom_obj_values"):
        if graph.get(key):
            raise Unsupported(key)
    nodes = [_node(node) for node in graph["nodes"]]
    return ExportedGraph(weights, input_name, output_name, nodes).eval()


def _tensor(data: bytes, entry: dict[str, Any]) -> torch.Tensor:
    if entry.get("use_pickle"):
        raise Unsupported("pickled weights")
    meta = entry["tensor_meta"]
    dtype = _DTYPES.get(meta["dtype"])
    if dtype is None or meta.get("layout", 7) != 7:
        raise Unsupported(f"weight dtype {meta['dtype']} / layout {meta.get('layout')}")
    sizes = [_int(s) for s in meta["sizes"]]
    strides = [_int(s) for s in meta["strides"]]
    offset = _int(meta.get("storage_offset") or {"as_int": 0})
    flat = torch.frombuffer(bytearray(data), dtype=dtype) if data else torch.empty(0, dtype=dtype)
    return flat.as_strided(sizes, strides, offset)


def _int(value: dict[str, Any]) -> int:
    if set(value) != {"as_int"}:
        raise Unsupported(f"symbolic size {value}")
    return int(value["as_int"])


def _signature(sig: dict[str, Any], raw: dict[str, torch.Tensor]) -> tuple[dict, str, str]:
    weights: dict[str, torch.Tensor] = {}
    user_inputs: list[str] = []
    for spec in sig["input_specs"]:
        (kind, body), *rest = spec.items()
        if rest:
            raise Unsupported(f"input spec {spec}")
        if kind == "parameter":
            weights[body["arg"]["name"]] = raw[body["parameter_name"]]
        elif kind == "buffer" and body.get("persistent", True):
            weights[body["arg"]["name"]] = raw[body["buffer_name"]]
        elif kind == "user_input" and "as_tensor" in body["arg"]:
            user_inputs.append(body["arg"]["as_tensor"]["name"])
        else:
            raise Unsupported(f"input spec {kind}")
    outputs = [
        spec["user_output"]["arg"]["as_tensor"]["name"]
        for spec in sig["output_specs"]
        if "user_output" in spec and "as_tensor" in spec["user_output"]["arg"]
    ]
    if len(user_inputs) != 1 or len(outputs) != 1 or len(sig["output_specs"]) != 1:
        raise Unsupported("not one input tensor and one output tensor")
    return weights, user_inputs[0], outputs[0]


def _node(node: dict[str, Any]) -> tuple[Any, list, dict, list[str]]:
    target = node["target"]
    parts = target.split(".")
    if len(parts) != 5 or parts[:3] != ["torch", "ops", "aten"]:
        raise Unsupported(f"op {target}")
    try:
        op = getattr(getattr(torch.ops.aten, parts[3]), parts[4])
    except AttributeError:
        raise Unsupported(f"op {target}") from None
    given = {i["name"]: (i.get("kind"), _arg(i["arg"])) for i in node["inputs"]}
    args: list = []
    kwargs: dict[str, Any] = {}
    for schema_arg in op._schema.arguments:
        if schema_arg.name not in given:
            continue
        kind, value = given.pop(schema_arg.name)
        if kind == 1 and not kwargs:
            args.append(value)
        elif kind == 2 and not keyword.iskeyword(schema_arg.name):
            kwargs[schema_arg.name] = value
        else:
            raise Unsupported(f"argument kind {kind} for {schema_arg.name} of {target}")
    if given:
        raise Unsupported(f"arguments {sorted(given)} not in the schema of {target}")
    outs: list[str] = []
    for out in node["outputs"]:
        if "as_tensor" in out:
            outs.append(out["as_tensor"]["name"])
        elif "as_tensors" in out and len(node["outputs"]) == 1:
            outs.extend(t["name"] for t in out["as_tensors"])
        else:
            raise Unsupported(f"output {out} of {target}")
    if not outs:
        raise Unsupported(f"{target} has no tensor output")
    return op, args, kwargs, outs


def _arg(arg: dict[str, Any]) -> Any:
    if len(arg) != 1:
        raise Unsupported(f"argument {arg}")
    ((kind, value),) = arg.items()
    if kind == "as_tensor":
        return _Ref(value["name"])
    if kind == "as_none":
        return None
    if kind in _SCALARS:
        if kind == "as_float" and not isinstance(value, int | float):
            raise Unsupported(f"float {value!r}")
        return value
    if kind in _SCALAR_LISTS:
        if kind == "as_floats" and not all(isinstance(v, int | float) for v in value):
            raise Unsupported(f"floats {value!r}")
        return list(value)
    if kind == "as_tensors":
        return [_Ref(t["name"]) for t in value]
    if kind == "as_optional_tensor":
        return _optional(value)
    if kind == "as_optional_tensors":
        return [_optional(v) for v in value]
    if kind == "as_scalar_type" and value in _DTYPES:
        return _DTYPES[value]
    if kind == "as_layout" and value in _LAYOUTS:
        return _LAYOUTS[value]
    if kind == "as_memory_format" and value in _MEMORY_FORMATS:
        return _MEMORY_FORMATS[value]
    if kind == "as_device":
        return torch.device(value["type"], value.get("index"))
    raise Unsupported(f"argument kind {kind}")


def _optional(value: dict[str, Any]) -> _Ref | None:
    if "as_tensor" in value:
        return _Ref(value["as_tensor"]["name"])
    if "as_none" in value:
        return None
    raise Unsupported(f"optional tensor {value}")
