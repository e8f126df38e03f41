"""The protocol-neutral data plane: what every front end (REST in `serving.app`, gRPC in
`serving.grpc`) does with a request once its wire format is decoded.

As in MLServer, the protocols are thin adapters over one data plane: the same loaded model, the
same signature validation (`serving.v2.decode`: a mistake is an `InvalidInput` naming the input),
the same runner (dynamic batching, the single inference thread, the request timeout), the same
API key and the same Prometheus metrics, labelled with the protocol. An adapter only turns its
wire format into the v2 infer payload (a dict whose tensors' `data` may already be numpy arrays)
and the encoded answer back into its wire format, and maps `ServingError` to its own statuses.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.datastructures import Headers

from serving import __version__, v2
from serving.context import RequestContext
from serving.errors import NotFound, NotReady, RequestTimeout
from serving.model import ServedModel
from serving.state import ServerState, check_api_key

T = TypeVar("T")
SERVER_NAME = "ztml-serving"


@dataclass(slots=True)
class InferAnswer:
    """A v2 infer answer: output tensors (`name`, `shape`, `datatype`, and `data` unless the
    tensor is binary) and the binary parts, one per binary tensor, in order."""

    model: ServedModel
    request_id: str
    outputs: list[dict]
    blobs: list[bytes]


class DataPlane:
    """One per protocol front end: `protocol` labels its metrics (`http`, `grpc`)."""

    def __init__(self, state: ServerState, protocol: str) -> None:
        self.state = state
        self.protocol = protocol
        self.in_flight = 0  # requests being handled now (the SIGTERM drain waits for 0)
        self.total = 0  # requests received so far

    # ------------------------------------------------------------------ cross-cutting
    def authenticate(self, metadata: Iterable[tuple[str, str]]) -> None:
        """Raise `Unauthorized` unless the API key (when one is set) came as `x-api-key` or
        `authorization: Bearer <key>` - the HTTP headers' rule, applied to any key/value list."""
        if self.state.api_key is not None:
            check_api_key(Headers(headers=dict(metadata)), self.state.api_key)

    @staticmethod
    def request_id(supplied: str | None) -> str:
        return supplied or uuid.uuid4().hex

    async def guarded(self, ctx: RequestContext, call: Callable[[], Awaitable[T]]) -> T:
        """Run a prediction request as REST does: 503 unless the model answers, a batcher
        arrival hint, and the request timeout (`SERVING_REQUEST_TIMEOUT_SECONDS`)."""
        state = self.state
        if not state.answering:
            raise NotReady(f"the model is not ready ({state.status})")
        ctx.announced = state.runner.announce()
        try:
            async with asyncio.timeout(state.settings.request_timeout_seconds):
                return await call()
        except TimeoutError:
            raise RequestTimeout(
                f"no answer within {state.settings.request_timeout_seconds:g} s "
                "(SERVING_REQUEST_TIMEOUT_SECONDS)"
            ) from None
        finally:
            if ctx.announced:
                ctx.announced = False
                state.runner.withdraw()

    def observe(self, endpoint: str, status: int, seconds: float | None, kind: str | None) -> None:
        """Count one finished request (`inference_requests_total{endpoint,status,protocol}`,
        latency for predictions, `inference_errors_total{kind}` on failure)."""
        metrics = self.state.metrics
        metrics.observe_request(endpoint, status, seconds, self.protocol)
        if kind is not None:
            metrics.errors.labels(kind).inc()

    # ------------------------------------------------------------------ the protocol's calls
    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return self.state.ready

    def loaded(self) -> ServedModel:
        if self.state.model is None:
            raise NotReady(f"the model is not loaded ({self.state.status})")
        return self.state.model

    def model(self, name: str, version: str | None) -> ServedModel:
        """The served model if `name` (and `version`, when given) name it, else `NotFound`."""
        model = self.loaded()
        if name != model.name or (version and version != model.version):
            raise NotFound(
                f"model {name!r}{f' version {version!r}' if version else ''} is not served here; "
                f"this server serves {model.name!r} version {model.version!r}"
            )
        return model

    def server_metadata(self, extensions: list[str]) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": __version__, "extensions": extensions}

    def model_metadata(self, model: ServedModel) -> dict[str, Any]:
        return {
            "name": model.name,
            "versions": [model.version],
            "platform": v2.platform(model.flavor),
            "inputs": v2.tensor_metadata(model.schema),
            "outputs": v2.tensor_metadata(model.output_schema, "output"),
        }

    async def infer(self, payload: dict, ctx: RequestContext) -> InferAnswer:
        """Validate `payload` (a v2 infer request) against the signature, predict through the
        runner (batched with every other request, whatever its protocol), encode the outputs it
        asks for (`outputs`, `binary_data_output` as in `v2.encode_answer`)."""
        model = self.model(str(payload.get("model_name", "")), payload.get("model_version"))
        inp, params = v2.decode(payload, model.schema)
        output = await self.state.runner.infer(inp, params, ctx)
        self.state.metrics.predictions.inc(inp.rows)
        outputs, blobs = v2.encode_answer(output, payload)
        request_id = payload.get("id") if isinstance(payload.get("id"), str) else None
        return InferAnswer(model, request_id or ctx.request_id, outputs, blobs)
