"""Prometheus metrics, in their own registry (so tests and embedding never collide).

Names follow Prometheus conventions and are part of the contract (dashboards, alerts, the Helm
chart's ServiceMonitor rely on them):

* `inference_requests_total{endpoint,status,protocol}` every request: HTTP by route template,
  gRPC (`protocol="grpc"`) by full method name; `status` is the data plane's HTTP-equivalent code
  for both (a gRPC INVALID_ARGUMENT from a signature error counts as 422), so one 5xx alert
  covers both protocols
* `inference_predictions_total`                  rows predicted successfully
* `inference_errors_total{kind}`                 failures by kind (validation, model, timeout...)
* `inference_latency_seconds{endpoint,protocol}` request latency histogram (predictions)
* `inference_batch_size`                         rows per model call histogram
* `inference_model_info{name,version,flavor,device}` constant 1 for the served model
* `inference_model_ready`                        1 once loaded and warmed up
* `inference_in_flight_requests`                 prediction requests being handled
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    gc_collector,
    generate_latest,
    platform_collector,
    process_collector,
)

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """All server metrics; label children of the hot path are cached."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        disable_created_metrics()  # `*_created` series only double the scrape size
        self.registry = CollectorRegistry(auto_describe=True)
        process_collector.ProcessCollector(registry=self.registry)
        platform_collector.PlatformCollector(registry=self.registry)
        gc_collector.GCCollector(registry=self.registry)
        r = self.registry
        self.requests = Counter(
            "inference_requests",
            "Requests by endpoint, status code and protocol (http, grpc)",
            ["endpoint", "status", "protocol"],
            registry=r,
        )
        self.predictions = Counter(
            "inference_predictions", "Rows predicted successfully", registry=r
        )
        self.errors = Counter("inference_errors", "Failed requests by kind", ["kind"], registry=r)
        self.latency = Histogram(
            "inference_latency_seconds",
            "Prediction request latency",
            ["endpoint", "protocol"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "inference_batch_size", "Rows per model call", buckets=_BATCH_BUCKETS, registry=r
        )
        self.model_info = Gauge(
            "inference_model_info",
            "The served model (value is always 1)",
            ["name", "version", "flavor", "device"],
            registry=r,
        )
        self.ready = Gauge("inference_model_ready", "1 once the model is warm", registry=r)
        self.in_flight = Gauge(
            "inference_in_flight_requests", "Prediction requests being handled", registry=r
        )
        self._request_children: dict[tuple[str, int, str], Counter] = {}
        self._latency_children: dict[tuple[str, str], Histogram] = {}

    def observe_request(
        self, endpoint: str, status: int, seconds: float | None, protocol: str = "http"
    ) -> None:
        """Count one request; `seconds` (prediction requests only) feeds the latency histogram.
        `status` is the HTTP status code (for gRPC, the code HTTP would have answered)."""
        key = (endpoint, status, protocol)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(
                endpoint, str(status), protocol
            )
        child.inc()
        if seconds is not None:
            hkey = (endpoint, protocol)
            hist = self._latency_children.get(hkey)
            if hist is None:
                hist = self._latency_children[hkey] = self.latency.labels(endpoint, protocol)
            hist.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
