"""Conversions that never change a value: the one place numbers and datetimes get their dtype.

numpy converts silently: 300 as int8 is 44, -1 as uint8 is 255, 70000 as float16 is inf, 3e9 as
int32 is garbage, and "1500-01-01" as datetime64[ns] is 2084-07-20. Every codec (v1 columns,
v2 tensors, tensor signatures) converts through `to_dtype` / `to_datetimes` instead, which answer
the converted array or raise `InvalidInput` (422) naming the field and the allowed range.

Checked: every int/uint width (values and integral floats within `iinfo`), bool (only
true/false, or 0/1), every float width (a finite value must stay finite). Not checked: the
rounding of a float to a narrower float or of a large integer to a float, which is how those
types hold numbers, not a changed value.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from serving.errors import InvalidInput

# datetime64[ns] holds int64 nanoseconds around 1970 (int64 min itself is NaT); these bounds are
# in microseconds, rounded inwards, so the range check itself cannot overflow
_NS_MIN_US = np.datetime64("1677-09-21T00:12:43.145225", "us")
_NS_MAX_US = np.datetime64("2262-04-11T23:47:16.854774", "us")  # + sub-us digits
_NS_RANGE = "1677-09-21T00:12:43 to 2262-04-11T23:47:16"


def describe_range(dtype: np.dtype) -> str:
    """`-128 to 127` / `-65504 to 65504` / `true or false ...`: what `dtype` holds, for messages."""
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return f"{info.min} to {info.max}"
    if dtype.kind == "f":
        return f"-{np.finfo(dtype).max:g} to {np.finfo(dtype).max:g}"
    if dtype.kind == "b":
        return "true or false (or 0 or 1)"
    return dtype.name


def _out_of_range(label: str, field: str, dtype: np.dtype, value: Any) -> InvalidInput:
    text = repr(value.item() if isinstance(value, np.generic) else value)
    text = text if len(text) <= 40 else text[:37] + "..."
    return InvalidInput(
        f"{label}: {text} is out of range for {dtype.name} (allowed: {describe_range(dtype)})",
        field=field,
    )


def _first(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def _at(label: str, index: tuple[int, ...]) -> str:
    """`label row 3` for 1-D data, `label at index [3, 1]` for tensors."""
    if not index:
        return label
    return f"{label} row {index[0]}" if len(index) == 1 else f"{label} at index {list(index)}"


def to_dtype(values: Any, dtype: Any, field: str, *, label: str | None = None) -> np.ndarray:
    """`values` (a list or an array of JSON numbers/booleans) as a C-contiguous `dtype` array.

    Raises InvalidInput with `field` (messages start with `label`, default `field`, and name the
    first offending row or index) when a value would change: out of an integer's range,
    fractional for an integer, overflowing a float, not 0/1 for a bool.
    """
    label = label or field
    target = np.dtype(dtype)
    src = values if isinstance(values, np.ndarray) else np.asarray(values)
    if src.dtype == object:  # Python ints beyond 64 bits (or mixed junk)
        for index, value in np.ndenumerate(src):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise InvalidInput(
                    f"{_at(label, index)}: expected {target.name} values, "
                    f"got {type(value).__name__}",
                    field=field,
                )
            try:
                np.asarray(value, dtype=target)
            except (OverflowError, ValueError):
                raise _out_of_range(_at(label, index), field, target, value) from None
        src = np.asarray(src.tolist(), dtype=np.float64)
    if src.size == 0 or src.dtype == target:
        return np.ascontiguousarray(src)
    bad: np.ndarray | None = None
    if target.kind in "iu":
        bad = _not_integral(src, target, field, label)
    elif target.kind == "b" and src.dtype.kind != "b":
        bad = (src != 0) & (src != 1)
    elif target.kind in "fc" and src.dtype.kind in "biuf":
        with np.errstate(over="ignore", invalid="ignore"):
            out = np.ascontiguousarray(src, dtype=target)
        bad = np.isinf(out) & np.isfinite(src)
        if not bad.any():
            return out
    if bad is not None and bad.any():
        index = _first(bad)
        raise _out_of_range(_at(label, index), field, target, src[index])
    return np.ascontiguousarray(src, dtype=target)


def _not_integral(src: np.ndarray, target: np.dtype, field: str, label: str) -> np.ndarray | None:
    """Mask of values outside `target`'s range; raises for fractional values."""
    info = np.iinfo(target)
    if src.dtype.kind == "f":
        fractional = ~np.isfinite(src) | (src != np.trunc(src))
        if fractional.any():
            index = _first(fractional)
            raise InvalidInput(
                f"{_at(label, index)}: {src[index].item()!r} is not an integer "
                f"({target.name} holds {describe_range(target)})",
                field=field,
            )
        # float bounds, so that a float equal to 2**63 (or 2**64) is outside int64 (uint64); and
        # -2**63 as a float is what JSON parsers make of -2**63 - 1 (beyond int64): refused too
        low = float(info.min)
        below = (src <= low) if info.min < -(2**53) else (src < low)
        return below | (src >= float(info.max) + 1)
    if src.dtype.kind in "iub":
        return (src < info.min) | (src > info.max)
    return None


def to_datetimes(values: list[str], field: str, *, label: str | None = None) -> np.ndarray:
    """ISO 8601 strings as datetime64[ns] (what pandas models get), or a 422 naming the range.

    Parsed first in microseconds (a range of +-290,000 years, so nothing overflows) to check
    the datetime64[ns] range, 1677-09-21 to 2262-04-11; then parsed again exactly in ns.
    """
    label = label or field
    try:
        coarse = np.asarray(values, dtype="datetime64[us]")
    except (ValueError, OverflowError):
        raise InvalidInput(f"{label}: datetimes must be ISO 8601 strings", field=field) from None
    bad = (coarse < _NS_MIN_US) | (coarse > _NS_MAX_US)
    if bad.any():
        row = int(np.argmax(bad))
        raise InvalidInput(
            f"{label} row {row}: {values[row][:40]!r} is out of range for datetime64[ns] "
            f"(allowed: {_NS_RANGE})",
            field=field,
        )
    try:
        return np.asarray(values, dtype="datetime64[ns]")
    except (ValueError, OverflowError):
        raise InvalidInput(f"{label}: datetimes must be ISO 8601 strings", field=field) from None
