"""The pipeline end to end: a real `mlflow server`, the real Rego engine, real serving processes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import mlflow
import pytest
import requests

from mlflow_ztml.config import load_settings
from mlflow_ztml.errors import DeploymentConflictError, RegistryUnavailableError, ZtmlError
from mlflow_ztml.pipeline import DeployOptions, Pipeline
from mlflow_ztml.registry import Registry
from tests.mlflow_server import free_port
from tests.models import GOOD_METRICS, register_sklearn
from tests.pipeline_fixtures import TrafficLoop, process_runtime

ROW = {"income": 0.9, "age": 0.4, "debt": 0.1}
WHEN = r"\d{4}-\d\d-\d\d \d\d:\d\dZ"  # the time at the end of a final headline
ZTML = [sys.executable, "-m", "mlflow_ztml.cli"]


def _ztml(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ZTML, *args], capture_output=True, text=True, timeout=180)


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
        assert re.fullmatch(
            rf"deployed v{v1} · allow( · \d+ warnings?)? · {re.escape(outcome.endpoint)} · {WHEN}",
            tags["ztml.local"],
        )
        assert "" not in tags.values()

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
    tags = _tags(ztml_env.url, "pipe-good", v1)
    assert tags["ztml.local.status"] == "deleted"
    assert "ztml.local.endpoint" not in tags  # gone, not an empty string
    assert re.fullmatch(rf"deleted v{v1} · {WHEN}", tags["ztml.local"])


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
    assert tags["ztml.local.violations"].startswith("1) ")
    count = len(outcome.decision.deny)
    assert re.match(rf"rejected v{bad} · {count} violations?: 1\) ", tags["ztml.local"])
    assert "accuracy 0.6 < 0." in tags["ztml.local"]
    assert "" not in tags.values()
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
        process_runtime().wait_retired("pipe-update-local")  # it drains in the background
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{first.endpoint}/health", timeout=2)  # the old process is gone
        old_tags = _tags(ztml_env.url, "pipe-update", v1)
        assert old_tags["ztml.local.status"] == "superseded"
        assert old_tags["ztml.local.superseded_by"] == v2
        assert "ztml.local.endpoint" not in old_tags  # it no longer serves there
        assert re.fullmatch(rf"superseded v{v1} · by v{v2} · {WHEN}", old_tags["ztml.local"])
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
        assert re.fullmatch(rf"rolled_back v{v2} · .*500.* · {WHEN}", tags["ztml.local"])
        assert "ztml.local.decision" in tags and "ztml.local.violations" not in tags
        # only one serving process is left: the candidate was removed
        logs = list((tmp_path / "ztml-home" / "process" / "logs").glob("pipe-rollback-local-*"))
        assert len(logs) == 2
    finally:
        pipeline.delete("pipe-rollback-local", "local")


def test_a_deploy_never_replaces_another_models_deployment(ztml_env, pipeline) -> None:
    owner = register_sklearn(ztml_env.url, "pipe_owner", metrics=GOOD_METRICS)
    other = register_sklearn(ztml_env.url, "pipe.owner", metrics=GOOD_METRICS)
    first = pipeline.run(f"models:/pipe_owner/{owner}", "local", DeployOptions())
    assert first.status == "deployed", first.error
    try:
        assert first.deployment == "pipe-owner-local"  # and pipe.owner maps to it too
        with pytest.raises(DeploymentConflictError, match="'pipe_owner'") as refused:
            pipeline.run(f"models:/pipe.owner/{other}", "local", DeployOptions())
        assert "--name" in str(refused.value)
        cli = _ztml("deploy", f"models:/pipe.owner/{other}")
        assert cli.returncode == 2, cli.stderr
        assert "pipe_owner" in cli.stderr and "--name" in cli.stderr, cli.stderr
        assert "Traceback" not in cli.stderr
        status = process_runtime().get("pipe-owner-local")
        assert (status.model_name, status.state) == ("pipe_owner", "running")
        assert status.endpoint == first.endpoint
        # refused before anything was written about the other model
        assert not any(k.startswith("ztml.") for k in _tags(ztml_env.url, "pipe.owner", other))
    finally:
        pipeline.delete("pipe-owner-local", "local")


def test_bad_deployment_names_are_usage_errors_before_anything_is_written(
    ztml_env, pipeline, tmp_path
) -> None:
    version = register_sklearn(ztml_env.url, "pipe-names", metrics=GOOD_METRICS)
    for bad in ("../x", "Pipe_Names"):
        cli = _ztml("deploy", f"models:/pipe-names/{version}", "--name", bad)
        assert cli.returncode == 2, cli.stderr
        assert f"invalid deployment name {bad!r}" in cli.stderr, cli.stderr
        assert "Traceback" not in cli.stderr
    deleted = _ztml("delete", "../x")
    assert deleted.returncode == 2 and "invalid deployment name" in deleted.stderr
    assert not any(k.startswith("ztml.") for k in _tags(ztml_env.url, "pipe-names", version))
    home = tmp_path / "ztml-home"
    assert not (home / "x.json").exists() and not (home / ".x.lock").exists()
    assert process_runtime().list() == []

    # a model whose name starts with '-' deploys (as a name, never as a flag)
    dash = register_sklearn(ztml_env.url, "-pipe-dash", metrics=GOOD_METRICS)
    outcome = pipeline.run(f"models:/-pipe-dash/{dash}", "local", DeployOptions())
    try:
        assert outcome.status == "deployed", outcome.error
        assert outcome.deployment == "pipe-dash-local"
        response = requests.post(f"{outcome.endpoint}/predict", json={"inputs": [ROW]}, timeout=10)
        assert response.status_code == 200, response.text
    finally:
        pipeline.delete("pipe-dash-local", "local")


def test_status_filters_marks_dead_deployments_and_survives_a_corrupt_state_file(
    ztml_env, tmp_path
) -> None:
    (tmp_path / "ztml.yaml").write_text(
        "environments:\n  qa: {runtime: process, policy_profile: local}\n"
    )
    pipeline = Pipeline(load_settings())
    version = register_sklearn(ztml_env.url, "pipe-status", metrics=GOOD_METRICS)
    uri = f"models:/pipe-status/{version}"
    assert pipeline.run(uri, "local", DeployOptions()).status == "deployed"
    try:
        assert pipeline.run(uri, "qa", DeployOptions()).status == "deployed"
        only_qa = _ztml("status", "--env", "qa", "--format", "json")
        assert only_qa.returncode == 0, only_qa.stderr
        assert [s["name"] for s in json.loads(only_qa.stdout)] == ["pipe-status-qa"]

        home = tmp_path / "ztml-home" / "process"
        pid = json.loads((home / "pipe-status-local.json").read_text())["pid"]
        os.killpg(pid, signal.SIGKILL)  # the server dies behind ztml's back
        deadline = time.monotonic() + 15
        while process_runtime().get("pipe-status-local").state != "failed":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        (home / "pipe-corrupt-local.json").write_text('{"name": "pipe-corr')

        listed = _ztml("status", "--format", "json")
        assert listed.returncode == 0, listed.stderr
        states = {s["name"]: s["state"] for s in json.loads(listed.stdout)}
        assert states == {
            "pipe-corrupt-local": "unknown",
            "pipe-status-local": "failed",
            "pipe-status-qa": "running",
        }
        tags = _tags(ztml_env.url, "pipe-status", version)
        assert tags["ztml.local.status"] == "failed"
        assert "exited" in tags["ztml.local.error"]
        assert "ztml.local.endpoint" not in tags
        assert re.fullmatch(r"failed v\d+ · \w+ exited.* · " + WHEN, tags["ztml.local"])
        assert tags["ztml.qa.status"] == "deployed"
        assert _ztml("delete", "pipe-corrupt-local").returncode == 0
        assert not (home / "pipe-corrupt-local.json").exists()
    finally:
        pipeline.delete("pipe-status-local", "local")
        pipeline.delete("pipe-status-qa", "qa")


def test_concurrent_tag_writes_to_one_version_never_fail(ztml_env) -> None:
    """MLflow's SQL store can fail one of two simultaneous first writes of a tag with a unique
    constraint error (what concurrent deploys of one model do): the registry retries it."""
    client = mlflow.MlflowClient(ztml_env.url)
    client.create_registered_model("pipe-race")
    version = client.create_model_version("pipe-race", "s3://bucket/pipe-race/model").version
    registry = Registry(load_settings())
    errors: list[str] = []
    rounds, writers = 20, 12
    for round_ in range(rounds):
        barrier = threading.Barrier(writers)

        def write(
            writer: int, key: str = f"ztml.local.race{round_}", start: threading.Barrier = barrier
        ) -> None:
            start.wait()
            try:
                registry.set_version_tags("pipe-race", version, {key: f"writer-{writer}"})
            except ZtmlError as exc:
                errors.append(str(exc)[:300])

        threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert errors == []
    tags = _tags(ztml_env.url, "pipe-race", version)
    assert all(tags[f"ztml.local.race{r}"].startswith("writer-") for r in range(rounds))
