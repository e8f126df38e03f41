"""Predictors: the thing that turns a validated `ModelInput` into a raw model output.

* `TorchPredictor`: the PyTorch fast path. Holds the `nn.Module` itself (pickled or
  `torch.export`-ed), on the device chosen at start, under `torch.inference_mode()`, and feeds it
  `torch.from_numpy` of the already-typed array: no pandas, no pyfunc schema enforcement.
  Exported programs whose batch dimension was frozen at 1 (saved with a 1-row example) are
  detected and then fed row by row, so batching stays correct for them.
* `SklearnPredictor`: a scikit-learn estimator loaded directly (`serving.flavors`), called the
  way MLflow's sklearn pyfunc wrapper calls it: the flavor's `predict_fn` on a DataFrame.
* `PyfuncPredictor`: any MLflow pyfunc model, fed a DataFrame (columns) or arrays (tensors).

Only `PyfuncPredictor` (and `TorchPredictor` for models `serving.flavors` leaves to MLflow)
imports MLflow: the direct paths start without it.

Predictors are called from one inference thread only; they need not be thread-safe.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import numpy as np

from serving.data import Columns, ModelInput, Tensors
from serving.errors import ModelError

log = logging.getLogger("serving.predictors")


class Predictor(Protocol):
    """Contract: `predict` returns an output whose first axis is the input's rows when it can."""

    flavor: str
    device: str

    def predict(self, inp: ModelInput, params: dict | None = None) -> Any: ...


def pick_device(requested: str) -> str:
    """`auto` -> `cuda` when torch sees a GPU, else `cpu`; explicit choices are checked."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {requested!r} requested but torch sees no CUDA device")
    return requested


class TorchPredictor:
    """PyTorch fast path (see module docstring)."""

    flavor = "pytorch"

    def __init__(self, module: Any, device: str, input_dtype: np.dtype | None) -> None:
        import torch

        self._torch = torch
        self.module = module
        self.device = device
        self.input_dtype = np.dtype(input_dtype or np.float32)
        self.per_row = False  # set when the module only accepts batches of one row

    @classmethod
    def load(
        cls,
        path: str,
        device: str,
        input_dtype: np.dtype | None,
        flavor: dict[str, Any] | None = None,
    ) -> TorchPredictor:
        """Load the module (`torch.export` archives directly, anything else with
        mlflow.pytorch) and move it to `device`. `flavor` is the MLmodel's `pytorch` section."""
        from pathlib import Path

        from serving.flavors import load_torch

        module = load_torch(Path(path), flavor) if flavor is not None else None
        if module is None:
            import mlflow.pytorch

            module = mlflow.pytorch.load_model(path)  # eval() already called for pickled ones
        if device != "cpu":
            try:
                module = module.to(device)
            except Exception as exc:  # exported programs may pin their constants to a device
                log.warning("cannot move the model to %s (%s); serving on cpu", device, exc)
                device = "cpu"
        return cls(module, device, input_dtype)

    def _array(self, inp: ModelInput) -> np.ndarray:
        if isinstance(inp, Tensors):
            arr = inp.single
            if arr is None:
                raise ModelError("the PyTorch fast path takes a single input tensor")
        else:  # columns in signature order, like pyfunc's DataFrame.to_numpy()
            arr = np.column_stack([np.asarray(v) for v in inp.data.values()])
        if arr.dtype != self.input_dtype:
            arr = arr.astype(self.input_dtype)
        return arr

    def _forward(self, arr: np.ndarray) -> np.ndarray:
        torch = self._torch
        tensor = torch.from_numpy(arr)
        if self.device != "cpu":
            tensor = tensor.to(self.device, non_blocking=True)
        out = self.module(tensor)
        if not isinstance(out, torch.Tensor):
            raise ModelError(
                f"the model returned {type(out).__name__}; the PyTorch path expects one tensor"
            )
        return out.detach().cpu().numpy()

    def predict(self, inp: ModelInput, params: dict | None = None) -> np.ndarray:
        arr = self._array(inp)
        with self._torch.inference_mode():
            if self.per_row and arr.shape[0] > 1:
                return np.concatenate([self._forward(arr[i : i + 1]) for i in range(len(arr))])
            try:
                return self._forward(arr)
            except ModelError:
                raise
            except Exception as exc:
                if arr.shape[0] == 1 or self.per_row:
                    raise
                # An exported program may have its batch dimension frozen at 1 ("Guard failed:
                # input.size()[0] == 1"). If single rows work, serve row by row from now on.
                first = self._forward(arr[:1])
                log.warning(
                    "model rejects batches of %d rows (%s); feeding it one row at a time",
                    arr.shape[0],
                    str(exc).splitlines()[0][:200],
                )
                self.per_row = True
                rest = [self._forward(arr[i : i + 1]) for i in range(1, len(arr))]
                return np.concatenate([first, *rest])


class SklearnPredictor:
    """A scikit-learn estimator: `predict_fn` (the pyfunc flavor's, default `predict`) on a
    DataFrame in signature column order, or on the array of a tensor signature; params are not
    passed on (MLflow's sklearn wrapper ignores them too)."""

    flavor = "sklearn"
    device = "cpu"

    def __init__(self, model: Any, predict_fn: str = "predict") -> None:
        fn = getattr(model, predict_fn, None)
        if not callable(fn):
            raise ModelError(f"the scikit-learn model has no method {predict_fn!r}")
        self.model = model
        self._predict = fn

    def get_raw_model(self) -> Any:
        """The estimator (as MLflow's `PyfuncModel.get_raw_model`): `/predict`'s classifier
        output uses its `predict_proba` and `classes_`."""
        return self.model

    def predict(self, inp: ModelInput, params: dict | None = None) -> Any:
        return self._predict(inp.to_frame() if isinstance(inp, Columns) else inp.model_value())


class PyfuncPredictor:
    """Any MLflow pyfunc model (MLflow enforces the signature again inside `predict`)."""

    def __init__(self, model: Any, flavor: str, device: str = "cpu") -> None:
        self.model = model
        self.flavor = flavor
        self.device = device

    @classmethod
    def load(cls, path: str, flavor: str, device: str | None = None) -> PyfuncPredictor:
        import mlflow.pyfunc

        config = {"device": device} if device and flavor == "pytorch" else None
        model = mlflow.pyfunc.load_model(path, model_config=config)
        return cls(model, flavor, device or "cpu")

    def predict(self, inp: ModelInput, params: dict | None = None) -> Any:
        data = inp.to_frame() if isinstance(inp, Columns) else inp.model_value()
        if params:
            return self.model.predict(data, params=params)
        return self.model.predict(data)
