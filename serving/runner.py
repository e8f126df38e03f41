"""Runs predictions on the single inference thread, batched or one request at a time.

Models are called from exactly one thread (most are not thread-safe and all compete for the
same cores anyway); the event loop stays free to parse and answer other requests meanwhile.
For tiny CPU models the thread hand-off costs more than the forward pass itself (measured:
~150 us extra per call for a 64-256-256-2 MLP), so `inline` runs them on the event loop instead.
Exceptions from the model become `ModelError` (HTTP 500) and are logged with a traceback,
except MLflow's own refusal of the input or params (an `MlflowException` with error code
`INVALID_PARAMETER_VALUE`, raised by pyfunc's schema enforcement before the model runs): that is
the caller's mistake, a 422 with MLflow's message, as MLflow's scoring server answers 4xx for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from serving.batching import Batcher
from serving.context import RequestContext
from serving.data import ModelInput
from serving.errors import InvalidInput, ModelError, ServingError
from serving.metrics import Metrics
from serving.predictors import Predictor

log = logging.getLogger("serving.runner")


class Runner:
    """Owns the inference thread and (when enabled) the batcher."""

    def __init__(
        self, metrics: Metrics, *, max_batch_size: int, max_delay_ms: float, batching: bool
    ) -> None:
        self.metrics = metrics
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self.predictor: Predictor | None = None
        self._batching = batching
        self._max_batch_size = max_batch_size
        self._max_delay_s = max_delay_ms / 1000.0
        self.batcher: Batcher | None = None
        self.inline = False
        self._observe_batch = metrics.batch_size.observe

    async def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the inference thread."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn)

    async def execute(self, fn: Callable[[], Any]) -> Any:
        """Run a model call: on the event loop when `inline`, else on the inference thread."""
        if self.inline:
            return fn()
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn)

    def attach(self, predictor: Predictor) -> None:
        """Start serving `predictor` (called once the model is loaded, on the event loop)."""
        self.predictor = predictor
        if self._batching:
            self.batcher = Batcher(
                self.execute,
                self._predict_batch,
                max_batch_size=self._max_batch_size,
                max_delay_s=self._max_delay_s,
                on_batch=self._observe_batch,
            )
            self.batcher.start()

    def _predict_batch(self, inp: ModelInput) -> Any:
        assert self.predictor is not None
        return self.predictor.predict(inp)

    def announce(self) -> bool:
        """Tell the batcher a request is coming; returns whether it must be withdrawn later."""
        if self.batcher is None:
            return False
        self.batcher.announce()
        return True

    def withdraw(self) -> None:
        if self.batcher is not None:
            self.batcher.withdraw()

    async def infer(self, inp: ModelInput, params: dict | None, ctx: RequestContext) -> Any:
        """Output rows for `inp`; raises ModelError when the model fails."""
        predictor = self.predictor
        assert predictor is not None
        if ctx.announced:
            ctx.announced = False
            self.withdraw()
        try:
            if self.batcher is not None and not params:
                return await self.batcher.submit(inp)

            def run() -> Any:
                self._observe_batch(inp.rows)
                return predictor.predict(inp, params)

            return await self.execute(run)
        except ServingError:
            raise
        except Exception as exc:
            if _refused_by_mlflow(exc):
                text = " ".join(str(exc).split())
                raise InvalidInput(
                    f"the model's signature refuses the input: {text[:500]}",
                    field="params" if params and "param" in text.lower() else None,
                ) from None
            raise model_failure(exc, ctx) from None

    async def stop(self) -> None:
        if self.batcher is not None:
            await self.batcher.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)


def model_failure(exc: Exception, ctx: RequestContext) -> ModelError:
    """Log a model's own exception in full (server side) and return the short 500 the caller
    sees: the type and the first line of the message, never the traceback."""
    log.error(
        "model error: %s: %s",
        type(exc).__name__,
        exc,
        exc_info=exc,
        extra={"request_id": ctx.request_id},
    )
    text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return ModelError(f"the model failed: {type(exc).__name__}{': ' + text if text else ''}")


def _refused_by_mlflow(exc: Exception) -> bool:
    """MLflow's schema enforcement refused the input (not a failure of the model itself)."""
    return (
        type(exc).__name__ == "MlflowException"
        and getattr(exc, "error_code", None) == "INVALID_PARAMETER_VALUE"
    )
