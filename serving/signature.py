"""The model's input signature, reduced to what request validation needs, and the checks.

Built once from MLflow's `ModelSignature` at load time, so the hot path never touches MLflow
objects. Every check raises `InvalidInput` (HTTP 422) naming the offending field, e.g.
`column 'age' row 3: expected long, got str 'abc'` or `inputs: expected shape (-1, 64), got (64,)`.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving.data import Columns, Tensors
from serving.errors import InvalidInput

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


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """One named column: MLflow type name (`double`, `long`, ..., `any`) and whether required."""

    name: str
    kind: str
    required: bool = True


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One tensor: optional name, numpy dtype and shape with -1 for free dimensions."""

    name: str | None
    dtype: np.dtype
    shape: tuple[int, ...]


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40] + '...' if len(text) > 40 else text}"


@dataclass(frozen=True, slots=True)
class InputSchema:
    """Column-based (`columns`) or tensor-based (`tensors`) signature; exactly one is set."""

    columns: tuple[ColumnSpec, ...] = ()
    tensors: tuple[TensorSpec, ...] = ()

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
    def from_mlflow(cls, schema: Any) -> InputSchema | None:
        """Convert `ModelSignature.inputs` (an mlflow `Schema`); None when there is none."""
        if schema is None or not schema.inputs:
            return None
        if schema.is_tensor_spec():
            return cls(
                tensors=tuple(
                    TensorSpec(spec.name, np.dtype(spec.type), tuple(spec.shape))
                    for spec in schema.inputs
                )
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
        return cls(columns=tuple(cols))

    # ----------------------------------------------------------------------------- columns
    def check_columns(self, data: dict[str, list], rows: int) -> Columns:
        """Validate named columns (each a list of `rows` values) and convert to model dtypes."""
        if rows == 0:
            raise InvalidInput("input has no rows", field=None)
        known = {c.name for c in self.columns}
        unknown = [name for name in data if name not in known]
        if unknown:
            raise InvalidInput(
                f"unknown column(s) {', '.join(map(repr, unknown))}; "
                f"the model expects {', '.join(c.name for c in self.columns)}",
                field=unknown[0],
            )
        missing = [c.name for c in self.columns if c.required and c.name not in data]
        if missing:
            raise InvalidInput(
                f"missing required column(s) {', '.join(map(repr, missing))}", field=missing[0]
            )
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
                f"unknown input(s) {', '.join(map(repr, unknown))}; the model expects "
                f"{', '.join(map(str, specs))}",
                field=unknown[0],
            )
        missing = [k for k in specs if k not in value]
        if missing:
            raise InvalidInput(
                f"missing input(s) {', '.join(map(repr, missing))}", field=str(missing[0])
            )
        arrays = {k: _to_array(value[k], specs[k], str(k)) for k in specs}
        rows = {a.shape[0] for a in arrays.values()}
        if len(rows) != 1:
            raise InvalidInput(f"{field}: named inputs have different row counts", field=field)
        return Tensors(arrays, rows.pop())  # type: ignore[arg-type]


def _bad_value(spec: ColumnSpec, values: list, accept) -> InvalidInput:
    for i, v in enumerate(values):
        if not accept(v):
            return InvalidInput(
                f"column '{spec.name}' row {i}: expected {spec.kind}, got {_describe(v)}",
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
    types = set(map(type, values))
    if kind in _FLOAT_KINDS:
        if types <= {float, int}:
            return np.asarray(values, dtype=_COLUMN_DTYPES[kind])
        if types <= {float, int, type(None)}:  # JSON has no NaN: null is the missing value
            return np.asarray([np.nan if v is None else v for v in values], _COLUMN_DTYPES[kind])
        raise _bad_value(spec, values, lambda v: type(v) in (float, int) or v is None)
    if not spec.required and type(None) in types:
        return values  # optional column with gaps: pandas/pyfunc decide how to hold them
    if kind in _INT_KINDS:
        if not types <= {int} and (
            not types <= {int, float} or not all(float(v).is_integer() for v in values)
        ):
            raise _bad_value(
                spec, values, lambda v: type(v) is int or (type(v) is float and v.is_integer())
            )
        try:
            return np.asarray(values, dtype=_COLUMN_DTYPES[kind])
        except OverflowError:
            raise InvalidInput(
                f"column '{spec.name}': value out of range for {kind}", field=spec.name
            ) from None
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
            return [v if type(v) is bytes else base64.b64decode(v, validate=True) for v in values]
        except (binascii.Error, ValueError):
            raise InvalidInput(
                f"column '{spec.name}': binary values must be base64 strings", field=spec.name
            ) from None
    if kind == "datetime":
        if not types <= {str}:
            raise _bad_value(spec, values, lambda v: type(v) is str)
        try:
            return np.asarray(values, dtype="datetime64[ns]")
        except ValueError:
            raise InvalidInput(
                f"column '{spec.name}': datetimes must be ISO 8601 strings", field=spec.name
            ) from None
    return values


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
    if spec.dtype.kind in "iu" and arr.dtype != spec.dtype:
        info = np.iinfo(spec.dtype)
        if arr.size and (arr.min() < info.min or arr.max() > info.max):
            raise InvalidInput(f"{field}: value out of range for {spec.dtype.name}", field=field)
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
