"""`response_format` chosen per deployment: `-C response_format=...` / `ztml deploy
--response-format` -> DeployOptions -> DeploymentSpec -> the server's SERVING_RESPONSE_FORMAT.

The end-to-end test deploys a real registered scikit-learn classifier through MLflow's own
deployments client on the process runtime (real `mlflow server`, real serving process)."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import pytest
import requests
from click.testing import CliRunner
from mlflow.deployments import get_deploy_client
from mlflow.exceptions import MlflowException
from pydantic import ValidationError

from mlflow_ztml.cli import main
from mlflow_ztml.pipeline import DeployOptions
from mlflow_ztml.runtimes.base import DeploymentSpec
from tests.models import GOOD_METRICS, register_sklearn

ROWS = [{"income": 0.9, "age": 0.4, "debt": 0.1}, {"income": 0.1, "age": 0.2, "debt": 0.8}]


def _spec(**kw: str) -> DeploymentSpec:
    return DeploymentSpec(
        name="credit-local",
        environment="local",
        model_name="credit",
        model_version="3",
        model_uri="models:/credit/3",
        **kw,
    )


def test_the_default_keeps_existing_fingerprints_and_a_format_change_is_a_change() -> None:
    spec = _spec()
    assert spec.response_format == "ztml"
    # what fingerprint() hashed before the option existed: deployments made then stay unchanged
    # (fields added since, such as the model signature, are absent from that material too)
    before = spec.model_dump(
        exclude={
            "ready_timeout_seconds",
            "tracking_uri",
            "registry_uri",
            "response_format",
            "model_signature",
            "model_public_key",
        }
    )
    digest = hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:16]
    assert spec.fingerprint() == digest
    assert _spec(response_format="mlifecycle").fingerprint() != digest


def test_an_unknown_format_is_refused_everywhere() -> None:
    with pytest.raises(ValidationError, match="response_format"):
        DeployOptions(response_format="kserve")
    assert DeployOptions(response_format="mlifecycle").response_format == "mlifecycle"
    result = CliRunner().invoke(main, ["deploy", "models:/credit/3", "--response-format", "x"])
    assert result.exit_code == 2
    assert "Invalid value for '--response-format'" in result.output
    assert "'ztml', 'mlifecycle'" in result.output
    assert (
        "--response-format [ztml|mlifecycle]"
        in CliRunner().invoke(main, ["deploy", "--help"]).output
    )


@pytest.mark.slow
def test_a_deployment_chooses_the_published_contract(ztml_env) -> None:
    version = register_sklearn(ztml_env.url, "fmt-clf", metrics=GOOD_METRICS)
    uri = f"models:/fmt-clf/{version}"
    client = get_deploy_client("ztml")
    with pytest.raises(MlflowException, match="response_format"):
        client.create_deployment("fmt", uri, config={"response_format": "kserve"})
    created = client.create_deployment("fmt", uri, config={"response_format": "mlifecycle"})
    try:
        url = created["endpoint"]
        assert requests.get(f"{url}/health", timeout=5).json()["status"] == "healthy"
        answer = requests.post(
            f"{url}/predict", json={"instances": [[0.9, 0.4, 0.1]]}, timeout=10
        ).json()
        item = answer["predictions"][0]
        assert set(item) == {"prediction", "confidence", "probabilities"}
        assert item["prediction"] == 1 and item["confidence"] == max(item["probabilities"])
        assert answer["inference_time_ms"] > 0
        # MLflow's own predict still works against the published shape
        frame = client.predict("fmt", pd.DataFrame(ROWS)).get_predictions()
        assert list(frame["prediction"]) == [1, 0]
        # back to ztml's format: a different setting, so a redeploy and not a no-op
        client.update_deployment("fmt", uri)
        url = client.get_deployment("fmt")["endpoint"]
        assert requests.get(f"{url}/health", timeout=5).json() == {"status": "ok"}
        plain = requests.post(f"{url}/predict", json={"inputs": ROWS}, timeout=10).json()
        assert plain["predictions"] == [1, 0]
    finally:
        client.delete_deployment("fmt")
