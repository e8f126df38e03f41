"""The six RPCs of `inference.GRPCInferenceService` over the shared data plane.

Each call goes through `_handle`, the gRPC twin of `serving.app.Endpoint`: the API key (metadata
`x-api-key` or `authorization: Bearer <key>`, except for ServerLive/ServerReady, which probes use
like /v2/health/*), a request id (metadata `x-request-id`, echoed in the trailing metadata),
the readiness check and request timeout for ModelInfer, and one metrics sample per call
(`protocol="grpc"`). A `ServingError` becomes the gRPC status below, its message the details;
a signature error is INVALID_ARGUMENT whose details name the offending input (also sent as
trailing metadata `x-field`).

| data plane (HTTP) | gRPC                |
|-------------------|---------------------|
| 400, 415, 422     | INVALID_ARGUMENT    |
| 401               | UNAUTHENTICATED     |
| 404               | NOT_FOUND           |
| 413               | RESOURCE_EXHAUSTED  |
| 503               | UNAVAILABLE         |
| 504               | DEADLINE_EXCEEDED   |
| other 4xx         | FAILED_PRECONDITION |
| 500, other 5xx    | INTERNAL            |
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from serving.context import RequestContext
from serving.dataplane import DataPlane
from serving.errors import NotReady, ServingError
from serving.grpc import codec
from serving.grpc import predict_v2_pb2 as pb
from serving.grpc import predict_v2_pb2_grpc as pb_grpc

log = logging.getLogger("serving.grpc")

T = TypeVar("T")
SERVICE = "/inference.GRPCInferenceService/"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def status_code(http_status: int) -> grpc.StatusCode:
    """The gRPC status of a data-plane error (see the module docstring's table)."""
    code = _CODES.get(http_status)
    if code is not None:
        return code
    return grpc.StatusCode.FAILED_PRECONDITION if http_status < 500 else grpc.StatusCode.INTERNAL


def details(exc: ServingError) -> str:
    """The error's message, naming its field when the message does not already."""
    if exc.field and exc.field not in exc.message:
        return f"{exc.message} (field: {exc.field})"
    return exc.message


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """`GRPCInferenceService` for the one model the process serves."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    async def _handle(
        self,
        method: str,
        context: grpc.aio.ServicerContext,
        call: Callable[[RequestContext], Awaitable[T]],
        *,
        public: bool = False,
        predict: bool = False,
    ) -> T:
        plane = self.plane
        state = plane.state
        start = time.perf_counter()
        metadata = [(k, v) for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)]
        incoming = dict(metadata).get("x-request-id")
        request_id = incoming if incoming and _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        ctx = RequestContext(request_id)
        plane.in_flight += 1
        plane.total += 1
        if predict:
            state.metrics.in_flight.inc()
        status, kind, failure = 200, None, None
        try:
            if not public:
                plane.authenticate(metadata)
            if predict:
                return await plane.guarded(ctx, lambda: call(ctx))
            return await call(ctx)
        except ServingError as exc:
            status, kind, failure = exc.status, exc.kind, exc
            if exc.status >= 500:
                log.warning("%s", exc.message, extra={"request_id": request_id, "kind": kind})
        except asyncio.CancelledError:
            if state.status != "stopping":
                raise  # the client cancelled: nothing to answer
            status, kind = NotReady.status, NotReady.kind
            failure = NotReady(
                "the server stopped before the answer was ready "
                "(SERVING_SHUTDOWN_GRACE_SECONDS is over)"
            )
        except Exception as exc:  # a bug in the server, not in the model
            status, kind = 500, "internal"
            log.error("unhandled error", exc_info=exc, extra={"request_id": request_id})
            failure = ServingError(f"internal server error ({type(exc).__name__})")
        finally:
            plane.in_flight -= 1
            if predict:
                state.metrics.in_flight.dec()
            elapsed = time.perf_counter() - start
            plane.observe(SERVICE + method, status, elapsed if predict else None, kind)
            if state.settings.access_log:
                log.info(
                    "request",
                    extra={
                        "request_id": request_id,
                        "method": "grpc",
                        "path": SERVICE + method,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 3),
                    },
                )
        assert failure is not None
        trailing: list[tuple[str, str]] = [("x-request-id", request_id)]
        if failure.field is not None:
            trailing.append(("x-field", failure.field))
        context.set_trailing_metadata(trailing)
        await context.abort(status_code(status), details(failure))
        raise AssertionError("unreachable: abort raises")

    async def ServerLive(self, request: Any, context: Any) -> pb.ServerLiveResponse:
        async def call(ctx: RequestContext) -> pb.ServerLiveResponse:
            return pb.ServerLiveResponse(live=self.plane.live())

        return await self._handle("ServerLive", context, call, public=True)

    async def ServerReady(self, request: Any, context: Any) -> pb.ServerReadyResponse:
        async def call(ctx: RequestContext) -> pb.ServerReadyResponse:
            return pb.ServerReadyResponse(ready=self.plane.ready())

        return await self._handle("ServerReady", context, call, public=True)

    async def ModelReady(self, request: Any, context: Any) -> pb.ModelReadyResponse:
        async def call(ctx: RequestContext) -> pb.ModelReadyResponse:
            self.plane.model(request.name, request.version or None)
            return pb.ModelReadyResponse(ready=self.plane.ready())

        return await self._handle("ModelReady", context, call)

    async def ServerMetadata(self, request: Any, context: Any) -> pb.ServerMetadataResponse:
        async def call(ctx: RequestContext) -> pb.ServerMetadataResponse:
            return pb.ServerMetadataResponse(**self.plane.server_metadata([]))

        return await self._handle("ServerMetadata", context, call)

    async def ModelMetadata(self, request: Any, context: Any) -> pb.ModelMetadataResponse:
        async def call(ctx: RequestContext) -> pb.ModelMetadataResponse:
            meta = self.plane.model_metadata(
                self.plane.model(request.name, request.version or None)
            )
            tensors = pb.ModelMetadataResponse.TensorMetadata
            return pb.ModelMetadataResponse(
                name=meta["name"],
                versions=meta["versions"],
                platform=meta["platform"],
                inputs=[tensors(**t) for t in meta["inputs"]],
                outputs=[tensors(**t) for t in meta["outputs"]],
            )

        return await self._handle("ModelMetadata", context, call)

    async def ModelInfer(self, request: Any, context: Any) -> pb.ModelInferResponse:
        async def call(ctx: RequestContext) -> pb.ModelInferResponse:
            model = self.plane.model(request.model_name, request.model_version or None)
            payload = codec.request_payload(request, model.schema)
            if codec.wants_raw(request):
                payload["parameters"] = {
                    **(payload["parameters"] or {}),
                    "binary_data_output": True,
                }
            answer = await self.plane.infer(payload, ctx)
            context.set_trailing_metadata([("x-request-id", ctx.request_id)])
            return codec.response(answer)

        return await self._handle("ModelInfer", context, call, predict=True)
