"""Helpers for the controller tests: signed deliveries and a stand-in controller."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import mlflow
import pytest
import requests

from mlflow_ztml.config import ControllerConfig
from mlflow_ztml.controller.app import WebhookReceiver
from mlflow_ztml.controller.desired import Key
from mlflow_ztml.controller.metrics import Metrics
from mlflow_ztml.controller.signature import sign

SECRET = "s3cr3t-for-tests"
ENVIRONMENTS = ("local", "staging", "production")


def delivery(
    entity: str, action: str, data: dict[str, Any], secret: str = SECRET, **overrides: Any
) -> tuple[dict[str, str], bytes]:
    """Headers and body exactly as MLflow 3.17 would send them."""
    body = json.dumps(
        {"entity": entity, "action": action, "timestamp": "2026-11-26T00:00:00+00:00", "data": data}
    ).encode()
    delivery_id = overrides.pop("delivery_id", str(uuid.uuid4()))
    timestamp = overrides.pop("timestamp", str(int(time.time())))
    headers = {
        "Content-Type": "application/json",
        "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": timestamp,
        "X-MLflow-Signature": sign(secret, delivery_id, timestamp, body),
    }
    headers.update(overrides.pop("headers", {}))
    assert not overrides, overrides
    return headers, body


def alias_created(model: str, alias: str = "staging", version: str = "1", **kw: Any):
    return delivery(
        "model_version_alias", "created", {"name": model, "alias": alias, "version": version}, **kw
    )


class RecordingController:
    """What `create_app` needs, with a queue that records every enqueue (no workers)."""

    def __init__(self, config: ControllerConfig | None = None, leading: bool = True) -> None:
        self.metrics = Metrics()
        self.enqueued: list[Key] = []
        self.leading = leading
        self.receiver = WebhookReceiver(
            [SECRET],
            config or ControllerConfig(),
            ENVIRONMENTS,
            enqueue=self._enqueue,
            metrics=self.metrics,
            accepting=lambda: self.leading,
        )

    def _enqueue(self, key: Key) -> bool:
        self.enqueued.append(key)
        return True

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def health(self) -> tuple[bool, dict[str, Any]]:
        return True, {"status": "ok"}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        return True, {"status": "ready"}

    def status(self) -> dict[str, Any]:
        return {}


@contextmanager
def counting(url: str) -> Iterator[list[str]]:
    """Every HTTP request this process sends to MLflow while inside (method and path)."""
    seen: list[str] = []
    original: Callable[..., requests.Response] = requests.Session.request

    def request(self: requests.Session, method: str, target: str, *args, **kwargs):
        if str(target).startswith(url):
            seen.append(f"{method} {str(target)[len(url) :]}")
        return original(self, method, target, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(requests.Session, "request", request)
        yield seen


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll `check` (against MLflow, the controller or a runtime; never a browser) until it
    returns something truthy, which is returned; MLflow or HTTP errors count as not yet."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except (requests.RequestException, mlflow.exceptions.MlflowException):
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
