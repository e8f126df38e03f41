"""The governance gate on versions registered in a real `mlflow server`, through the CLI,
in-process (regorus) and through the OPA REST path (the labelled OPA test double)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from click.testing import CliRunner

from mlflow_ztml import evidence, gate
from mlflow_ztml.cli import main
from mlflow_ztml.config import load_settings
from mlflow_ztml.policy.bundle import load_bundle
from mlflow_ztml.policy.opa_server import OpaServerEngine
from mlflow_ztml.policy.regorus import RegorusEngine
from mlflow_ztml.registry import Registry
from tests.mlflow_server import free_port
from tests.models import GOOD_METRICS, SKLEARN_REQUIREMENTS, register_sklearn
from tests.policy.opa_double import OpaTestServer

# (name, register kwargs, environment, expected deny fragments (all must appear), allowed)
CASES = [
    ("gate-good", {}, "production", [], True),
    (
        "gate-low-accuracy",
        {"metrics": {**GOOD_METRICS, "accuracy": 0.71}},
        "production",
        ["accuracy 0.7100 is below the minimum 0.8500 for production"],
        False,
    ),
    (
        "gate-no-fairness",
        {"metrics": {k: v for k, v in GOOD_METRICS.items() if not k.startswith("fairness")}},
        "staging",
        ["fairness"],
        False,
    ),
    (
        "gate-high-drift",
        {"metrics": {**GOOD_METRICS, "drift.psi": 0.42}},
        "production",
        ["drift psi 0.4200 exceeds the maximum 0.3000"],
        False,
    ),
    (
        "gate-unpinned",
        {"requirements": [*SKLEARN_REQUIREMENTS[:-1], "cloudpickle>=3"]},
        "production",
        ["cloudpickle"],
        False,
    ),
    (
        "gate-unlisted",
        {"requirements": [*SKLEARN_REQUIREMENTS, "leftpad-ml==0.1"]},
        "production",
        ["leftpad-ml"],
        False,
    ),
    (
        "gate-lineage",
        {"data_sources": ("s3://scratch-bucket/train.csv",)},
        "production",
        ["s3://scratch-bucket/train.csv"],
        False,
    ),
    ("gate-no-signature", {"signature": False}, "production", ["signature"], False),
]


@pytest.fixture(scope="module")
def registered(mlflow_server) -> dict[str, str]:
    versions = {}
    for name, kwargs, *_ in CASES:
        kwargs = {"metrics": GOOD_METRICS, **kwargs}
        versions[name] = f"models:/{name}/{register_sklearn(mlflow_server.url, name, **kwargs)}"
    return versions


@pytest.fixture(scope="module")
def opa_double():
    with OpaTestServer() as server:
        yield server


@pytest.mark.parametrize(("name", "kwargs", "env", "fragments", "allowed"), CASES)
def test_registered_versions_decided_alike_in_process_and_over_opa_rest(
    ztml_env, registered, opa_double, name, kwargs, env, fragments, allowed
) -> None:
    settings = load_settings()
    document = evidence.build(Registry(settings), settings, registered[name], env)
    bundle = load_bundle(settings)
    local = gate.evaluate(document, env, RegorusEngine.from_bundle(bundle))
    remote = gate.evaluate(document, env, OpaServerEngine(opa_double.url, bundle=bundle))
    assert local.allow is allowed, local.deny
    for fragment in fragments:
        assert any(fragment in message for message in local.deny), (fragment, local.deny)
    assert (remote.allow, remote.deny, remote.warn) == (local.allow, local.deny, local.warn)
    assert remote.engine != local.engine


def test_regression_against_the_serving_version(ztml_env) -> None:
    client = mlflow.MlflowClient(ztml_env.url)
    v1 = register_sklearn(ztml_env.url, "gate-regress", metrics={**GOOD_METRICS, "f1": 0.95})
    client.set_model_version_tag("gate-regress", v1, "ztml.production.status", "deployed")
    v2 = register_sklearn(ztml_env.url, "gate-regress", metrics={**GOOD_METRICS, "f1": 0.90})
    result = CliRunner().invoke(main, ["gate", f"models:/gate-regress/{v2}", "--env", "production"])
    assert result.exit_code == 1, result.output
    assert "f1_score 0.9000 is 0.0500 below the serving version" in result.output
    explicit = CliRunner().invoke(
        main, ["gate", f"models:/gate-regress/{v2}", "--env", "production", "--baseline", v2]
    )
    assert explicit.exit_code == 0, explicit.output  # compared with itself: no regression


def test_cli_exit_codes_and_formats(ztml_env, registered, tmp_path: Path) -> None:
    runner = CliRunner()
    allowed = runner.invoke(main, ["gate", registered["gate-good"], "--env", "production"])
    assert allowed.exit_code == 0, allowed.output
    assert allowed.output.startswith("ALLOW")

    denied = runner.invoke(
        main, ["gate", registered["gate-low-accuracy"], "--env", "production", "--format", "json"]
    )
    assert denied.exit_code == 1
    payload = json.loads(denied.output)
    assert payload["allow"] is False and payload["environment"] == "production"
    assert any("accuracy 0.7100" in m for m in payload["deny"])

    manifest_file = tmp_path / "m.yaml"
    written = runner.invoke(main, ["manifest", registered["gate-good"], "-o", str(manifest_file)])
    assert written.exit_code == 0, written.output
    from_file = runner.invoke(main, ["gate", "-f", str(manifest_file), "--env", "production"])
    assert from_file.exit_code == 0, from_file.output

    manifest_file.write_text("kind: Deployment\n")
    malformed = runner.invoke(main, ["gate", "-f", str(manifest_file)])
    assert malformed.exit_code == 2
    assert "kind must be 'ModelDeployment'" in malformed.output

    both = runner.invoke(main, ["gate", registered["gate-good"], "-f", str(manifest_file)])
    assert both.exit_code == 2
    assert "exactly one of MODEL_URI or -f" in both.output

    unknown_env = runner.invoke(main, ["gate", registered["gate-good"], "--env", "qa"])
    assert unknown_env.exit_code == 2 and "unknown environment 'qa'" in unknown_env.output


def test_cli_mlflow_unreachable_is_exit_2(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    result = CliRunner().invoke(main, ["gate", "models:/anything/1"])
    assert result.exit_code == 2
    assert "cannot reach MLflow" in result.output


def test_broken_rego_fails_closed_through_the_cli(ztml_env, registered, tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "broken.rego").write_text("package ztml.governance\n\ndeny contains msg if {\n")
    (tmp_path / "ztml.yaml").write_text(f"policy: {{policy_dir: {policies}}}\n")
    result = CliRunner().invoke(main, ["gate", registered["gate-good"]])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("DENY")
    assert "policy engine error" in result.output


def test_policy_test_command(tmp_path: Path) -> None:
    runner = CliRunner()
    shipped = runner.invoke(main, ["policy", "test"])
    assert shipped.exit_code == 0, shipped.output
    assert " 0 failed" in shipped.output.splitlines()[-1]
    (tmp_path / "t_test.rego").write_text(
        "package ztml.t_test\n\ntest_passes if { 1 == 1 }\n\ntest_fails if { 1 == 2 }\n"
    )
    mixed = runner.invoke(main, ["policy", "test", str(tmp_path)])
    assert mixed.exit_code == 1
    assert "PASS data.ztml.t_test.test_passes" in mixed.output
    assert "FAIL data.ztml.t_test.test_fails" in mixed.output
