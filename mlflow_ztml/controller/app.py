"""The controller's HTTP side: the MLflow webhook endpoint, health, readiness, metrics, status.

`POST /webhooks/mlflow` does only cheap, bounded work inside the request: size check,
signature check, JSON parse, de-duplication, routing to keys, enqueue. It answers at once:

| status | when                                                | MLflow retries? |
|--------|-----------------------------------------------------|-----------------|
| 202    | accepted; keys queued                               | no              |
| 200    | duplicate delivery id, or an event that changes nothing | no          |
| 400    | signed, but not an MLflow webhook payload           | no              |
| 401    | signature missing, forged, or timestamp stale       | no              |
| 413    | body over `controller.max_body_bytes`               | no              |
| 503    | this replica is not the leader / shutting down      | yes (same id,   |
|        | (with `Retry-After: 1`)                             | Retry-After)    |

Every answer carries `{"status", "reason", ...}` and counts in
`ztml_webhook_deliveries_total{outcome, reason}`. The pipeline never runs in the request.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from mlflow_ztml.config import ControllerConfig
from mlflow_ztml.controller import events, signature, status_page
from mlflow_ztml.controller.desired import Key
from mlflow_ztml.controller.metrics import Metrics
from mlflow_ztml.redact import redact_data


class DeliveryCache:
    """Delivery ids seen recently, bounded in time and size.

    Remembering an id for the signature tolerance (twice, for clock skew) is enough: an older
    delivery fails the timestamp check before it gets here, and MLflow's retries reuse the
    original timestamp. Forgetting early only costs one extra (harmless, level-triggered)
    reconcile.
    """

    def __init__(self, ttl_seconds: float, max_entries: int, clock: Callable[[], float]) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def seen(self, delivery_id: str) -> bool:
        with self._lock:
            self._expire()
            return delivery_id in self._seen

    def remember(self, delivery_id: str) -> None:
        with self._lock:
            self._seen[delivery_id] = self._clock()
            self._seen.move_to_end(delivery_id)
            while len(self._seen) > self.max_entries:
                self._seen.popitem(last=False)

    def __len__(self) -> int:
        return len(self._seen)

    def _expire(self) -> None:
        cutoff = self._clock() - self.ttl
        while self._seen:
            oldest = next(iter(self._seen.values()))
            if oldest >= cutoff:
                return
            self._seen.popitem(last=False)


class WebhookReceiver:
    """Authenticates, de-duplicates and routes one delivery; `handle` is transport-free so
    tests and the benchmark can drive it without HTTP."""

    def __init__(
        self,
        secrets: list[str],
        config: ControllerConfig,
        environments: Iterable[str],
        enqueue: Callable[[Key], bool],
        metrics: Metrics,
        accepting: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.secrets = secrets
        self.config = config
        self.environments = sorted(environments)
        self.enqueue = enqueue
        self.metrics = metrics
        self.accepting = accepting
        self.clock = clock
        self.cache = DeliveryCache(
            2 * config.signature_tolerance_seconds, config.dedup_max_entries, time.monotonic
        )
        self._in_flight: set[str] = set()
        self._lock = threading.Lock()

    def handle(self, headers: Mapping[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        headers = {k.lower(): v for k, v in headers.items()}
        if len(body) > self.config.max_body_bytes:
            return self.too_large()
        delivery_id = headers.get(signature.DELIVERY_ID_HEADER.lower())
        try:
            signature.verify(
                self.secrets,
                delivery_id=delivery_id,
                timestamp=headers.get(signature.TIMESTAMP_HEADER.lower()),
                signature=headers.get(signature.SIGNATURE_HEADER.lower()),
                body=body,
                tolerance_seconds=self.config.signature_tolerance_seconds,
                now=self.clock(),
            )
        except signature.SignatureError as exc:
            return self._answer(401, "rejected", exc.reason, detail=str(exc))
        assert delivery_id is not None
        if not self.accepting():
            # MLflow retries 5xx with the same id (honouring Retry-After); behind a Service the
            # retry usually reaches the leader, and the leader's poll catches the rest.
            return self._answer(
                503, "unavailable", "not_leader", delivery_id=delivery_id, retry_after=1
            )
        with self._lock:  # concurrent copies of one delivery: exactly one proceeds
            if delivery_id in self._in_flight or self.cache.seen(delivery_id):
                return self._answer(200, "duplicate", "duplicate", delivery_id=delivery_id)
            self._in_flight.add(delivery_id)
        try:
            try:
                delivery = events.parse(body)
                routing = events.route(delivery, self.config, self.environments)
            except events.MalformedDelivery as exc:
                self.cache.remember(delivery_id)
                return self._answer(400, "rejected", exc.reason, detail=str(exc))
            if routing.ignored:
                self.cache.remember(delivery_id)
                return self._answer(
                    200, "ignored", routing.ignored, delivery_id=delivery_id, event=routing.event
                )
            for key in routing.keys:
                result = "queued" if self.enqueue(key) else "coalesced"
                self.metrics.enqueued.labels("webhook", result).inc()
            self.cache.remember(delivery_id)
            return self._answer(
                202,
                "accepted",
                "queued",
                delivery_id=delivery_id,
                event=routing.event,
                keys=[str(k) for k in routing.keys],
            )
        finally:
            with self._lock:
                self._in_flight.discard(delivery_id)

    def too_large(self) -> tuple[int, dict[str, Any]]:
        return self._answer(
            413, "rejected", "body_too_large", detail=f"limit {self.config.max_body_bytes} bytes"
        )

    def _answer(
        self, code: int, outcome: str, reason: str, **extra: Any
    ) -> tuple[int, dict[str, Any]]:
        self.metrics.deliveries.labels(outcome, reason).inc()
        return code, {"status": outcome, "reason": reason, **extra}


class ControllerLike(Protocol):
    """What the HTTP layer needs from the controller (see `manager.Controller`)."""

    receiver: WebhookReceiver
    metrics: Metrics

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def health(self) -> tuple[bool, dict[str, Any]]: ...
    def readiness(self) -> tuple[bool, dict[str, Any]]: ...
    def status(self) -> dict[str, Any]: ...


def create_app(controller: ControllerLike, manage_lifecycle: bool = True) -> FastAPI:
    """The ASGI app; with `manage_lifecycle` the controller's threads start and stop with it."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI):  # type: ignore[no-untyped-def]
        if manage_lifecycle:
            controller.start()
        try:
            yield
        finally:
            if manage_lifecycle:
                controller.stop()

    app = FastAPI(title="ztml controller", lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.post("/webhooks/mlflow")
    async def mlflow_webhook(request: Request) -> JSONResponse:
        receiver = controller.receiver
        limit = receiver.config.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            code, body = receiver.too_large()
            return JSONResponse(body, status_code=code)
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():  # bounded even without a Content-Length
            size += len(chunk)
            if size > limit:
                code, body = receiver.too_large()
                return JSONResponse(body, status_code=code)
            chunks.append(chunk)
        code, body = receiver.handle(request.headers, b"".join(chunks))
        headers = {"Retry-After": str(body["retry_after"])} if "retry_after" in body else None
        return JSONResponse(body, status_code=code, headers=headers)

    # What the controller reports about itself carries error texts from MLflow, runtimes and
    # the pipeline: redacted here, at the boundary, whatever produced them.
    @app.get("/healthz")
    def healthz() -> JSONResponse:
        ok, body = controller.health()
        return JSONResponse(redact_data(body), status_code=200 if ok else 500)

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        ok, body = controller.readiness()
        return JSONResponse(redact_data(body), status_code=200 if ok else 503)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(controller.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    # `/` and `/status` are one resource in two forms and share one guard: the controller has
    # no login of its own; who may reach its port decides (the chart's Service and
    # NetworkPolicy, docs/controller.md "Operations").
    @app.get("/status")
    def status() -> JSONResponse:
        return JSONResponse(redact_data(controller.status()))

    @app.get("/", response_class=HTMLResponse)
    def status_page_view() -> HTMLResponse:
        page = status_page.render(redact_data(controller.status()))
        return HTMLResponse(page, headers=status_page.HEADERS)

    return app
