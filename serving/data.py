"""Protocol-neutral model inputs and outputs: what codecs produce and predictors consume.

Wire formats (v1 JSON, CSV, v2) decode into one of two shapes, validated against the signature:

* `Columns`  - named columns of equal length (column-based signatures, DataFrame models),
* `Tensors`  - one unnamed array (`name=None`) or several named arrays, first axis = rows.

Both know their row count, how to merge with compatible inputs (dynamic batching) and
`slice_rows` cuts a model output back into each caller's rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(slots=True)
class Columns:
    """Column name -> values (numpy array, or list for nested/object values)."""

    data: dict[str, Any]
    rows: int

    def batch_key(self) -> tuple:
        """Inputs with equal keys can be concatenated into one model call."""
        return ("columns", tuple(self.data))

    @staticmethod
    def concat(parts: list[Columns]) -> Columns:
        """Row-wise concatenation of inputs sharing `batch_key()`."""
        if len(parts) == 1:
            return parts[0]
        out: dict[str, Any] = {}
        for name, first in parts[0].data.items():
            if isinstance(first, np.ndarray):
                out[name] = np.concatenate([p.data[name] for p in parts])
            else:
                out[name] = [v for p in parts for v in p.data[name]]
        return Columns(out, sum(p.rows for p in parts))

    def to_frame(self) -> Any:
        """pandas DataFrame in signature column order (imported lazily: pyfunc path only)."""
        import pandas as pd

        return pd.DataFrame(self.data)


@dataclass(slots=True)
class Tensors:
    """One array (`arrays == {None: arr}`) or named arrays sharing the first (row) axis."""

    arrays: dict[str | None, np.ndarray]
    rows: int

    @property
    def single(self) -> np.ndarray | None:
        """The array of a single-tensor input, else None."""
        return self.arrays.get(None) if len(self.arrays) == 1 else None

    def batch_key(self) -> tuple:
        return ("tensors", *tuple((k, a.dtype.str, a.shape[1:]) for k, a in self.arrays.items()))

    @staticmethod
    def concat(parts: list[Tensors]) -> Tensors:
        if len(parts) == 1:
            return parts[0]
        arrays = {k: np.concatenate([p.arrays[k] for p in parts]) for k in parts[0].arrays}
        return Tensors(arrays, sum(p.rows for p in parts))

    def model_value(self) -> Any:
        """What pyfunc.predict expects: the bare array, or a dict of named arrays."""
        single = self.single
        return single if single is not None else dict(self.arrays)


ModelInput = Columns | Tensors


def concat(parts: list[ModelInput]) -> ModelInput:
    """Merge inputs that share a batch key."""
    return type(parts[0]).concat(parts)  # type: ignore[arg-type]


def output_rows(output: Any) -> int | None:
    """Number of rows in a model output, or None when it cannot be split per row."""
    if isinstance(output, dict):
        lengths = {output_rows(v) for v in output.values()}
        return lengths.pop() if len(lengths) == 1 else None
    if isinstance(output, np.ndarray):
        return output.shape[0] if output.ndim else None
    if isinstance(output, (list, tuple)) or hasattr(output, "iloc"):
        return len(output)
    return None


def slice_rows(output: Any, start: int, stop: int) -> Any:
    """Rows [start, stop) of a model output (ndarray, DataFrame/Series, list or dict of those)."""
    if isinstance(output, dict):
        return {k: slice_rows(v, start, stop) for k, v in output.items()}
    if hasattr(output, "iloc"):
        return output.iloc[start:stop]
    return output[start:stop]
