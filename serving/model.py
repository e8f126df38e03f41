"""The served model: files + metadata + signature + predictor, loaded once at start.

Chooses the predictor: the PyTorch fast path when the model's pyfunc is MLflow's own PyTorch
wrapper and its input is one tensor (or numeric columns); scikit-learn directly when its pyfunc
is MLflow's own sklearn wrapper; MLflow pyfunc for everything else.

Cold start: the `MLmodel` file is read without MLflow (`serving.mlmodel`) and the PyTorch and
scikit-learn flavors load without it (`serving.flavors`), so a model in a local directory (the
image's /opt/model) starts without importing MLflow at all. MLflow is imported only to resolve
and download `models:/`/`runs:/` URIs and for models `serving.flavors` leaves to pyfunc.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from dataclasses import dataclass
from typing import Any

from serving import flavors, integrity, mlmodel
from serving.config import Settings
from serving.errors import ModelLoadError
from serving.loader import ModelSource, resolve
from serving.predictors import (
    Predictor,
    PyfuncPredictor,
    SklearnPredictor,
    TorchPredictor,
    pick_device,
)
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


def _input_example(meta: mlmodel.MLmodel, path: Any) -> Any:
    """The example as a request body /invocations accepts (MLflow's serving_input_example)."""
    info = meta.saved_input_example_info or {}
    name = info.get("serving_input_path")
    if not name or not (path / name).is_file():
        return None
    try:
        return json.loads((path / name).read_text())
    except (OSError, ValueError) as exc:
        log.warning("cannot read the input example: %s", exc)
        return None


def _use_torch(meta: mlmodel.MLmodel, schema: InputSchema | None) -> bool:
    flavors = meta.flavors
    if "pytorch" not in flavors:
        return False
    loader = flavors.get("python_function", {}).get("loader_module", "mlflow.pytorch")
    if loader != "mlflow.pytorch":
        return False
    if schema is None or schema.single_tensor is not None:
        return True
    return schema.is_columns and all(c.kind in _NUMERIC_KINDS for c in schema.columns)


def _load_sklearn(meta: mlmodel.MLmodel, schema: InputSchema | None) -> SklearnPredictor | None:
    """scikit-learn without pyfunc when MLflow's own sklearn wrapper would serve it and the input
    is columns or one tensor (what that wrapper passes through unchanged); else None."""
    conf = meta.flavors
    pyfunc = conf.get("python_function") or {}
    if "sklearn" not in conf or pyfunc.get("loader_module") != "mlflow.sklearn":
        return None
    if schema is not None and not schema.is_columns and schema.single_tensor is None:
        return None
    model = flavors.load_sklearn(meta.path, conf["sklearn"] or {}, pyfunc)
    if model is None:
        return None
    return SklearnPredictor(model, str(pyfunc.get("predict_fn") or "predict"))


def load(settings: Settings) -> ServedModel:
    """Resolve, download and load the model named by the settings; raises ModelLoadError."""
    source = resolve(settings.model_uri, settings.model_name, settings.model_version)
    if integrity.wanted(settings):  # model-signing is imported only then, inside `check`
        integrity.check(settings, source.path)  # before any model file is read
    meta = mlmodel.read(source.path)
    source.run_id = source.run_id or meta.run_id
    try:
        schema = meta.input_schema()
        output_schema = meta.output_schema()
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot read the signature in {source.path / 'MLmodel'}: {exc}"
        ) from exc
    names = list(meta.flavors)
    flavor = next((f for f in names if f != "python_function"), "python_function")
    try:
        predictor: Predictor
        if _use_torch(meta, schema):
            device = pick_device(settings.device)
            if settings.num_threads:
                import torch

                torch.set_num_threads(settings.num_threads)
            dtype = schema.single_tensor.dtype if schema and schema.single_tensor else None
            torch_conf = meta.flavors.get("pytorch") or {}
            predictor = TorchPredictor.load(str(source.path), device, dtype, torch_conf)
        elif flavor == "sklearn" and (direct := _load_sklearn(meta, schema)) is not None:
            predictor = direct
        elif "python_function" in names:
            device = pick_device(settings.device) if flavor == "pytorch" else None
            predictor = PyfuncPredictor.load(str(source.path), flavor, device)
        else:
            raise ModelLoadError(
                f"the model has no python_function flavor (flavors: {', '.join(names)})"
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
        flavors=names,
        flavor=flavor,
        signature=meta.signature,
        schema=schema,
        output_schema=output_schema,
        input_example=_input_example(meta, source.path),
        predictor=predictor,
        loaded_at=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    )
