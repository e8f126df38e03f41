"""HTTP layer: routes, the per-request wrapper (auth, request id, limits, timeout, metrics,
errors) and the lifespan that loads and warms the model in the background.

Routes are plain ASGI callables on a Starlette router (no per-request dependency injection,
no BaseHTTPMiddleware): the wrapper below is the only code every request goes through.

| route                                   | auth | what                                        |
|-----------------------------------------|------|---------------------------------------------|
| GET  /health, /v2/health/live           | open | liveness: the process answers               |
| GET  /ready, /v2/health/ready           | open | 200 once the model is loaded and warm       |
| GET  /metrics                           | open | Prometheus text format                      |
| GET  /model/info                        | key  | name, version, run id, signature, device... |
| POST /predict                           | key  | ztml format (+ MLflow formats)              |
| POST /invocations                       | key  | MLflow scoring formats: JSON, CSV, Parquet  |
| GET  /ping, /version                    | open | MLflow scoring server's health and version  |
| GET  /v2, /v2/models/{name}[/ready]     | key  | Open Inference Protocol metadata            |
| POST /v2/models/{name}[/versions/{v}]/infer | key | Open Inference Protocol inference        |
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from serving import __version__, binary, encoding, jsonio, published, v1, v2
from serving.config import Settings
from serving.context import RequestContext
from serving.errors import (
    BadRequest,
    InvalidInput,
    NotFound,
    NotReady,
    PayloadTooLarge,
    RequestTimeout,
    ServingError,
    UnsupportedMediaType,
)
from serving.model import ServedModel, load
from serving.redact import one_line
from serving.state import ServerState, check_api_key

log = logging.getLogger("serving.app")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
_JSON = "application/json"
_OCTET = "application/octet-stream"
_PARQUET = "application/vnd.apache.parquet"
_INLINE_MAX_SECONDS = 0.002  # auto inline: CPU models whose warm example call is this fast


def json_response(body: Any, status: int = 200) -> Response:
    return Response(jsonio.dumps(body), status_code=status, media_type=_JSON)


# ------------------------------------------------------------------------------ request helpers
async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing (413) as soon as it is known to exceed `limit` bytes; with its
    `Content-Encoding` removed, the limit applying to the decoded size too."""
    body = await _read_raw(request, limit)
    return encoding.decode(body, request.headers.get("content-encoding"), limit)


async def _read_raw(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest("invalid Content-Length header")
        if int(declared) > limit:
            raise PayloadTooLarge(
                f"the body has {declared} bytes, more than the limit of {limit} "
                "(SERVING_MAX_BODY_BYTES)"
            )
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise BadRequest("the client disconnected before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(
                f"the body exceeds the limit of {limit} bytes (SERVING_MAX_BODY_BYTES)"
            )
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def parse_json(request: Request, body: bytes, *, csv_ok: bool = False) -> Any:
    """JSON body -> object; 415 for another content type, 400 for a body that is not JSON."""
    media = media_type(request)
    if media and media != _JSON and not media.endswith("+json"):
        accepted = "application/json or text/csv" if csv_ok else "application/json"
        raise UnsupportedMediaType(f"content type {media!r} is not supported; send {accepted}")
    if not body.strip():
        raise BadRequest("the body is empty; send a JSON object")
    try:
        return jsonio.loads(body)
    except jsonio.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None


def parse_v2(request: Request, body: bytes) -> Any:
    """A v2 infer request: JSON, or JSON header + binary tensors (`binary_tensor_data`).

    Decided by the protocol's `Inference-Header-Content-Length` header and the body, not by the
    Content-Type label alone: tritonclient.http.aio labels plain JSON `application/octet-stream`.
    """
    length = binary.header_length(request.headers.get(binary.HEADER), len(body))
    if length is None:
        media = media_type(request)
        if media == _OCTET:
            try:
                return jsonio.loads(body)
            except jsonio.JSONDecodeError:
                raise BadRequest(
                    "an application/octet-stream body without the Inference-Header-Content-Length"
                    " header must be JSON; send binary tensors with that header"
                ) from None
        return parse_json(request, body)
    try:
        payload = jsonio.loads(body[:length])
    except jsonio.JSONDecodeError as exc:
        raise BadRequest(
            f"the first {length} bytes (Inference-Header-Content-Length) are not valid JSON: {exc}"
        ) from None
    binary.attach_inputs(payload, memoryview(body)[length:])
    return payload


# ------------------------------------------------------------------------------ the wrapper
Handler = Callable[[Request, RequestContext], Awaitable[Response]]


class Endpoint:
    """ASGI app around one handler: every cross-cutting concern of a request lives here."""

    def __init__(
        self,
        state: ServerState,
        name: str,
        handler: Handler,
        *,
        public: bool = False,
        predict: bool = False,
        v2_errors: bool = False,
    ) -> None:
        self.state = state
        self.name = name
        self.handler = handler
        self.public = public
        self.predict = predict
        self.v2_errors = v2_errors

    def _error(self, exc: ServingError, request_id: str) -> Response:
        if self.v2_errors:
            body: dict[str, Any] = {"error": exc.message, "request_id": request_id}
        else:
            body = {"error_code": exc.code, "message": exc.message, "request_id": request_id}
        if exc.field is not None:
            body["field"] = exc.field
        response = json_response(body, exc.status)
        if exc.status == 401:
            response.headers["www-authenticate"] = 'Bearer realm="serving"'
        return response

    async def _guarded(self, request: Request, ctx: RequestContext) -> Response:
        state = self.state
        if not state.answering:
            raise NotReady(f"the model is not ready ({state.status})")
        ctx.announced = state.runner.announce()
        try:
            async with asyncio.timeout(state.settings.request_timeout_seconds):
                return await self.handler(request, ctx)
        except TimeoutError:
            raise RequestTimeout(
                f"no answer within {state.settings.request_timeout_seconds:g} s "
                "(SERVING_REQUEST_TIMEOUT_SECONDS)"
            ) from None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        start = time.perf_counter()
        state = self.state
        request = Request(scope, receive)
        incoming = request.headers.get("x-request-id")
        request_id = incoming if incoming and _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        ctx = RequestContext(request_id)
        kind = None
        if self.predict:
            state.metrics.in_flight.inc()
        try:
            if not self.public and state.api_key is not None:
                check_api_key(request.headers, state.api_key)
            if self.predict:
                response = await self._guarded(request, ctx)
            else:
                response = await self.handler(request, ctx)
        except ServingError as exc:
            kind = exc.kind
            response = self._error(exc, request_id)
            if exc.status >= 500:
                log.warning("%s", exc.message, extra={"request_id": request_id, "kind": kind})
        except Exception as exc:  # a bug in the server, not in the model
            kind = "internal"
            log.error("unhandled error", exc_info=exc, extra={"request_id": request_id})
            response = self._error(
                ServingError(f"internal server error ({type(exc).__name__})"), request_id
            )
        except asyncio.CancelledError:
            if state.status != "stopping":
                raise
            # the drain's grace period is over and uvicorn cancels what still runs: say so
            kind = NotReady.kind
            response = self._error(
                NotReady(
                    "the server stopped before the answer was ready "
                    "(SERVING_SHUTDOWN_GRACE_SECONDS is over)"
                ),
                request_id,
            )
        finally:
            if ctx.announced:
                state.runner.withdraw()
            if self.predict:
                state.metrics.in_flight.dec()
        response.raw_headers.append((b"x-request-id", request_id.encode()))
        if state.status == "stopping":  # draining: keep-alive clients reconnect elsewhere
            response.raw_headers.append((b"connection", b"close"))
        await response(scope, receive, send)
        elapsed = time.perf_counter() - start
        metrics = state.metrics
        metrics.observe_request(self.name, response.status_code, elapsed if self.predict else None)
        if kind is not None:
            metrics.errors.labels(kind).inc()
        if state.settings.access_log:
            log.info(
                "request",
                extra={
                    "request_id": request_id,
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": response.status_code,
                    "duration_ms": round(elapsed * 1000, 3),
                },
            )


# ------------------------------------------------------------------------------ handlers
def _handlers(state: ServerState) -> list[Route]:
    settings = state.settings
    runner = state.runner
    metrics = state.metrics
    limit = settings.max_body_bytes
    contract = published.PublishedContract(settings)  # SERVING_RESPONSE_FORMAT=mlifecycle

    async def health(request: Request, ctx: RequestContext) -> Response:
        return json_response(contract.health({"status": "ok"}))

    async def ready(request: Request, ctx: RequestContext) -> Response:
        body = {"status": state.status}
        if state.error:
            body["error"] = state.error
        body = contract.ready(body, state.model if state.ready else None)
        return json_response(body, 200 if state.ready else 503)

    async def metrics_text(request: Request, ctx: RequestContext) -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    def loaded() -> ServedModel:
        if state.model is None:
            raise NotReady(f"the model is not loaded ({state.status})")
        return state.model

    async def model_info(request: Request, ctx: RequestContext) -> Response:
        info = loaded().info(settings.image_digest)
        info["ready"] = state.ready
        info = contract.model_info(info, loaded())
        info["server"] = {
            "version": __version__,
            "max_batch_size": settings.max_batch_size,
            "max_batch_delay_ms": settings.max_batch_delay_ms if settings.batching else 0,
            "request_timeout_seconds": settings.request_timeout_seconds,
            "max_body_bytes": limit,
            "inline_inference": runner.inline,
        }
        return json_response(info)

    async def predict(request: Request, ctx: RequestContext) -> Response:
        model = loaded()
        payload = parse_json(request, await read_body(request, limit))
        if contract.enabled:
            body, rows = await contract.predict(payload, model, runner, ctx)
            metrics.predictions.inc(rows)
            return json_response(body)
        inp, params = v1.decode(payload, model.schema)
        output = await runner.infer(inp, params, ctx)
        metrics.predictions.inc(inp.rows)
        return json_response(
            {
                "predictions": v1.encode(output),
                "model": state.model_ref,
                "request_id": ctx.request_id,
            }
        )

    async def invocations(request: Request, ctx: RequestContext) -> Response:
        model = loaded()
        body = await read_body(request, limit)
        media = media_type(request)
        if media == "text/csv":
            inp, params = v1.decode_csv(body, model.schema), None
        elif media == _PARQUET:
            inp, params = v1.decode_parquet(body, model.schema), None
        else:
            inp, params = v1.decode(parse_json(request, body, csv_ok=True), model.schema)
        output = await runner.infer(inp, params, ctx)
        metrics.predictions.inc(inp.rows)
        return json_response({"predictions": v1.encode(output)})

    async def ping(request: Request, ctx: RequestContext) -> Response:
        # MLflow's scoring server: 200 with a newline once the model is loaded (it says 404
        # before; ztml says 503 like /ready: "not yet", not "no such thing")
        return Response("\n", status_code=200 if state.ready else 503, media_type=_JSON)

    async def version(request: Request, ctx: RequestContext) -> Response:
        # MLflow's scoring server answers its MLflow version as the bare text
        return Response(_mlflow_version(), media_type="text/plain")

    def v2_model(request: Request) -> ServedModel:
        model = loaded()
        name = request.path_params.get("name")
        version = request.path_params.get("version")
        if name != model.name or (version is not None and version != model.version):
            raise NotFound(
                f"model {name!r}{f' version {version!r}' if version else ''} is not served here; "
                f"this server serves {model.name!r} version {model.version!r}"
            )
        return model

    async def v2_server(request: Request, ctx: RequestContext) -> Response:
        return json_response(
            {"name": "ztml-serving", "version": __version__, "extensions": [binary.EXTENSION]}
        )

    async def v2_live(request: Request, ctx: RequestContext) -> Response:
        return json_response({"live": True})

    async def v2_ready(request: Request, ctx: RequestContext) -> Response:
        return json_response({"ready": state.ready}, 200 if state.ready else 503)

    async def v2_metadata(request: Request, ctx: RequestContext) -> Response:
        model = v2_model(request)
        return json_response(
            {
                "name": model.name,
                "versions": [model.version],
                "platform": v2.platform(model.flavor),
                "inputs": v2.tensor_metadata(model.schema),
                "outputs": v2.tensor_metadata(model.output_schema, "output"),
            }
        )

    async def v2_model_ready(request: Request, ctx: RequestContext) -> Response:
        model = v2_model(request)
        return json_response(
            {"name": model.name, "ready": state.ready}, 200 if state.ready else 503
        )

    async def v2_infer(request: Request, ctx: RequestContext) -> Response:
        model = v2_model(request)
        payload = parse_v2(request, await read_body(request, limit))
        inp, params = v2.decode(payload, model.schema)
        output = await runner.infer(inp, params, ctx)
        metrics.predictions.inc(inp.rows)
        request_id = payload.get("id") if isinstance(payload.get("id"), str) else ctx.request_id
        outputs, blobs = v2.encode_answer(output, payload)
        answer = {
            "model_name": model.name,
            "model_version": model.version,
            "id": request_id,
            "parameters": {},
            "outputs": outputs,
        }
        if not blobs:
            return json_response(answer)
        header = jsonio.dumps(answer)
        return Response(
            b"".join([header, *blobs]),
            media_type=_OCTET,
            headers={binary.HEADER: str(len(header))},
        )

    async def noop(request: Request, ctx: RequestContext) -> Response:
        await read_body(request, limit)
        return json_response({"predictions": [[0.0, 0.0]], "request_id": ctx.request_id})

    def ep(name: str, handler: Handler, **kw: Any) -> Endpoint:
        return Endpoint(state, name, handler, **kw)

    routes = [
        Route("/health", ep("/health", health, public=True), methods=["GET"]),
        Route("/ready", ep("/ready", ready, public=True), methods=["GET"]),
        Route("/metrics", ep("/metrics", metrics_text, public=True), methods=["GET"]),
        Route("/model/info", ep("/model/info", model_info), methods=["GET"]),
        Route("/predict", ep("/predict", predict, predict=True), methods=["POST"]),
        Route("/invocations", ep("/invocations", invocations, predict=True), methods=["POST"]),
        Route("/ping", ep("/ping", ping, public=True), methods=["GET"]),
        Route("/version", ep("/version", version, public=True), methods=["GET"]),
        Route("/v2", ep("/v2", v2_server, v2_errors=True), methods=["GET"]),
        Route(
            "/v2/health/live",
            ep("/v2/health/live", v2_live, public=True, v2_errors=True),
            methods=["GET"],
        ),
        Route(
            "/v2/health/ready",
            ep("/v2/health/ready", v2_ready, public=True, v2_errors=True),
            methods=["GET"],
        ),
    ]
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        routes += [
            Route(prefix, ep(prefix, v2_metadata, v2_errors=True), methods=["GET"]),
            Route(
                prefix + "/ready",
                ep(prefix + "/ready", v2_model_ready, v2_errors=True),
                methods=["GET"],
            ),
            Route(
                prefix + "/infer",
                ep(prefix + "/infer", v2_infer, predict=True, v2_errors=True),
                methods=["POST"],
            ),
        ]
    if settings.noop_endpoint:
        routes.append(Route("/noop", ep("/noop", noop, predict=True), methods=["POST"]))
    return routes


@functools.cache
def _mlflow_version() -> str:
    """The MLflow version in the image (what MLflow's `/version` answers); ztml's if none."""
    from importlib import metadata

    for dist in ("mlflow", "mlflow-skinny"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return __version__


async def _routing_error(request: Request, exc: Exception) -> Response:
    """404 (no route) and 405 (wrong method) as JSON: the protocol's `{"error": ...}` under
    /v2, ztml's error body elsewhere; clients parse error bodies as JSON, never text/plain."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    path = request.url.path
    if status == 405:
        message = f"method {request.method} is not allowed on {path}"
    elif status == 404:
        message = f"no route {path}"
    else:
        message = str(getattr(exc, "detail", "")) or "error"
    if path == "/v2" or path.startswith("/v2/"):
        body: dict[str, Any] = {"error": message}
    else:
        code = {404: "ENDPOINT_NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(status, "BAD_REQUEST")
        body = {"error_code": code, "message": message}
    headers = getattr(exc, "headers", None)
    response = json_response(body, status)
    if headers:
        response.headers.update(headers)
    return response


# ------------------------------------------------------------------------------ lifecycle
async def _load_and_warm(state: ServerState) -> None:
    """Load the model on the inference thread, run its input example, then flip to ready."""
    settings = state.settings
    runner = state.runner
    try:
        started = time.perf_counter()
        model = await runner.call(lambda: load(settings))
        example = model.input_example
        if example is not None:
            try:
                inp, params = v1.decode(example, model.schema)
            except InvalidInput as exc:
                raise RuntimeError(
                    f"the model's own input example does not pass validation: {exc.message}"
                ) from None
            await runner.call(lambda: model.predictor.predict(inp, params))
            began = time.perf_counter()  # a second, warm call tells how heavy the model is
            await runner.call(lambda: model.predictor.predict(inp, params))
            call_seconds = time.perf_counter() - began
            runner.inline = settings.inline_inference == "on" or (
                settings.inline_inference == "auto"
                and model.predictor.device == "cpu"
                and call_seconds < _INLINE_MAX_SECONDS
            )
        else:
            log.warning("the model has no input example: ready without a warm-up call")
        gc.collect()
        gc.freeze()  # the loaded model is long-lived: keep it out of every future GC pass
        runner.attach(model.predictor)
        state.model = model
        state.model_ref = {"name": model.name, "version": model.version}
        state.metrics.model_info.labels(
            model.name, model.version, model.flavor, model.predictor.device
        ).set(1)
        if state.status == "loading":  # not when SIGTERM came during the load
            state.metrics.ready.set(1)
            state.status = "ready"
        log.info(
            "model ready",
            extra={
                "model_name": model.name,
                "model_version": model.version,
                "flavor": model.flavor,
                "predictor": type(model.predictor).__name__,
                "device": model.predictor.device,
                "inline_inference": runner.inline,
                "seconds": round(time.perf_counter() - started, 2),
            },
        )
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        state.status = "failed"
        state.error = one_line(exc)  # /ready and the exit line on stderr: redacted, one line
        log.error("cannot serve the model: %s", exc, exc_info=exc)
        if state.on_fatal is not None:
            state.on_fatal()


def create_app(settings: Settings, on_fatal: Callable[[], None] | None = None) -> Starlette:
    """The ASGI app; the model loads in the background once the server is up."""
    state = ServerState(settings, on_fatal)

    @asynccontextmanager
    async def lifespan(app: Starlette):  # type: ignore[no-untyped-def]
        loader = asyncio.get_running_loop().create_task(_load_and_warm(state))
        yield
        if state.status == "ready":
            state.status = "stopping"
        state.metrics.ready.set(0)
        loader.cancel()
        await state.runner.stop()

    app = Starlette(
        routes=_handlers(state),
        lifespan=lifespan,
        middleware=[Middleware(GZipMiddleware, minimum_size=encoding.GZIP_MINIMUM_BYTES)],
        exception_handlers={HTTPException: _routing_error},
    )
    app.state.serving = state
    return app
