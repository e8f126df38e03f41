"""Outgoing notifications: people hear about blocks, deployments and failures.

Two kinds of target per environment (`environments.<env>.notifications` in ztml.yaml):

- `slack`: a Slack-compatible incoming webhook; a readable message.
- `webhook`: a generic JSON webhook receiving a stable, documented event, `ztml.deployment.v1`
  (see docs/notifications.md), signed like MLflow signs its own webhooks:
  `X-Ztml-Signature: v1,<base64 HMAC-SHA256(secret, "{event_id}.{timestamp}.{body}")>` with
  `X-Ztml-Event-Id` and `X-Ztml-Timestamp`.

Delivery never blocks or fails the pipeline: `publish()` only enqueues; a bounded pool of
background threads sends with a timeout and retries 429/5xx/connection errors with exponential
backoff. A full queue or a delivery that finally fails is a log line and a metric, nothing more.
URLs (a Slack webhook URL is a credential) and secrets are never logged or put in messages, and
every event is redacted (`mlflow_ztml.redact`) before it is rendered: a deny reason or error
that quotes a credentialed URL reaches neither Slack nor a webhook with the credential.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import queue
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import requests
from prometheus_client import Counter
from pydantic import BaseModel, Field

from mlflow_ztml import links, signing
from mlflow_ztml.config import NotificationTarget, Settings
from mlflow_ztml.errors import ConfigError
from mlflow_ztml.redact import redact_data

EVENT_TYPE = "ztml.deployment.v1"
log = logging.getLogger("ztml.notify")

NOTIFICATIONS = Counter(
    "ztml_notifications_total",
    "Notification deliveries by target kind and result",
    ["kind", "result"],
)


class DeploymentEvent(BaseModel):
    """`ztml.deployment.v1`: the body of a generic webhook. Fields are only ever added."""

    type: Literal["ztml.deployment.v1"] = EVENT_TYPE
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    timestamp: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    model: str
    version: str
    env: str
    status: str
    decision: Literal["allow", "deny"] | None = None
    violations: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    error: str | None = None
    image_digest: str | None = None
    endpoint: str | None = None
    deployment: str | None = None
    audit_run_id: str | None = None
    links: dict[str, str] = Field(default_factory=dict)
    test: bool = False


def sign(secret: str, event_id: str, timestamp: str, body: bytes) -> str:
    """The `X-Ztml-Signature` value for a body; receivers recompute and compare in constant time."""
    return signing.sign(secret, event_id, timestamp, body)


def verify_signature(
    secret: str, event_id: str, timestamp: str, body: bytes, signature: str
) -> bool:
    """What a receiver runs (documented and tested): constant-time comparison."""
    return hmac.compare_digest(sign(secret, event_id, timestamp, body), signature)


def slack_message(event: DeploymentEvent) -> dict[str, Any]:
    """A readable Slack message: outcome first, then reasons, endpoint and links."""
    icon = {"deployed": ":white_check_mark:", "rejected": ":no_entry:"}.get(
        event.status, ":warning:"
    )
    lines = [
        f"{icon} *{event.model}* v{event.version} → *{event.env}*: *{event.status}*"
        + (" (test)" if event.test else "")
    ]
    lines += [f"• deny: {message}" for message in event.violations]
    lines += [f"• warn: {message}" for message in event.warnings]
    if event.error:
        lines.append(f"• error: {event.error}")
    if event.endpoint:
        lines.append(f"• endpoint: {event.endpoint}")
    if event.image_digest:
        lines.append(f"• image: {event.image_digest}")
    links = [f"<{url}|{label}>" for label, url in event.links.items()]
    if links:
        lines.append(" · ".join(links))
    text = "\n".join(lines)
    return {"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]}


def redacted(event: DeploymentEvent) -> DeploymentEvent:
    """The event with every text field redacted (errors, reasons, links): what leaves ztml."""
    return DeploymentEvent.model_validate(redact_data(event.model_dump()))


def _read_secret(env_name: str | None, file: Path | None, what: str) -> str | None:
    if env_name is not None:
        value = os.environ.get(env_name)
        if not value:
            raise ConfigError(f"notification {what}: environment variable {env_name} is not set")
        return value.strip()
    if file is not None:
        try:
            return Path(file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"notification {what}: cannot read {file}: {exc.strerror}") from None
    return None


class _Delivery(BaseModel):
    label: str
    kind: str
    url: str
    body: bytes
    headers: dict[str, str]
    timeout: float
    max_attempts: int
    backoff: float


class Notifier:
    """Sends events to the targets of an environment from a bounded background pool."""

    def __init__(self, settings: Settings, workers: int = 2, max_queue: int = 1000) -> None:
        self.settings = settings
        self._queue: queue.Queue[_Delivery | None] = queue.Queue(maxsize=max_queue)
        self._workers = [
            threading.Thread(target=self._work, name=f"ztml-notify-{i}", daemon=True)
            for i in range(workers)
        ]
        self._pending = 0
        self._lock = threading.Condition()
        for worker in self._workers:
            worker.start()

    def targets(self, environment: str) -> list[NotificationTarget]:
        return list(self.settings.environment(environment).notifications)

    def publish(self, event: DeploymentEvent, only_status: bool = True) -> int:
        """Queue `event` for every target of its environment that wants its status.

        Returns how many deliveries were queued. Never raises for delivery problems; a target
        whose URL or secret cannot be read is logged and counted, and the others still go.
        """
        queued = 0
        for index, target in enumerate(self.targets(event.env)):
            if only_status and event.status not in target.outcomes:
                continue
            label = target.name or f"{target.kind}[{index}]"
            try:
                delivery = self._delivery(label, target, event)
            except ConfigError as exc:
                NOTIFICATIONS.labels(target.kind, "misconfigured").inc()
                log.warning("notification target %s skipped: %s", label, exc)
                continue
            try:
                with self._lock:
                    self._pending += 1
                self._queue.put_nowait(delivery)
                queued += 1
            except queue.Full:
                with self._lock:
                    self._pending -= 1
                NOTIFICATIONS.labels(target.kind, "dropped").inc()
                log.warning("notification queue full: event %s to %s dropped", event.id, label)
        return queued

    def flush(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for queued deliveries; True when all were handled."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._pending > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(remaining)
        return True

    def flush_timeout(self, environment: str) -> float:
        """How long a short-lived process (CLI, plugin) waits for its deliveries at exit."""
        return max((t.timeout_seconds for t in self.targets(environment)), default=0.0)

    def _delivery(
        self, label: str, target: NotificationTarget, event: DeploymentEvent
    ) -> _Delivery:
        url = _read_secret(target.url_env, target.url_file, f"{label} url")
        secret = _read_secret(target.secret_env, target.secret_file, f"{label} secret")
        assert url is not None
        event = redacted(event)
        if target.kind == "slack":
            body = json.dumps(slack_message(event)).encode()
            headers = {"Content-Type": "application/json"}
        else:
            body = event.model_dump_json().encode()
            timestamp = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                "X-Ztml-Event": EVENT_TYPE,
                "X-Ztml-Event-Id": event.id,
                "X-Ztml-Timestamp": timestamp,
            }
            if secret:
                headers["X-Ztml-Signature"] = sign(secret, event.id, timestamp, body)
        return _Delivery(
            label=label,
            kind=target.kind,
            url=url,
            body=body,
            headers=headers,
            timeout=target.timeout_seconds,
            max_attempts=target.max_attempts,
            backoff=target.backoff_seconds,
        )

    def _work(self) -> None:
        while True:
            delivery = self._queue.get()
            if delivery is None:
                return
            try:
                self._send(delivery)
            finally:
                with self._lock:
                    self._pending -= 1
                    self._lock.notify_all()

    def send_now(self, event: DeploymentEvent) -> list[tuple[str, bool, str]]:
        """Deliver to every target of the event's environment synchronously (`ztml notify
        test`): (target label, delivered, problem) per target."""
        results: list[tuple[str, bool, str]] = []
        for index, target in enumerate(self.targets(event.env)):
            label = target.name or f"{target.kind}[{index}]"
            try:
                delivery = self._delivery(label, target, event)
            except ConfigError as exc:
                results.append((label, False, str(exc)))
                continue
            problem = self._send(delivery)
            results.append((label, problem is None, problem or "delivered"))
        return results

    def _send(self, delivery: _Delivery) -> str | None:
        """Deliver with retries; None when delivered, else what went wrong (no URL in it)."""
        problem = "not sent"
        for attempt in range(1, delivery.max_attempts + 1):
            try:
                response = requests.post(
                    delivery.url,
                    data=delivery.body,
                    headers=delivery.headers,
                    timeout=delivery.timeout,
                )
            except requests.RequestException as exc:
                problem = type(exc).__name__  # the message may contain the URL: never log it
            else:
                if response.status_code < 300:
                    NOTIFICATIONS.labels(delivery.kind, "delivered").inc()
                    return None
                problem = f"HTTP {response.status_code}"
                if response.status_code != 429 and response.status_code < 500:
                    break  # the receiver refuses this event; retrying will not help
            if attempt < delivery.max_attempts:
                NOTIFICATIONS.labels(delivery.kind, "retried").inc()
                time.sleep(delivery.backoff * 2 ** (attempt - 1))
        NOTIFICATIONS.labels(delivery.kind, "failed").inc()
        log.warning(
            "notification to %s failed after %d attempt(s): %s",
            delivery.label,
            attempt,
            problem,
        )
        return problem


def event_links(settings: Settings, event: DeploymentEvent, experiment_id: str | None) -> None:
    """Add MLflow UI links (model version, audit run) when a UI address is known."""
    base = links.ui_base(settings)  # no user info, query or fragment; names URL-escaped
    version = links.version_url(base, event.model, event.version)
    if version:
        event.links["model version"] = version
    run = links.run_url(base, experiment_id, event.audit_run_id)
    if run:
        event.links["audit run"] = run


def event_from_outcome(outcome: Any, settings: Settings) -> DeploymentEvent:
    """The event for one pipeline outcome (`pipeline.Outcome`)."""
    decision = outcome.decision
    event = DeploymentEvent(
        model=outcome.model_name,
        version=outcome.model_version,
        env=outcome.environment,
        status=outcome.status,
        decision=None if decision is None else ("allow" if decision.allow else "deny"),
        violations=list(decision.deny) if decision is not None else [],
        warnings=list(outcome.warnings),
        error=outcome.error,
        image_digest=getattr(outcome, "image", None),
        endpoint=outcome.endpoint,
        deployment=outcome.deployment,
        audit_run_id=outcome.audit_run_id,
    )
    event_links(settings, event, getattr(outcome, "audit_experiment_id", None))
    return event
