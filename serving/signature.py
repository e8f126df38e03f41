"""The model's input signature, reduced to what request validation needs, and the checks.

Built once from MLflow's `ModelSignature` at load time, so the hot path never touches MLflow
objects. Every check raises `InvalidInput` (HTTP 422) naming the offending field, e.g.
`column 'age' row 3: expected long, got str 'abc'` or `inputs: expected shape (-1, 64), got (64,)`.
A required column refuses null (JSON) and empty cells (CSV); numbers and datetimes are converted
by `serving.ranges`, which refuses a value the model's dtype would change; binary columns take
standard base64, with or without the line breaks MLflow writes into input examples; `params` are
checked against the signature's parameter types (MLflow re-checks them; what it refuses is a 422
too, see `runner`).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving.data import Columns, Tensors
from serving.errors import InvalidInput, preview
from serving.ranges import to_datetimes, to_dtype

# MLflow column type -> numpy dtype the model receives (None: values are passed through as-is).
_COLUMN_DTYPES: dict[str, Any] = {
    "double": np.float64,
    "float": np.float32,
    "long": np.int64,
    "integer": np.int32,
    "boolean": np.bool_,
    "string": None,
    "binary": None,
    "datetime": "datetime64[ns]",
    "any": None,
}
_FLOAT_KINDS = {"double", "float"}
_INT_KINDS = {"long", "integer"}
# numpy dtype kinds a JSON array may have for a tensor of a given dtype kind
_TENSOR_ACCEPTS = {"f": "iuf", "c": "iufc", "i": "iu", "u": "iu", "b": "b", "U": "US", "S": "US"}
# JSON types a scalar parameter of an MLflow type may have (values are range-checked as well)
_PARAM_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "long": (int,),
    "float": (int, float),
    "double": (int, float),
    "datetime": (str,),
}
# `params` nest at most this deep (MLflow params are scalars, 1-D lists or objects): deeper bodies
# are refused before any library walks them recursively
MAX_PARAMS_DEPTH = 32


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """One named column: MLflow type name (`double`, `long`, ..., `any`) and whether required."""

    name: str
    kind: str
    required: bool = True


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """One inference parameter: MLflow type name (`double`, ..., `object`), scalar or 1-D list."""

    name: str
    kind: str
    is_list: bool = False


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One tensor: optional name, numpy dtype and shape with -1 for free dimensions."""

    name: str | None
    dtype: np.dtype
    shape: tuple[int, ...]


def describe(value: Any) -> str:
    """`type repr` of a request value, cut to 40 characters: what error messages quote."""
    text = repr(value)
    return f"{type(value).__name__} {text[:40] + '...' if len(text) > 40 else text}"


@dataclass(frozen=True, slots=True)
class InputSchema:
    """Column-based (`columns`) or tensor-based (`tensors`) signature; exactly one is set."""

    columns: tuple[ColumnSpec, ...] = ()
    tensors: tuple[TensorSpec, ...] = ()
    params: tuple[ParamSpec, ...] = ()

    @property
    def is_columns(self) -> bool:
        return bool(self.columns)

    @property
    def single_tensor(self) -> TensorSpec | None:
        """The spec of a signature made of one unnamed tensor (the PyTorch fast path's case)."""
        if len(self.tensors) == 1 and self.tensors[0].name is None:
            return self.tensors[0]
        return None

    @classmethod
    def from_mlflow(cls, schema: Any, params: Any = None) -> InputSchema | None:
        """Convert `ModelSignature.inputs` (an mlflow `Schema`) and `.params` (a `ParamSchema`);
        None when there are no inputs."""
        if schema is None or not schema.inputs:
            return None
        param_specs = tuple(
            ParamSpec(
                p.name,
                getattr(p.dtype, "name", None) or "object",
                tuple(p.shape or ()) == (-1,),
            )
            for p in (params.params if params is not None else ())
        )
        if schema.is_tensor_spec():
            return cls(
                tensors=tuple(
                    TensorSpec(spec.name, np.dtype(spec.type), tuple(spec.shape))
                    for spec in schema.inputs
                ),
                params=param_specs,
            )
        cols = []
        for spec in schema.inputs:
            kind = getattr(spec.type, "name", None)
            cols.append(
                ColumnSpec(
                    name=spec.name,
                    kind=kind if kind in _COLUMN_DTYPES else "any",
                    required=bool(getattr(spec, "required", True)),
                )
            )
        return cls(columns=tuple(cols), params=param_specs)

    # ----------------------------------------------------------------------------- columns
    def check_columns(self, data: dict[str, list], rows: int) -> Columns:
        """Validate named columns (each a list of `rows` values) and convert to model dtypes."""
        if rows == 0:
            raise InvalidInput("input has no rows", field=None)
        known = {c.name for c in self.columns}
        unknown = [name for name in data if name not in known]
        if unknown:
            raise InvalidInput(
                f"unknown column(s) {preview(unknown)}; "
                f"the model expects {preview(c.name for c in self.columns)}",
                field=unknown[0],
            )
        missing = [c.name for c in self.columns if c.required and c.name not in data]
        if missing:
            raise InvalidInput(f"missing required column(s) {preview(missing)}", field=missing[0])
        out = {c.name: _convert_column(c, data[c.name]) for c in self.columns if c.name in data}
        return Columns(out, rows)

    # ----------------------------------------------------------------------------- tensors
    def check_tensors(self, value: Any, field: str) -> Tensors:
        """Validate a single array, or a dict of named arrays, against the tensor specs."""
        single = self.single_tensor
        if single is not None:
            if isinstance(value, dict) and len(value) == 1:
                value = next(iter(value.values()))
            arr = _to_array(value, single, field)
            return Tensors({None: arr}, arr.shape[0])
        if not isinstance(value, dict):
            names = ", ".join(str(t.name) for t in self.tensors)
            raise InvalidInput(
                f"{field}: the model takes named tensors ({names}); send an object "
                "{name: nested list}",
                field=field,
            )
        specs = {t.name: t for t in self.tensors}
        unknown = [k for k in value if k not in specs]
        if unknown:
            raise InvalidInput(
                f"unknown input(s) {preview(unknown)}; the model expects {preview(specs)}",
                field=str(unknown[0]),
            )
        missing = [k for k in specs if k not in value]
        if missing:
            raise InvalidInput(f"missing input(s) {preview(missing)}", field=str(missing[0]))
        arrays = {k: _to_array(value[k], specs[k], str(k)) for k in specs}
        rows = {a.shape[0] for a in arrays.values()}
        if len(rows) != 1:
            raise InvalidInput(f"{field}: named inputs have different row counts", field=field)
        return Tensors(arrays, rows.pop())  # type: ignore[arg-type]


def _bad_value(spec: ColumnSpec, values: list, accept) -> InvalidInput:
    for i, v in enumerate(values):
        if not accept(v):
            return InvalidInput(
                f"column '{spec.name}' row {i}: expected {spec.kind}, got {describe(v)}",
                field=spec.name,
            )
    return InvalidInput(f"column '{spec.name}': invalid values", field=spec.name)


def _convert_column(spec: ColumnSpec, values: list) -> Any:
    """Check every value's JSON type against the column type; return the model-ready column."""
    kind = spec.kind
    if not isinstance(values, list):
        values = [values]
    if kind == "any":
        return values
    label = f"column '{spec.name}'"
    if None in values:
        if spec.required:
            row = values.index(None)
            raise InvalidInput(
                f"{label} row {row}: a value is required (null or an empty CSV cell); "
                f"the model's signature marks the column as required",
                field=spec.name,
            )
        if kind in _FLOAT_KINDS:  # JSON has no NaN: null is the missing value
            return _convert_column(spec, [np.nan if v is None else v for v in values])
        # optional column with gaps: its values are checked, pandas/pyfunc decide how to hold them
        _convert_column(ColumnSpec(spec.name, kind), [v for v in values if v is not None])
        return values
    types = set(map(type, values))
    if kind in _FLOAT_KINDS:
        if not types <= {float, int}:
            raise _bad_value(spec, values, lambda v: type(v) in (float, int))
        return to_dtype(values, _COLUMN_DTYPES[kind], spec.name, label=label)
    if kind in _INT_KINDS:
        if not types <= {int} and (
            not types <= {int, float} or not all(type(v) is int or v.is_integer() for v in values)
        ):
            raise _bad_value(
                spec, values, lambda v: type(v) is int or (type(v) is float and v.is_integer())
            )
        return to_dtype(values, _COLUMN_DTYPES[kind], spec.name, label=label)
    if kind == "boolean":
        if types <= {bool}:
            return np.asarray(values, dtype=np.bool_)
        raise _bad_value(spec, values, lambda v: type(v) is bool)
    if kind == "string":
        if types <= {str}:
            return values
        raise _bad_value(spec, values, lambda v: type(v) is str)
    if kind == "binary":
        if not types <= {str, bytes}:
            raise _bad_value(spec, values, lambda v: type(v) in (str, bytes))
        try:
            return [v if type(v) is bytes else _base64(v) for v in values]
        except (binascii.Error, ValueError):
            raise InvalidInput(
                f"{label}: binary values must be base64 strings", field=spec.name
            ) from None
    if kind == "datetime":
        if not types <= {str}:
            raise _bad_value(spec, values, lambda v: type(v) is str)
        return to_datetimes(values, spec.name, label=label)
    return values


def _base64(text: str) -> bytes:
    """Standard base64, line breaks allowed: MLflow writes examples with base64.encodebytes."""
    return base64.b64decode("".join(text.split()), validate=True)


def _to_array(value: Any, spec: TensorSpec, field: str) -> np.ndarray:
    """Nested list -> C-contiguous array of the spec's dtype, or InvalidInput naming `field`."""
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError):
        arr = None
    shape = "(" + ", ".join(map(str, spec.shape)) + ")"
    if arr is None or arr.dtype == object:
        raise InvalidInput(
            f"{field}: expected a nested list of numbers of shape {shape} (ragged or mixed input)",
            field=field,
        )
    if arr.dtype.kind not in _TENSOR_ACCEPTS.get(spec.dtype.kind, arr.dtype.kind):
        raise InvalidInput(
            f"{field}: expected {spec.dtype.name} values, got {arr.dtype.name}", field=field
        )
    if arr.ndim != len(spec.shape) or any(
        want not in (-1, got) for want, got in zip(spec.shape, arr.shape, strict=True)
    ):
        hint = " (wrap a single row in a list)" if arr.ndim == len(spec.shape) - 1 else ""
        raise InvalidInput(
            f"{field}: expected shape {shape}, got {tuple(arr.shape)}{hint}", field=field
        )
    if arr.shape[0] == 0:
        raise InvalidInput(f"{field}: input has no rows", field=field)
    if spec.dtype.kind in "biufc":
        return to_dtype(arr, spec.dtype, field)
    return np.ascontiguousarray(arr, dtype=spec.dtype)


def untyped_columns(data: dict[str, list], rows: int) -> Columns:
    """Columns of a model without a signature: values pass through, typed by numpy/pandas."""
    if rows == 0:
        raise InvalidInput("input has no rows")
    return Columns(dict(data), rows)


def untyped_tensor(value: Any, field: str) -> Tensors:
    """Array input of a model without a signature."""
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError):
        raise InvalidInput(f"{field}: ragged nested list", field=field) from None
    if arr.ndim == 0 or arr.shape[0] == 0:
        raise InvalidInput(f"{field}: expected a non-empty list", field=field)
    return Tensors({None: arr}, arr.shape[0])


def check_params(params: Any, schema: InputSchema | None, field: str = "params") -> dict | None:
    """`params` (v1) / `parameters` (v2) as given, after checking what can be checked here.

    An object or absent; nested at most `MAX_PARAMS_DEPTH` deep; a parameter the signature
    declares has its JSON type (a scalar, or a list of scalars for shape (-1,)) and range. Unknown
    names pass: MLflow ignores them with a warning, as its own scoring server does.
    """
    if params is None:
        return None
    if not isinstance(params, dict):
        raise InvalidInput(
            f"{field} must be an object {{name: value}}, got {describe(params)}", field=field
        )
    specs = {p.name: p for p in schema.params} if schema is not None else {}
    for name, value in params.items():
        _check_depth(value, f"{field}.{name}")
        spec = specs.get(name)
        if spec is not None and spec.kind in _PARAM_TYPES:
            _check_param(spec, value, f"{field}.{name}")
    return params


def _check_depth(value: Any, field: str) -> None:
    """Iteratively (a recursive walk is what deep nesting breaks): at most MAX_PARAMS_DEPTH."""
    if not isinstance(value, (dict, list)):
        return
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_PARAMS_DEPTH:
            raise InvalidInput(
                f"{field}: nested more than {MAX_PARAMS_DEPTH} levels deep", field=field
            )
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))


def _check_param(spec: ParamSpec, value: Any, field: str) -> None:
    accepted = _PARAM_TYPES[spec.kind]
    values = value if spec.is_list and isinstance(value, list) else [value]
    want = f"a list of {spec.kind} values" if spec.is_list else f"a {spec.kind} value"

    def ok(v: Any) -> bool:  # bool is an int in Python, never a number in a signature
        return (
            type(v) is bool
            if spec.kind == "boolean"
            else isinstance(v, accepted) and (type(v) is not bool)
        )

    if (spec.is_list and not isinstance(value, list)) or not all(map(ok, values)):
        raise InvalidInput(f"{field}: expected {want}, got {describe(value)}", field=field)
    if spec.kind in _FLOAT_KINDS or spec.kind in _INT_KINDS:
        to_dtype(values, _COLUMN_DTYPES[spec.kind], field)
    elif spec.kind == "datetime":
        to_datetimes(values, field)
