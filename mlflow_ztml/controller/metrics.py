"""Prometheus metrics of the controller, on a registry of their own (one per controller, so
tests and the benchmark can run several in one process)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.deliveries = Counter(
            "ztml_webhook_deliveries",
            "Webhook deliveries by outcome (accepted, duplicate, ignored, rejected) and reason.",
            ["outcome", "reason"],
            registry=r,
        )
        self.enqueued = Counter(
            "ztml_controller_enqueued",
            "Keys handed to the work queue, by trigger (webhook, poll) and whether they were "
            "new work or coalesced with pending work.",
            ["trigger", "result"],
            registry=r,
        )
        self.reconciles = Counter(
            "ztml_controller_reconciles",
            "Reconciles of one (model, environment) key by action taken and result.",
            ["action", "result"],
            registry=r,
        )
        self.reconcile_seconds = Histogram(
            "ztml_controller_reconcile_duration_seconds",
            "Time to reconcile one key (a deploy includes the whole pipeline).",
            ["action"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.deployments = Counter(
            "ztml_controller_deployments",
            "Pipeline runs started by the controller, by environment and outcome.",
            ["environment", "outcome"],
            registry=r,
        )
        self.poll_seconds = Histogram(
            "ztml_controller_poll_duration_seconds",
            "Time to compare desired and actual state for every managed model.",
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.poll_errors = Counter(
            "ztml_controller_poll_errors",
            "Polls that failed (MLflow unreachable, ...).",
            registry=r,
        )
        self.last_poll = Gauge(
            "ztml_controller_last_successful_poll_timestamp_seconds",
            "Unix time of the last complete poll.",
            registry=r,
        )
        self.registry_up = Gauge(
            "ztml_controller_registry_up", "1 when the last MLflow call succeeded.", registry=r
        )
        self.leader = Gauge(
            "ztml_controller_leader", "1 while this replica may reconcile.", registry=r
        )
        self.queue_depth = Gauge(
            "ztml_controller_queue_depth",
            "Keys waiting for a worker (ready or in backoff).",
            registry=r,
        )
        self.in_progress = Gauge(
            "ztml_controller_reconciles_in_progress", "Keys being reconciled now.", registry=r
        )

    def track_queue(self, depth: Callable[[], int], in_progress: Callable[[], int]) -> None:
        self.queue_depth.set_function(depth)
        self.in_progress.set_function(in_progress)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def value(self, name: str, **labels: str) -> float:
        """One sample's current value (0 when absent); for tests and `/status`."""
        found = self.registry.get_sample_value(name, labels)
        return found or 0.0
