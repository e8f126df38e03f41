"""The `ztml` MLflow deployments target, through MLflow's own client and CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow.deployments import get_deploy_client
from mlflow.exceptions import MlflowException

from tests.models import GOOD_METRICS, register_sklearn

ROWS = [{"income": 0.9, "age": 0.4, "debt": 0.1}, {"income": 0.1, "age": 0.2, "debt": 0.8}]


def _mlflow_cli(*args: str) -> subprocess.CompletedProcess[str]:
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    return subprocess.run(
        [str(mlflow_bin), "deployments", *args], capture_output=True, text=True, timeout=240
    )


def test_plugin_contract_create_get_list_predict_delete(ztml_env) -> None:
    version = register_sklearn(ztml_env.url, "plug-good", metrics=GOOD_METRICS)
    client = get_deploy_client("ztml")
    created = client.create_deployment("plug", f"models:/plug-good/{version}")
    try:
        assert created["name"] == "plug"
        assert created["flavor"] == "python_function"
        assert created["endpoint"].startswith("http://127.0.0.1:")
        assert client.get_deployment("plug")["model_version"] == version
        assert [d["name"] for d in client.list_deployments()] == ["plug"]
        import pandas as pd

        predictions = client.predict("plug", pd.DataFrame(ROWS))
        assert len(predictions.get_predictions()) == 2
        assert "predictions" in json.loads(predictions.to_json())
        # create again with the same version: idempotent, not an error
        assert client.create_deployment("plug", f"models:/plug-good/{version}")["name"] == "plug"
    finally:
        client.delete_deployment("plug")
    assert client.list_deployments() == []
    tags = mlflow.MlflowClient(ztml_env.url).get_model_version("plug-good", version).tags
    assert tags["ztml.local.status"] == "deleted"


def test_plugin_errors_are_clear(ztml_env) -> None:
    version = register_sklearn(
        ztml_env.url, "plug-bad", metrics={**GOOD_METRICS, "f1": 0.5, "fairness.dp": 0.4}
    )
    client = get_deploy_client("ztml")
    with pytest.raises(MlflowException) as rejected:
        client.create_deployment("plug-bad", f"models:/plug-bad/{version}")
    message = rejected.value.message
    assert "rejected" in message and "f1_score" in message and "0.5" in message
    assert client.list_deployments() == []
    with pytest.raises(MlflowException, match="unknown -C option"):
        client.create_deployment("x", f"models:/plug-bad/{version}", config={"replica": "2"})
    with pytest.raises(MlflowException, match="unknown environment 'qa'"):
        get_deploy_client("ztml:/qa").list_deployments()
    with pytest.raises(MlflowException, match="no deployment named"):
        client.get_deployment("nothing-here")
    with pytest.raises(MlflowException, match="not support"):
        client.explain("plug-bad", None)
    assert "replicas" in __import__("deployment_plugin").target_help()


def test_mlflow_cli_create_predict_and_deny(ztml_env, tmp_path: Path) -> None:
    good = register_sklearn(ztml_env.url, "plug-cli", metrics=GOOD_METRICS)
    bad = register_sklearn(ztml_env.url, "plug-cli", metrics={**GOOD_METRICS, "accuracy": 0.5})
    created = _mlflow_cli("create", "-t", "ztml", "--name", "cli", "-m", f"models:/plug-cli/{good}")
    try:
        assert created.returncode == 0, created.stderr
        assert "http://127.0.0.1:" in created.stdout
        input_file = tmp_path / "input.json"
        input_file.write_text(json.dumps(ROWS))
        predicted = _mlflow_cli("predict", "-t", "ztml", "--name", "cli", "-I", str(input_file))
        assert predicted.returncode == 0, predicted.stderr
        assert len(json.loads(predicted.stdout)["predictions"]) == 2
        denied = _mlflow_cli(
            "update", "-t", "ztml", "--name", "cli", "-m", f"models:/plug-cli/{bad}"
        )
        assert denied.returncode != 0
        assert "accuracy 0.5" in denied.stderr + denied.stdout
        # the good version keeps serving
        info = _mlflow_cli("get", "-t", "ztml", "--name", "cli")
        assert (
            f"model_version: '{good}'" in info.stdout or f"model_version: {good}\n" in info.stdout
        )
    finally:
        _mlflow_cli("delete", "-t", "ztml", "--name", "cli")
