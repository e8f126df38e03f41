"""Read an MLflow model's `MLmodel` file without importing MLflow.

`import mlflow` costs 1.5-4.5 s and ~100 MB before any model is touched; everything the server
needs from the metadata (flavors and their configuration, run id, signature, input example) is
plain YAML with the signature as JSON strings, so it is read here directly. The contract follows
MLflow's `Model.load` / `ModelSignature.to_dict` / `Schema.from_json` (MLflow 3.x format):

* `signature` is `{"inputs": [...], "outputs": [...], "params": [...] | None}` with each part
  JSON-decoded (what `/model/info` reports);
* `input_schema()` gives the same `InputSchema` as `InputSchema.from_mlflow` on MLflow's parsed
  signature (tested side by side in tests/serving/test_serving_fastload.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from serving.errors import ModelLoadError
from serving.signature import _COLUMN_DTYPES, ColumnSpec, InputSchema, ParamSpec, TensorSpec


@dataclass(frozen=True, slots=True)
class MLmodel:
    """The parsed `MLmodel` file of one model directory."""

    path: Path
    raw: dict[str, Any]

    @property
    def flavors(self) -> dict[str, dict[str, Any]]:
        return self.raw.get("flavors") or {}

    @property
    def run_id(self) -> str | None:
        return self.raw.get("run_id")

    @property
    def saved_input_example_info(self) -> dict[str, Any] | None:
        return self.raw.get("saved_input_example_info")

    @property
    def signature(self) -> dict[str, Any] | None:
        """The signature with each part JSON-decoded; None when the model has none."""
        raw = self.raw.get("signature")
        if not raw:
            return None
        return {k: json.loads(v) if isinstance(v, str) else v for k, v in raw.items()}

    def input_schema(self) -> InputSchema | None:
        sig = self.signature or {}
        return schema_from_json(sig.get("inputs"), sig.get("params"))

    def output_schema(self) -> InputSchema | None:
        return schema_from_json((self.signature or {}).get("outputs"))


def read(path: Path) -> MLmodel:
    """Parse `path/MLmodel`; `ModelLoadError` when it is missing or not a YAML mapping."""
    import yaml  # ~10 ms; PyYAML is a dependency of mlflow-skinny, so always present

    file = path / "MLmodel"
    try:
        with open(file, encoding="utf-8") as fh:
            raw = yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506
    except (OSError, yaml.YAMLError) as exc:
        raise ModelLoadError(f"cannot read {file}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ModelLoadError(f"cannot read {file}: not a YAML mapping")
    return MLmodel(path=path, raw=raw)


def schema_from_json(inputs: list | None, params: list | None = None) -> InputSchema | None:
    """`InputSchema` from a signature's JSON `inputs` (and `params`); None without inputs."""
    if not inputs:
        return None
    param_specs = tuple(
        ParamSpec(
            p["name"],
            str(p.get("type") or "object"),
            tuple(p.get("shape") or ()) == (-1,),
        )
        for p in (params or ())
    )
    if all(spec.get("type") == "tensor" for spec in inputs):
        return InputSchema(
            tensors=tuple(
                TensorSpec(
                    spec.get("name"),
                    np.dtype(spec["tensor-spec"]["dtype"]),
                    tuple(spec["tensor-spec"]["shape"]),
                )
                for spec in inputs
            ),
            params=param_specs,
        )
    cols = []
    for spec in inputs:
        kind = spec.get("type")
        cols.append(
            ColumnSpec(
                name=spec.get("name"),
                kind=kind if isinstance(kind, str) and kind in _COLUMN_DTYPES else "any",
                required=bool(spec.get("required", True)),
            )
        )
    return InputSchema(columns=tuple(cols), params=param_specs)
