"""JSON encoding and decoding, with orjson when it is installed (3-10x faster than `json`).

Both functions accept/return bytes so the HTTP layer never round-trips through `str`.
Numpy arrays and scalars, pandas timestamps and bytes are encoded the way MLflow's scoring server
encodes them (lists, numbers, ISO strings, base64).
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import math
from typing import Any

import numpy as np

try:  # pragma: no cover - depends on the environment
    import orjson
except ImportError:  # pragma: no cover
    orjson = None


class JSONDecodeError(ValueError):
    """The body is not valid JSON."""


def _default(obj: Any) -> Any:
    """Fallback for types neither encoder knows natively."""
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (_dt.datetime, _dt.date)):
        return obj.isoformat()
    if isinstance(obj, (bytes, bytearray)):
        return base64.b64encode(obj).decode("ascii")
    if hasattr(obj, "isoformat"):  # pandas.Timestamp
        return obj.isoformat()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"cannot encode {type(obj).__name__} as JSON")


def _sanitize(obj: Any) -> Any:
    """Replace NaN/inf (not valid JSON) by null, as MLflow's scoring server does."""
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {k: _sanitize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_sanitize(v) for v in obj]
    return obj


if orjson is not None:
    _OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS

    def dumps(obj: Any) -> bytes:
        """Encode to JSON bytes (orjson already writes NaN/inf as null)."""
        return orjson.dumps(obj, default=_default, option=_OPTS)

    def loads(data: bytes | str) -> Any:
        """Decode JSON bytes; raises `JSONDecodeError` on anything that is not JSON."""
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise JSONDecodeError(str(exc)) from None

else:  # pragma: no cover - exercised only without orjson

    def dumps(obj: Any) -> bytes:
        """Encode to JSON bytes, NaN/inf as null."""
        try:
            text = json.dumps(obj, default=_default, allow_nan=False, separators=(",", ":"))
        except ValueError:
            text = json.dumps(_sanitize(json.loads(json.dumps(obj, default=_default))))
        return text.encode()

    def loads(data: bytes | str) -> Any:
        """Decode JSON bytes; raises `JSONDecodeError` on anything that is not JSON."""
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise JSONDecodeError(str(exc)) from None
