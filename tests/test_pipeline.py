"""The pipeline end to end: a real `mlflow server`, the real Rego engine, real serving processes."""

from __future__ import annotations

import json
import subprocess
import sys

import mlflow
import pytest
import requests

from mlflow_ztml.config import load_settings
from mlflow_ztml.errors import RegistryUnavailableError
from mlflow_ztml.pipeline import DeployOptions, Pipeline
from tests.mlflow_server import free_port
from tests.models import GOOD_METRICS, register_sklearn
from tests.pipeline_fixtures import TrafficLoop, process_runtime

ROW = {"income": 0.9, "age": 0.4, "debt": 0.1}


def _tags(url: str, name: str, version: str) -> dict[str, str]:
    return mlflow.MlflowClient(url).get_model_version(name, version).tags


@pytest.fixture
def pipeline(ztml_env) -> Pipeline:
    return Pipeline(load_settings())


def test_good_version_is_deployed_verified_and_recorded(ztml_env, pipeline) -> None:
    v1 = register_sklearn(ztml_env.url, "pipe-good", metrics=GOOD_METRICS)
    outcome = pipeline.run(f"models:/pipe-good/{v1}", "local", DeployOptions())
    try:
        assert outcome.status == "deployed", outcome.error
        assert outcome.decision.allow
        assert set(outcome.stage_seconds) >= {"evidence", "gate", "deploy", "verify"}
        response = requests.post(f"{outcome.endpoint}/predict", json={"inputs": [ROW]}, timeout=10)
        assert response.status_code == 200
        assert len(response.json()["predictions"]) == 1

        tags = _tags(ztml_env.url, "pipe-good", v1)
        assert tags["ztml.local.status"] == "deployed"
        assert tags["ztml.local.decision"] == "allow"
        assert tags["ztml.local.endpoint"] == outcome.endpoint
        assert tags["ztml.local.deployment"] == "pipe-good-local"
        assert tags["ztml.local.audit_run"] == outcome.audit_run_id
        assert tags["ztml.local.updated_at"]

        run = mlflow.MlflowClient(ztml_env.url).get_run(outcome.audit_run_id)
        assert run.data.params["model"] == "pipe-good"
        assert run.data.params["runtime"] == "process"
        assert run.info.status == "FINISHED"
        assert "stage_gate_seconds" in run.data.metrics
        manifest = mlflow.artifacts.load_text(f"runs:/{outcome.audit_run_id}/manifest.yaml")
        assert "kind: ModelDeployment" in manifest

        again = pipeline.run(f"models:/pipe-good/{v1}", "local", DeployOptions())
        assert again.status == "unchanged"
        assert again.endpoint == outcome.endpoint
    finally:
        pipeline.delete("pipe-good-local", "local")
    assert process_runtime().get("pipe-good-local") is None
    assert _tags(ztml_env.url, "pipe-good", v1)["ztml.local.status"] == "deleted"


def test_rejected_version_deploys_nothing_and_says_why(ztml_env, pipeline) -> None:
    bad = register_sklearn(
        ztml_env.url, "pipe-bad", metrics={**GOOD_METRICS, "accuracy": 0.6, "drift.psi": 0.5}
    )
    outcome = pipeline.run(f"models:/pipe-bad/{bad}", "local", DeployOptions())
    assert outcome.status == "rejected"
    assert process_runtime().get("pipe-bad-local") is None
    tags = _tags(ztml_env.url, "pipe-bad", bad)
    assert tags["ztml.local.status"] == "rejected"
    assert tags["ztml.local.decision"] == "deny"
    assert "accuracy" in tags["ztml.local.violations"]
    assert "0.6" in tags["ztml.local.violations"]
    decision = json.loads(mlflow.artifacts.load_text(f"runs:/{outcome.audit_run_id}/decision.json"))
    assert decision["allow"] is False
    assert decision["deny"] == outcome.decision.deny
    run = mlflow.MlflowClient(ztml_env.url).get_run(outcome.audit_run_id)
    assert run.data.tags["ztml.outcome"] == "rejected"
    assert run.data.metrics["policy_denies"] == len(outcome.decision.deny)


def test_update_keeps_serving_and_supersedes_the_old_version(ztml_env, pipeline) -> None:
    v1 = register_sklearn(ztml_env.url, "pipe-update", metrics=GOOD_METRICS)
    v2 = register_sklearn(ztml_env.url, "pipe-update", metrics={**GOOD_METRICS, "accuracy": 0.94})
    first = pipeline.run(f"models:/pipe-update/{v1}", "local", DeployOptions())
    assert first.status == "deployed", first.error
    try:
        with TrafficLoop("pipe-update-local", {"inputs": [ROW]}) as traffic:
            second = pipeline.run(f"models:/pipe-update/{v2}", "local", DeployOptions())
        assert second.status == "deployed", second.error
        assert second.previous_version == v1
        assert traffic.ok > 10
        assert traffic.failures == []
        status = process_runtime().get("pipe-update-local")
        assert status.model_version == v2 and status.state == "running"
        info = requests.get(f"{status.endpoint}/model/info", timeout=5).json()
        assert str(info["version"]) == v2
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{first.endpoint}/health", timeout=2)  # the old process is gone
        old_tags = _tags(ztml_env.url, "pipe-update", v1)
        assert old_tags["ztml.local.status"] == "superseded"
        assert old_tags["ztml.local.superseded_by"] == v2
    finally:
        pipeline.delete("pipe-update-local", "local")


def test_regression_against_the_serving_version_is_rejected(ztml_env, pipeline) -> None:
    v1 = register_sklearn(ztml_env.url, "pipe-regress", metrics={**GOOD_METRICS, "accuracy": 0.95})
    v2 = register_sklearn(ztml_env.url, "pipe-regress", metrics={**GOOD_METRICS, "accuracy": 0.90})
    assert pipeline.run(f"models:/pipe-regress/{v1}", "local", DeployOptions()).status == "deployed"
    try:
        outcome = pipeline.run(f"models:/pipe-regress/{v2}", "local", DeployOptions())
        assert outcome.status == "rejected"
        assert any("regress" in m.lower() or "drop" in m.lower() for m in outcome.decision.deny)
        assert process_runtime().get("pipe-regress-local").model_version == v1
    finally:
        pipeline.delete("pipe-regress-local", "local")


def test_plan_has_no_side_effects(ztml_env, pipeline) -> None:
    v1 = register_sklearn(ztml_env.url, "pipe-plan", metrics=GOOD_METRICS)
    plan = pipeline.plan(f"models:/pipe-plan/{v1}", "local", DeployOptions())
    assert plan.status == "planned"
    assert plan.decision.allow
    assert plan.stages_skipped == ["build", "scan"]
    assert plan.manifest["spec"]["model"]["version"] == v1
    assert process_runtime().get("pipe-plan-local") is None
    assert not any(k.startswith("ztml.") for k in _tags(ztml_env.url, "pipe-plan", v1))


def test_mlflow_unreachable_is_a_clear_error_and_nothing_starts(monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ZTML_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    pipeline = Pipeline(load_settings())
    with pytest.raises(RegistryUnavailableError, match="cannot reach MLflow"):
        pipeline.run("models:/anything/1", "local", DeployOptions())
    assert process_runtime().list() == []


def test_cli_deploy_status_and_delete_across_processes(ztml_env) -> None:
    v1 = register_sklearn(ztml_env.url, "pipe-cli", metrics=GOOD_METRICS)
    ztml = [sys.executable, "-m", "mlflow_ztml.cli"]
    deployed = subprocess.run(
        [*ztml, "deploy", f"models:/pipe-cli/{v1}", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert deployed.returncode == 0, deployed.stderr
    assert deployed.stdout, deployed.stderr
    outcome = json.loads(deployed.stdout)
    assert outcome["status"] == "deployed"
    listed = subprocess.run(
        [*ztml, "status", "--format", "json"], capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0, listed.stderr
    [status] = [s for s in json.loads(listed.stdout) if s["name"] == "pipe-cli-local"]
    assert status["state"] == "running" and status["endpoint"] == outcome["endpoint"]
    deleted = subprocess.run(
        [*ztml, "delete", "pipe-cli-local"], capture_output=True, text=True, timeout=60
    )
    assert deleted.returncode == 0, deleted.stderr
    missing = subprocess.run(
        [*ztml, "status", "pipe-cli-local"], capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 2
    assert "no deployment named 'pipe-cli-local'" in missing.stderr


def test_verify_failure_rolls_back_to_the_serving_version(ztml_env, pipeline, tmp_path) -> None:
    from tests.models import register_broken_pyfunc

    v1 = register_sklearn(ztml_env.url, "pipe-rollback", metrics=GOOD_METRICS)
    first = pipeline.run(f"models:/pipe-rollback/{v1}", "local", DeployOptions())
    assert first.status == "deployed", first.error
    try:
        v2 = register_broken_pyfunc(ztml_env.url, "pipe-rollback", tmp_path)
        with TrafficLoop("pipe-rollback-local", {"inputs": [ROW]}) as traffic:
            second = pipeline.run(f"models:/pipe-rollback/{v2}", "local", DeployOptions())
        assert second.status == "rolled_back"
        # verification's /predict got the model's 500 (the server itself stayed up)
        assert "/predict" in second.error and "500" in second.error, second.error
        assert second.previous_version == v1
        assert traffic.failures == [] and traffic.ok > 0
        status = process_runtime().get("pipe-rollback-local")
        assert status.model_version == v1 and status.endpoint == first.endpoint
        tags = _tags(ztml_env.url, "pipe-rollback", v2)
        assert tags["ztml.local.status"] == "rolled_back"
        assert (
            "feature store unreachable" in tags["ztml.local.error"]
            or "500" in tags["ztml.local.error"]
        )
        assert _tags(ztml_env.url, "pipe-rollback", v1)["ztml.local.status"] == "deployed"
        # only one serving process is left: the candidate was removed
        logs = list((tmp_path / "ztml-home" / "process" / "logs").glob("pipe-rollback-local-*"))
        assert len(logs) == 2
    finally:
        pipeline.delete("pipe-rollback-local", "local")
