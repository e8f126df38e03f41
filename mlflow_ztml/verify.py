"""Verify a freshly started deployment: `/ready`, the right model, one real `/predict`.

The prediction uses the model's own input example, which the server exposes in `/model/info`,
so verification needs nothing from MLflow and proves the exact artifact that will serve.
"""

from __future__ import annotations

import time
from typing import Any

import requests

from mlflow_ztml.errors import DeployError
from mlflow_ztml.redact import clip
from mlflow_ztml.runtimes.base import DeploymentStatus


class VerifyError(DeployError):
    """The new deployment started but did not answer correctly; it must not take traffic."""


def verify(
    status: DeploymentStatus, timeout_seconds: float = 30.0, headers: dict[str, str] | None = None
) -> list[str]:
    """Raise VerifyError unless the deployment is ready and predicts; return warnings."""
    if not status.endpoint:
        raise VerifyError(f"{status.name} has no endpoint to verify")
    base = status.endpoint.rstrip("/")
    _wait_ready(base, timeout_seconds, headers)
    info = _get_json(f"{base}/model/info", headers)
    served = str(info.get("version") or "")
    if served and served != status.model_version:
        raise VerifyError(f"{status.name} serves version {served}, expected {status.model_version}")
    example = info.get("input_example")
    if example is None:
        return ["model has no input example: /predict was not exercised during verification"]
    response = _post(f"{base}/predict", request_body(example), headers)
    if response.status_code != 200:
        raise VerifyError(
            f"/predict with the model's input example answered {response.status_code}: "
            f"{clip(response.text, 500)}"
        )
    predictions = response.json().get("predictions")
    if predictions is None or (hasattr(predictions, "__len__") and len(predictions) == 0):
        raise VerifyError("/predict with the model's input example returned no predictions")
    return []


_REQUEST_KEYS = {"inputs", "instances", "dataframe_split", "dataframe_records"}


def request_body(example: Any) -> dict[str, Any]:
    """An input example is either already a scoring request (MLflow's serving input example)
    or bare data to wrap in `{"inputs": ...}`."""
    if isinstance(example, dict) and len(example) == 1 and set(example) <= _REQUEST_KEYS:
        return example
    return {"inputs": example}


def _wait_ready(base: str, timeout: float, headers: dict[str, str] | None) -> None:
    """Poll `/ready` with a short, growing pause (10 ms up to 200 ms): a runtime that already
    waited for readiness (the process runtime) costs one request, a fresh one is seen ready
    within a few tens of milliseconds of being so, and a slow one is not hammered."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    pause = 0.01
    while time.monotonic() < deadline:
        try:
            response = requests.get(f"{base}/ready", timeout=2, headers=headers)
            if response.status_code == 200:
                return
            last = f"HTTP {response.status_code}"
        except requests.RequestException as exc:
            last = type(exc).__name__
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 2, 0.2)
    raise VerifyError(f"{base}/ready did not answer 200 within {timeout:.0f} s (last: {last})")


def _get_json(url: str, headers: dict[str, str] | None) -> dict[str, Any]:
    try:
        response = requests.get(url, timeout=5, headers=headers)
    except requests.RequestException as exc:
        raise VerifyError(f"GET {url} failed: {exc}") from None
    if response.status_code != 200:
        raise VerifyError(f"GET {url} answered {response.status_code}: {clip(response.text, 300)}")
    return response.json()


def _post(url: str, body: dict[str, Any], headers: dict[str, str] | None) -> requests.Response:
    try:
        return requests.post(url, json=body, timeout=30, headers=headers)
    except requests.RequestException as exc:
        raise VerifyError(f"POST {url} failed: {exc}") from None
