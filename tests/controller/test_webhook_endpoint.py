"""The webhook endpoint over HTTP (ASGI, no server): answers, reasons, metrics, the burst."""

from __future__ import annotations

import json
import random
import time

import pytest
from fastapi.testclient import TestClient

from mlflow_ztml.config import ControllerConfig
from mlflow_ztml.controller.app import create_app
from mlflow_ztml.controller.desired import Key
from tests.controller.helpers import RecordingController, alias_created, delivery

URL = "/webhooks/mlflow"


@pytest.fixture
def controller() -> RecordingController:
    return RecordingController()


@pytest.fixture
def client(controller: RecordingController) -> TestClient:
    return TestClient(create_app(controller))


def _count(controller: RecordingController, outcome: str, reason: str) -> float:
    return controller.metrics.value("ztml_webhook_deliveries_total", outcome=outcome, reason=reason)


def test_valid_delivery_is_queued_and_answered_202(client, controller) -> None:
    headers, body = alias_created("m", "champion")
    response = client.post(URL, content=body, headers=headers)
    assert response.status_code == 202
    assert response.json()["keys"] == ["m/production"]
    assert controller.enqueued == [Key("m", "production")]
    assert _count(controller, "accepted", "queued") == 1


def test_forged_missing_and_stale_are_401_with_reasons(client, controller) -> None:
    headers, body = alias_created("m", secret="wrong")
    forged = client.post(URL, content=body, headers=headers)
    assert (forged.status_code, forged.json()["reason"]) == (401, "bad_signature")

    headers, body = alias_created("m")
    del headers["X-MLflow-Signature"]
    missing = client.post(URL, content=body, headers=headers)
    assert (missing.status_code, missing.json()["reason"]) == (401, "missing_signature")

    headers, body = alias_created("m", timestamp=str(int(time.time()) - 3600))
    stale = client.post(URL, content=body, headers=headers)
    assert (stale.status_code, stale.json()["reason"]) == (401, "stale_timestamp")

    headers, body = alias_created("m")
    tampered = client.post(URL, content=body.replace(b'"m"', b'"x"'), headers=headers)
    assert tampered.status_code == 401
    assert controller.enqueued == []
    metrics = client.get("/metrics").text
    assert 'ztml_webhook_deliveries_total{outcome="rejected",reason="bad_signature"} 2.0' in metrics
    assert 'reason="stale_timestamp"' in metrics


def test_signed_but_malformed_is_400(client, controller) -> None:
    headers, body = delivery("model_version_alias", "created", {"name": "m"})
    response = client.post(URL, content=body, headers=headers)
    assert response.status_code == 400
    assert response.json()["reason"] == "invalid_payload"
    assert "data.alias" in response.json()["detail"]
    assert controller.enqueued == []


def test_duplicate_and_ignored_are_2xx_so_mlflow_does_not_retry(client, controller) -> None:
    headers, body = alias_created("m")
    assert client.post(URL, content=body, headers=headers).status_code == 202
    again = client.post(URL, content=body, headers=headers)
    assert (again.status_code, again.json()["status"]) == (200, "duplicate")
    headers, body = delivery("registered_model", "created", {"name": "m", "tags": {}})
    ignored = client.post(URL, content=body, headers=headers)
    assert (ignored.status_code, ignored.json()["reason"]) == (200, "unsubscribed_event")
    assert controller.enqueued == [Key("m", "staging")]


def test_oversized_body_is_413_without_reading_it(client) -> None:
    headers, _ = alias_created("m")
    response = client.post(URL, content=b"x" * 2_000_000, headers=headers)
    assert (response.status_code, response.json()["reason"]) == (413, "body_too_large")


def test_standby_replica_answers_503_with_retry_after(controller) -> None:
    controller.leading = False
    client = TestClient(create_app(controller))
    headers, body = alias_created("m")
    response = client.post(URL, content=body, headers=headers)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    controller.leading = True
    assert client.post(URL, content=body, headers=headers).status_code == 202  # MLflow's retry


def test_no_secret_configured_refuses_everything() -> None:
    controller = RecordingController()
    controller.receiver.secrets = []
    headers, body = alias_created("m")
    response = TestClient(create_app(controller)).post(URL, content=body, headers=headers)
    assert (response.status_code, response.json()["reason"]) == (401, "no_secret_configured")


def test_mlflow_test_delivery_is_answered(client) -> None:
    """`ztml webhook test` sends MLflow's example payload: alias `example_alias`."""
    from mlflow.entities.webhook import WebhookEvent
    from mlflow.webhooks.types import get_example_payload_for_event

    data = get_example_payload_for_event(WebhookEvent.from_str("model_version_alias.created"))
    headers, body = delivery("model_version_alias", "created", dict(data))
    response = client.post(URL, content=body, headers=headers)
    assert (response.status_code, response.json()["reason"]) == (200, "alias_not_mapped")


def test_burst_of_1000_mixed_deliveries() -> None:
    """Valid, duplicate (MLflow retries) and forged deliveries, shuffled: every one answered,
    every valid one queued exactly once, nothing forged queued."""
    controller = RecordingController(ControllerConfig(aliases={"staging": "staging"}))
    client = TestClient(create_app(controller))
    valid = [alias_created(f"model-{i}") for i in range(500)]
    duplicates = [valid[i] for i in range(0, 500, 2)]
    forged = [alias_created(f"evil-{i}", secret="guess") for i in range(150)]
    replayed_forged = [(dict(h, **{"X-MLflow-Signature": "v1,AAAA"}), b) for h, b in valid[:100]]
    requests = valid + duplicates + forged + replayed_forged
    assert len(requests) == 1000
    random.Random(6).shuffle(requests)

    started = time.perf_counter()
    codes = [client.post(URL, content=b, headers=h).status_code for h, b in requests]
    seconds = time.perf_counter() - started

    assert len(codes) == 1000
    assert codes.count(202) == 500
    assert codes.count(200) == 250
    assert codes.count(401) == 250
    assert sorted(k.model for k in controller.enqueued) == sorted(f"model-{i}" for i in range(500))
    assert not any(k.model.startswith("evil") for k in controller.enqueued)
    metrics = controller.metrics
    assert (
        metrics.value("ztml_webhook_deliveries_total", outcome="accepted", reason="queued") == 500
    )
    assert (
        metrics.value("ztml_webhook_deliveries_total", outcome="duplicate", reason="duplicate")
        == 250
    )
    print(f"1000 deliveries in {seconds:.2f} s ({1000 / seconds:.0f}/s through the ASGI stack)")
    assert json.loads(client.get("/healthz").text)["status"] == "ok"
