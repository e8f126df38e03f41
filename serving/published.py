"""The published mlifecycle inference contract, offered per deployment as a response format.

`SERVING_RESPONSE_FORMAT=mlifecycle` (`--response-format mlifecycle`) makes `/predict`, `/health`,
`/ready` and `/model/info` answer the way the published mlifecycle inference service does, so its
callers switch to ztml without changing code. The default, `ztml`, leaves every answer as it was:
ztml's own clients (verify, `helm test`, `mlflow deployments predict`, dashboards) keep working.

    POST /predict {"instances": [[5.1, 3.5, 1.4], [6.2, 2.9, 4.3]]}
    200 {"predictions": [{"prediction": 0, "confidence": 0.93, "probabilities": [0.93, 0.07]},
                         ...],
         "inference_time_ms": 1.4, "model_name": "iris", "model_version": "7",
         "request_id": "..."}

Input. `instances` as a list of feature vectors: for a column signature the values of a vector are
the signature's columns in order (trailing optional columns may be left out); a tensor signature
takes the nested list as it is. Every other `/predict` body ztml accepts is accepted too (verify
and `helm test` send the model's own input example). Refused with 422 naming the field: an empty
batch, more than `SERVING_MAX_INSTANCES` instances (the published service's `MAX_BATCH_SIZE`,
default 100 like there), and a feature that is not a finite JSON number.

Output. Each instance of a classifier is `{prediction, confidence, probabilities}`; of any other
model `{prediction}`. What is a classifier is decided from the model, not guessed per request:

* the model behind the pyfunc exposes `predict_proba` (scikit-learn classifiers and pipelines
  ending in one, XGBoost, LightGBM, ...): probabilities come from it and `prediction` is the
  class label (`classes_`), i.e. what the model's own `predict` answers;
* otherwise the model's output is a float matrix with two or more columns per row (a PyTorch or
  Keras classification head): rows that are already probabilities (non-negative, summing to 1)
  are kept, anything else is taken as logits and normalised with softmax (log-probabilities
  therefore give the same probabilities back); `prediction` is the index of the largest;
* anything else (a vector of numbers or labels, a table) is a regressor: `{prediction}`.

`SERVING_PREDICTION_TASK` overrides the decision where the model's shape is ambiguous:
`regression` for a multi-output regressor, `classification` for a single sigmoid output (its
value is P(class 1)). A model forced to `classification` that answers labels only is a 500
naming the setting, never a silent `{prediction}`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from serving import v1
from serving.config import Settings
from serving.context import RequestContext
from serving.data import Columns, ModelInput
from serving.errors import InvalidInput, ModelError, ServingError
from serving.model import ServedModel
from serving.runner import Runner, model_failure
from serving.signature import InputSchema

log = logging.getLogger("serving.published")

_FIELD = "instances"
_SUM_TOLERANCE = 1e-3  # float32 softmax rows sum to 1 within ~1e-6; be generous
_JSON_TYPES = {str: "string", bool: "boolean", type(None): "null", dict: "object"}


# ----------------------------------------------------------------------------------- input
def _check_count(count: int, limit: int) -> None:
    if count == 0:
        raise InvalidInput(f"{_FIELD} is empty: send at least one instance", field=_FIELD)
    if count > limit:
        raise InvalidInput(
            f"{_FIELD} has {count} instances, more than the maximum of {limit} per request "
            "(SERVING_MAX_INSTANCES)",
            field=_FIELD,
        )


def _is_vectors(instances: list) -> bool:
    """A list of flat feature vectors (not records, not deeper tensors such as images)."""
    return all(
        isinstance(row, list) and not any(isinstance(v, (list, dict)) for v in row)
        for row in instances
    )


def _check_numbers(instances: list[list]) -> None:
    """Every feature is a finite JSON number (booleans, strings and nulls are not)."""
    for i, row in enumerate(instances):
        for j, value in enumerate(row):
            if type(value) not in (int, float):
                shown = "null" if value is None else repr(value)
                shown = shown if len(shown) <= 40 else shown[:40] + "..."
                kind = _JSON_TYPES.get(type(value), type(value).__name__)
                raise InvalidInput(
                    f"{_FIELD}[{i}][{j}]: expected a number, got {kind} {shown}",
                    field=f"{_FIELD}[{i}][{j}]",
                )
            if type(value) is float and not math.isfinite(value):
                raise InvalidInput(
                    f"{_FIELD}[{i}][{j}]: expected a finite number, got {value}",
                    field=f"{_FIELD}[{i}][{j}]",
                )


def _vectors_to_columns(instances: list[list], schema: InputSchema) -> dict[str, list]:
    """Feature vectors -> `{column: values}` in signature order (trailing optional ones may go)."""
    widths = {len(row) for row in instances}
    if len(widths) != 1:
        raise InvalidInput(
            f"{_FIELD}: every instance must have the same number of features, got "
            f"{', '.join(map(str, sorted(widths)))}",
            field=_FIELD,
        )
    width = widths.pop()
    columns = schema.columns
    if width > len(columns) or any(c.required for c in columns[width:]):
        required = sum(c.required for c in columns)
        expected = (
            str(len(columns)) if required == len(columns) else f"{required} to {len(columns)}"
        )
        raise InvalidInput(
            f"{_FIELD}: each instance has {width} features; the model takes {expected}, "
            f"in this order: {', '.join(c.name for c in columns)}",
            field=_FIELD,
        )
    return {c.name: [row[j] for row in instances] for j, c in enumerate(columns[:width])}


def decode(
    payload: Any, schema: InputSchema | None, max_instances: int
) -> tuple[ModelInput, dict | None]:
    """A `/predict` body -> validated model input and `params`; InvalidInput (422) otherwise."""
    if isinstance(payload, dict) and isinstance(payload.get(_FIELD), list):
        instances = payload[_FIELD]
        _check_count(len(instances), max_instances)
        if _is_vectors(instances):
            _check_numbers(instances)
            if schema is not None and schema.is_columns:
                payload = {**payload, _FIELD: _vectors_to_columns(instances, schema)}
    inp, params = v1.decode(payload, schema)
    _check_count(inp.rows, max_instances)  # the same limits for every other body format
    return inp, params


# ----------------------------------------------------------------------------------- output
def _predict_proba(model: ServedModel) -> tuple[Callable[[Any], Any] | None, list | None]:
    """`predict_proba` and `classes_` of the model behind the pyfunc (or the predictor that
    loaded it directly), when it has them."""
    pyfunc = getattr(model.predictor, "model", None)
    get_raw = getattr(model.predictor, "get_raw_model", None) or getattr(
        pyfunc, "get_raw_model", None
    )
    if get_raw is None:
        return None, None
    try:
        raw = get_raw()
    except Exception:  # NotImplementedError and whatever a custom wrapper raises
        return None, None
    proba = getattr(raw, "predict_proba", None)  # None for scikit-learn regressors (available_if)
    if not callable(proba):
        return None, None
    classes = getattr(raw, "classes_", None)
    return proba, None if classes is None else np.asarray(classes).tolist()


def probabilities(scores: np.ndarray) -> np.ndarray:
    """Rows of class scores -> rows of probabilities: kept when they already are, else softmax."""
    scores = np.asarray(scores, dtype=np.float64)
    if (
        scores.size
        and np.all(scores >= 0)
        and np.allclose(scores.sum(axis=1), 1.0, atol=_SUM_TOLERANCE)
    ):
        return scores
    shifted = scores - scores.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def _binary(column: np.ndarray) -> np.ndarray:
    """One score per row (a sigmoid head) -> [P(0), P(1)]; values outside [0, 1] are logits."""
    p = np.asarray(column, dtype=np.float64).reshape(-1)
    if p.size and not (np.all(p >= 0) and np.all(p <= 1)):
        p = 1.0 / (1.0 + np.exp(-p))
    return np.stack([1.0 - p, p], axis=1)


def classified(probs: np.ndarray, classes: list | None = None) -> list[dict[str, Any]]:
    """`{prediction, confidence, probabilities}` per row; prediction = label of the largest."""
    best = probs.argmax(axis=1)
    confidence = probs[np.arange(len(probs)), best].tolist()
    if classes is not None and len(classes) == probs.shape[1]:
        labels = [classes[i] for i in best.tolist()]
    else:
        labels = best.tolist()
    return [
        {"prediction": label, "confidence": conf, "probabilities": row}
        for label, conf, row in zip(labels, confidence, probs.tolist(), strict=True)
    ]


def _rows(output: Any) -> list:
    """A model output as one JSON value per row (a 1-column matrix gives scalars)."""
    encoded = v1.encode(output)
    if isinstance(encoded, np.ndarray):
        if encoded.ndim == 2 and encoded.shape[1] == 1:
            encoded = encoded[:, 0]
        return encoded.tolist() if encoded.ndim else [encoded.item()]
    if isinstance(encoded, dict):  # named outputs: one object per row
        columns = {k: _rows(v) for k, v in encoded.items()}
        count = min((len(v) for v in columns.values()), default=0)
        return [{k: v[i] for k, v in columns.items()} for i in range(count)]
    if isinstance(encoded, list):
        return encoded
    return [encoded]


def _score_matrix(output: Any) -> np.ndarray | None:
    """The output as a float matrix when it can be class scores, else None."""
    if hasattr(output, "to_numpy") and hasattr(output, "columns"):  # DataFrame of numbers
        output = output.to_numpy()
    if isinstance(output, list):
        try:
            output = np.asarray(output)
        except (ValueError, TypeError):
            return None
    if not isinstance(output, np.ndarray) or output.dtype.kind not in "fiu":
        return None
    return output


def shape_predictions(output: Any, task: str, classes: list | None = None) -> list[dict]:
    """Published prediction items for a model output under `task` (see the module docstring)."""
    if task == "regression":
        return [{"prediction": row} for row in _rows(output)]
    scores = _score_matrix(output)
    matrix = scores is not None and scores.ndim == 2 and scores.shape[1] >= 2
    floats = scores is not None and scores.dtype.kind == "f"
    if matrix and (floats or task == "classification"):
        return classified(probabilities(scores), classes)
    if task == "classification":
        if floats and (scores.ndim == 1 or (scores.ndim == 2 and scores.shape[1] == 1)):
            return classified(_binary(scores), classes)
        raise ModelError(
            "the model answers labels, not class scores, so the mlifecycle format cannot give "
            "confidence and probabilities; log it with predict_proba or set "
            "SERVING_PREDICTION_TASK=regression"
        )
    return [{"prediction": row} for row in _rows(output)]


# ----------------------------------------------------------------------------------- contract
class PublishedContract:
    """What the HTTP layer asks: is the format on, and the published bodies of each route.

    One per server; the model-dependent decision (`predict_proba` or not) is made once, on the
    first request after the model is loaded.
    """

    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.response_format == "mlifecycle"
        self.max_instances = settings.max_instances
        self.task = settings.prediction_task
        self._model: ServedModel | None = None
        self._proba: Callable[[Any], Any] | None = None
        self._classes: list | None = None

    def health(self, body: dict[str, Any]) -> dict[str, Any]:
        """Liveness body: the published `healthy` instead of ztml's `ok`."""
        return {**body, "status": "healthy"} if self.enabled else body

    def ready(self, body: dict[str, Any], model: ServedModel | None) -> dict[str, Any]:
        """Readiness body: ztml's fields plus the published `model` and `version` names."""
        if not self.enabled or model is None:
            return body
        return {**body, "model": model.name, "version": model.version}

    def model_info(self, info: dict[str, Any], model: ServedModel) -> dict[str, Any]:
        """ztml's `/model/info` plus the published keys it lacks (none is replaced)."""
        if not self.enabled:
            return info
        schema = model.schema
        features: int | None = None
        if schema is not None and schema.is_columns:
            features = len(schema.columns)
        elif schema is not None and schema.single_tensor is not None:
            shape = schema.single_tensor.shape
            features = shape[1] if len(shape) == 2 and shape[1] > 0 else None
        extra = {
            "framework": model.flavor,
            "loaded": True,
            "uri": model.source.uri,
            "input_features": features,
            "max_batch_size": self.max_instances,  # published meaning: instances per request
        }
        return {**extra, **info}

    def _bind(self, model: ServedModel) -> None:
        if self._model is not model:
            self._proba, self._classes = (
                (None, None) if self.task == "regression" else _predict_proba(model)
            )
            self._model = model

    async def _run_proba(self, inp: ModelInput, runner: Runner, ctx: RequestContext) -> Any:
        """`predict_proba` on the inference thread, outside the batcher (like calls with params)."""
        proba = self._proba
        assert proba is not None
        if ctx.announced:  # this request will not reach the batcher: do not make it wait for us
            ctx.announced = False
            runner.withdraw()

        def run() -> Any:
            return proba(inp.to_frame() if isinstance(inp, Columns) else inp.model_value())

        try:
            return await runner.execute(run)
        except ServingError:
            raise
        except Exception as exc:
            raise model_failure(exc, ctx) from None

    async def predict(
        self, payload: Any, model: ServedModel, runner: Runner, ctx: RequestContext
    ) -> tuple[dict[str, Any], int]:
        """The published `/predict` answer and the number of rows predicted."""
        started = time.perf_counter()
        self._bind(model)
        inp, params = decode(payload, model.schema, self.max_instances)
        if self._proba is not None:
            output = np.asarray(await self._run_proba(inp, runner, ctx), dtype=np.float64)
            if output.ndim != 2:
                raise ModelError(
                    f"predict_proba answered an array of shape {output.shape}, not one row of "
                    "class probabilities per instance; set SERVING_PREDICTION_TASK=regression"
                )
            predictions = classified(probabilities(output), self._classes)
        else:
            output = await runner.infer(inp, params, ctx)
            predictions = shape_predictions(output, self.task)
        elapsed_ms = (time.perf_counter() - started) * 1000
        body = {
            "request_id": ctx.request_id,
            "predictions": predictions,
            "model_name": model.name,
            "model_version": model.version,
            "inference_time_ms": elapsed_ms,
        }
        return body, inp.rows
