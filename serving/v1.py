"""MLflow scoring formats (`/invocations`) and ztml's `/predict`: JSON (and CSV) <-> ModelInput.

Accepted bodies, exactly one format key per request, plus optional `params`:

* `{"dataframe_split": {"columns": [...], "data": [[...], ...]}}`
* `{"dataframe_records": [{"col": value, ...}, ...]}`
* `{"instances": ...}` / `{"inputs": ...}`: a nested list (tensor signature), a list of records
  or a columns object `{"col": [values]}` (column signature), or `{name: array}` (named tensors).
* `text/csv` on /invocations (header row = column names; an empty cell is a missing value,
  like JSON null).
* `application/vnd.apache.parquet` on /invocations (a DataFrame, as MLflow 3.17 reads it).

Answers are MLflow-shaped: `{"predictions": ...}` with DataFrames as records.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from serving.data import Columns, ModelInput
from serving.errors import InvalidInput, UnsupportedMediaType, preview
from serving.signature import InputSchema, check_params, untyped_columns, untyped_tensor

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_ALLOWED_KEYS = {*FORMATS, "params"}


def decode(payload: Any, schema: InputSchema | None) -> tuple[ModelInput, dict | None]:
    """Turn a parsed JSON body into a validated model input and the optional `params`."""
    if not isinstance(payload, dict):
        raise InvalidInput(
            f"the body must be a JSON object with one of the keys {', '.join(FORMATS)}"
        )
    keys = [k for k in FORMATS if k in payload]
    if len(keys) != 1:
        raise InvalidInput(
            f"the body must have exactly one of the keys {', '.join(FORMATS)}"
            + (f", got {', '.join(keys)}" if keys else ""),
            field=keys[1] if len(keys) > 1 else None,
        )
    extra = [k for k in payload if k not in _ALLOWED_KEYS]
    if extra:
        raise InvalidInput(f"unknown key(s) {preview(extra)} in the body", field=str(extra[0]))
    params = check_params(payload.get("params"), schema, "params")
    fmt = keys[0]
    value = payload[fmt]
    if fmt == "dataframe_split":
        data, rows = _split_to_columns(value, schema)
        return _columns(data, rows, schema), params
    if fmt == "dataframe_records":
        data, rows = _records_to_columns(value, schema, fmt)
        return _columns(data, rows, schema), params
    return _decode_inputs(value, schema, fmt), params


def decode_csv(body: bytes, schema: InputSchema | None) -> ModelInput:
    """`text/csv` body (header row = column names) -> validated columns."""
    import pandas as pd

    try:
        frame = pd.read_csv(io.BytesIO(body))
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"the CSV body cannot be parsed: {exc}") from None
    present = frame.notna()
    data = {
        str(c): [v if ok else None for v, ok in zip(frame[c].tolist(), present[c], strict=True)]
        for c in frame.columns
    }
    return _columns(data, len(frame), schema)


def _columns(data: dict[str, list], rows: int, schema: InputSchema | None) -> ModelInput:
    if schema is None:
        return untyped_columns(data, rows)
    if schema.is_columns:
        return schema.check_columns(data, rows)
    # tensor signature fed with a table: one named tensor per column, or the table as matrix
    if schema.single_tensor is not None:
        return schema.check_tensors([list(r) for r in zip(*data.values(), strict=True)], "inputs")
    return schema.check_tensors(data, "inputs")


def _split_to_columns(value: Any, schema: InputSchema | None) -> tuple[dict[str, list], int]:
    field = "dataframe_split"
    if not isinstance(value, dict) or not isinstance(value.get("data"), list):
        raise InvalidInput(
            f'{field} must be an object {{"columns": [...], "data": [[...], ...]}}', field=field
        )
    rows = value["data"]
    columns = value.get("columns")
    if columns is None and schema is not None and schema.is_columns:
        columns = [c.name for c in schema.columns]
    if not isinstance(columns, list):
        raise InvalidInput(f"{field}.columns must be a list of column names", field=field)
    width = len(columns)
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != width:
            raise InvalidInput(
                f"{field}.data[{i}] must be a list of {width} values (one per column)",
                field=f"{field}.data",
            )
    cols = list(zip(*rows, strict=True)) if rows else [() for _ in columns]
    return {str(name): list(col) for name, col in zip(columns, cols, strict=True)}, len(rows)


def _records_to_columns(
    records: Any, schema: InputSchema | None, field: str
) -> tuple[dict[str, list], int]:
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise InvalidInput(f"{field} must be a list of objects (records)", field=field)
    if len(records) == 1:  # the common single-row case, without the union bookkeeping
        return {k: [v] for k, v in records[0].items()}, 1
    names: dict[str, None] = {}
    for record in records:
        names.update(dict.fromkeys(record))
    optional = (
        {c.name for c in schema.columns if not c.required} if schema and schema.is_columns else None
    )
    data: dict[str, list] = {}
    for name in names:
        col = []
        for i, record in enumerate(records):
            if name in record:
                col.append(record[name])
            elif optional is None or name in optional:
                col.append(None)
            else:
                raise InvalidInput(f"{field}[{i}]: missing required column '{name}'", field=name)
        data[name] = col
    return data, len(records)


def _columns_object(value: dict, field: str) -> tuple[dict[str, list], int]:
    """`{"col": [values]}` (or one row `{"col": value}`) -> columns with their row count."""
    lists = [isinstance(v, list) for v in value.values()]
    if not any(lists):
        return {k: [v] for k, v in value.items()}, 1
    if not all(lists):
        raise InvalidInput(
            f"{field}: give every column as a list of values (or every column as one value)",
            field=field,
        )
    lengths = {len(v) for v in value.values()}
    if len(lengths) != 1:
        raise InvalidInput(f"{field}: columns have different lengths", field=field)
    return dict(value), lengths.pop()


def _decode_inputs(value: Any, schema: InputSchema | None, field: str) -> ModelInput:
    if schema is not None and not schema.is_columns:
        if isinstance(value, list) and value and isinstance(value[0], dict):
            data, _ = _records_to_columns(value, None, field)  # TF-serving row format
            return schema.check_tensors(data, field)
        return schema.check_tensors(value, field)
    if isinstance(value, dict):
        data, rows = _columns_object(value, field)
        return _columns(data, rows, schema)
    if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
        data, rows = _records_to_columns(value, schema, field)
        return _columns(data, rows, schema)
    if schema is not None:
        names = ", ".join(c.name for c in schema.columns)
        raise InvalidInput(
            f"{field}: the model takes named columns ({names}); send a list of records "
            '[{"col": value}] or a columns object {"col": [values]}',
            field=field,
        )
    return untyped_tensor(value, field)


def encode(output: Any) -> Any:
    """A model output (or one caller's rows of it) -> JSON-ready value, as MLflow encodes it."""
    if isinstance(output, np.ndarray):
        return output  # jsonio serialises arrays natively (orjson) or via tolist()
    if hasattr(output, "to_dict") and hasattr(output, "columns"):  # DataFrame
        return output.to_dict(orient="records")
    if hasattr(output, "tolist"):  # Series
        return output.tolist()
    if isinstance(output, dict):
        return {k: encode(v) for k, v in output.items()}
    if isinstance(output, Columns):
        return output.data
    return output


def decode_parquet(body: bytes, schema: InputSchema | None) -> ModelInput:
    """`application/vnd.apache.parquet` body (a DataFrame written by `DataFrame.to_parquet`,
    as MLflow 3.17's scoring server reads it) -> validated columns."""
    import pandas as pd

    try:
        frame = pd.read_parquet(io.BytesIO(body))
    except ImportError as exc:  # no pyarrow / fastparquet in the image
        raise UnsupportedMediaType(f"Parquet bodies need pyarrow in the image: {exc}") from None
    except Exception as exc:  # pyarrow raises its own error types for a body that is not Parquet
        raise InvalidInput(f"the Parquet body cannot be read: {exc}") from None
    present = frame.notna()
    data = {
        str(c): [v if ok else None for v, ok in zip(frame[c].tolist(), present[c], strict=True)]
        for c in frame.columns
    }
    return _columns(data, len(frame), schema)
