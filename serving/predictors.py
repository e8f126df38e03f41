"""Predictors: the thing that turns a validated `ModelInput` into a raw model output.

* `TorchPredictor`: the PyTorch fast path. Holds the `nn.Module` itself (pickled or
  `torch.export`-ed), on the device chosen at start, under `torch.inference_mode()`, and feeds it
  `torch.from_numpy` of the already-typed array: no pandas, no pyfunc schema enforcement.
  Exported programs whose batch dimension was frozen at 1 (saved with a 1-row example) are
  detected and then fed row by row, so batching stays correct for them.
* `PyfuncPredictor`: any MLflow pyfunc model, fed a DataFrame (columns) or arrays (tensors).

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
    def load(cls, path: str, device: str, input_dtype: np.dtype | None) -> TorchPredictor:
        """Load the module with mlflow.pytorch (pickle or pt2) and move it to `device`."""
        import mlflow.pytorch

        module = mlflow.pytorch.load_model(path)  # eval() already called for pickled modules
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
