"""The served model: files + metadata + signature + predictor, loaded once at start.

Chooses the predictor: the PyTorch fast path when the model's pyfunc is MLflow's own PyTorch
wrapper and its input is one tensor (or numeric columns); MLflow pyfunc for everything else.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from dataclasses import dataclass
from typing import Any

from serving.config import Settings
from serving.errors import ModelLoadError
from serving.loader import ModelSource, resolve
from serving.predictors import Predictor, PyfuncPredictor, TorchPredictor, pick_device
from serving.redact import redact
from serving.signature import InputSchema

log = logging.getLogger("serving.model")

_NUMERIC_KINDS = {"double", "float", "long", "integer", "boolean"}


@dataclass(slots=True)
class ServedModel:
    """Everything /model/info reports, plus the predictor and the parsed input schema."""

    source: ModelSource
    flavors: list[str]
    flavor: str
    signature: dict[str, Any] | None
    schema: InputSchema | None
    output_schema: InputSchema | None
    input_example: Any
    predictor: Predictor
    loaded_at: str

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def version(self) -> str:
        return self.source.version

    def info(self, image_digest: str | None) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "run_id": self.source.run_id,
            "model_uri": redact(self.source.uri),
            "flavors": self.flavors,
            "flavor": self.flavor,
            "predictor": type(self.predictor).__name__,
            "signature": self.signature,
            "input_example": self.input_example,
            "device": self.predictor.device,
            "loaded_at": self.loaded_at,
            "image_digest": image_digest,
        }


def _signature_dict(mlmodel: Any) -> dict[str, Any] | None:
    if mlmodel.signature is None:
        return None
    raw = mlmodel.signature.to_dict()
    return {k: json.loads(v) if isinstance(v, str) else v for k, v in raw.items()}


def _input_example(mlmodel: Any, path: Any) -> Any:
    """The example as a request body /invocations accepts (MLflow's serving_input_example)."""
    info = mlmodel.saved_input_example_info or {}
    name = info.get("serving_input_path")
    if not name or not (path / name).is_file():
        return None
    try:
        return json.loads((path / name).read_text())
    except (OSError, ValueError) as exc:
        log.warning("cannot read the input example: %s", exc)
        return None


def _use_torch(mlmodel: Any, schema: InputSchema | None) -> bool:
    flavors = mlmodel.flavors
    if "pytorch" not in flavors:
        return False
    loader = flavors.get("python_function", {}).get("loader_module", "mlflow.pytorch")
    if loader != "mlflow.pytorch":
        return False
    if schema is None or schema.single_tensor is not None:
        return True
    return schema.is_columns and all(c.kind in _NUMERIC_KINDS for c in schema.columns)


def load(settings: Settings) -> ServedModel:
    """Resolve, download and load the model named by the settings; raises ModelLoadError."""
    source = resolve(settings.model_uri, settings.model_name, settings.model_version)
    try:
        from mlflow.models import Model

        mlmodel = Model.load(str(source.path))
    except Exception as exc:
        raise ModelLoadError(f"cannot read {source.path / 'MLmodel'}: {exc}") from exc
    source.run_id = source.run_id or mlmodel.run_id
    signature = mlmodel.signature
    schema = InputSchema.from_mlflow(
        signature.inputs if signature else None, signature.params if signature else None
    )
    flavors = list(mlmodel.flavors)
    flavor = next((f for f in flavors if f != "python_function"), "python_function")
    try:
        predictor: Predictor
        if _use_torch(mlmodel, schema):
            device = pick_device(settings.device)
            if settings.num_threads:
                import torch

                torch.set_num_threads(settings.num_threads)
            dtype = schema.single_tensor.dtype if schema and schema.single_tensor else None
            predictor = TorchPredictor.load(str(source.path), device, dtype)
        elif "python_function" in flavors:
            device = pick_device(settings.device) if flavor == "pytorch" else None
            predictor = PyfuncPredictor.load(str(source.path), flavor, device)
        else:
            raise ModelLoadError(
                f"the model has no python_function flavor (flavors: {', '.join(flavors)})"
            )
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(
            f"cannot load the model from {source.path}: {type(exc).__name__}: {exc} "
            "(are the model's requirements installed?)"
        ) from exc
    return ServedModel(
        source=source,
        flavors=flavors,
        flavor=flavor,
        signature=_signature_dict(mlmodel),
        schema=schema,
        output_schema=InputSchema.from_mlflow(
            mlmodel.signature.outputs if mlmodel.signature else None
        ),
        input_example=_input_example(mlmodel, source.path),
        predictor=predictor,
        loaded_at=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    )
