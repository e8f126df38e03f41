"""The `ztml` command as users run it (a real subprocess): what it prints when things go wrong.

- an expected error is one `error:` line on stderr, or JSON on stdout under `--format json`,
  with the same exit code, and never a traceback;
- no credential (from MLFLOW_TRACKING_URI, a model's data source, ...) reaches the output, the
  MLflow tags, the audit run or a notification;
- without MLFLOW_TRACKING_URI, ztml says which store it uses, or refuses and creates nothing;
- MLflow's deprecation warnings are not shown.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from tests.mlflow_server import MlflowServer, free_port
from tests.models import GOOD_METRICS, register_sklearn
from tests.test_notify import Receiver, _configure

SECRET = "s3cret"


def _ztml(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    return subprocess.run(
        [sys.executable, "-m", "mlflow_ztml.cli", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


def _one_line_error(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == code, output
    assert "Traceback" not in output and "Warning" not in output, output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: "), output
    return line


def _json_error(result: subprocess.CompletedProcess[str], code: int = 2) -> dict:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    payload = json.loads(result.stdout)
    assert payload["exit_code"] == code and payload["error"], payload
    return payload


@pytest.fixture
def unreachable_credentialed_mlflow(monkeypatch, tmp_path: Path) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ZTML_CONFIG", raising=False)
    return {
        "MLFLOW_TRACKING_URI": f"http://ztml:{SECRET}@127.0.0.1:{free_port()}",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "ZTML_HOME": str(tmp_path / "home"),
    }


def test_errors_are_redacted_one_line_and_json_under_format_json(
    unreachable_credentialed_mlflow,
) -> None:
    env = unreachable_credentialed_mlflow
    line = _one_line_error(_ztml("plan", "models:/credit/1", env=env))
    assert "cannot reach MLflow" in line and "ztml:***@127.0.0.1" in line
    assert SECRET not in line
    for command in (["plan"], ["deploy"], ["gate"], ["manifest"]):
        fmt = [] if command == ["manifest"] else ["--format", "json"]
        result = _ztml(*command, "models:/credit/1", *fmt, env=env)
        if fmt:
            payload = _json_error(result)
            assert payload["error_type"] == "RegistryUnavailableError"
            assert "ztml:***@" in payload["error"]
        else:
            _one_line_error(result)
        assert SECRET not in result.stdout + result.stderr


def test_bad_option_values_are_usage_errors_not_tracebacks(
    unreachable_credentialed_mlflow,
) -> None:
    env = unreachable_credentialed_mlflow
    text = _ztml("deploy", "models:/credit/1", "--replicas", "0", env=env)
    assert text.returncode == 2 and "Traceback" not in text.stderr, text.stderr
    assert "--replicas: Input should be greater than or equal to 1" in text.stderr
    as_json = _ztml("deploy", "models:/credit/1", "--replicas", "0", "--format", "json", env=env)
    assert _json_error(as_json)["error_type"] == "UsageError"
    both = _ztml("gate", "models:/credit/1", "-f", "m.yaml", "--format=json", env=env)
    assert "exactly one of MODEL_URI" in _json_error(both)["error"]


def test_without_a_tracking_uri_ztml_names_the_store_or_refuses(
    monkeypatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("ZTML_CONFIG", raising=False)
    monkeypatch.setenv("ZTML_HOME", str(tmp_path / "home"))
    refused = _ztml("plan", "models:/credit/1", cwd=tmp_path)
    line = _one_line_error(refused)
    assert "MLFLOW_TRACKING_URI is not set" in line and "export MLFLOW_TRACKING_URI=" in line
    assert not (tmp_path / "mlflow.db").exists()  # nothing silently created

    from tests.test_manifest import PUBLISHED

    (tmp_path / "m.yaml").write_text(PUBLISHED, encoding="utf-8")
    judged = _ztml("gate", "-f", "m.yaml", cwd=tmp_path)  # needs no registry: says nothing of one
    assert judged.returncode in (0, 1) and "tracking store" not in judged.stderr, judged.stderr
    assert not (tmp_path / "mlflow.db").exists()

    mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_experiments()  # a store
    used = _ztml("plan", "models:/credit/1", cwd=tmp_path)
    assert used.returncode == 2, used.stderr
    notice, error = used.stderr.strip().splitlines()
    assert notice == (
        f"ztml: using MLflow tracking store sqlite:///{tmp_path / 'mlflow.db'} "
        "(MLFLOW_TRACKING_URI is not set)"
    )
    assert error.startswith("error: resolving models:/credit/1") and "not found" in error


def test_mlflow_deprecation_warnings_are_not_shown(ztml_env) -> None:
    register_sklearn(ztml_env.url, "cli-stage", metrics=GOOD_METRICS)
    # a stage URI goes through MLflow's deprecated stage API (a FutureWarning)
    line = _one_line_error(_ztml("plan", "models:/cli-stage/Staging"))
    assert "no version in that stage" in line


def test_credentials_never_leave_through_any_boundary(
    ztml_env: MlflowServer, tmp_path: Path, monkeypatch
) -> None:
    """MLFLOW_TRACKING_URI with a password (the test server ignores it) and a model whose data
    source URL carries a user, a password and a signed query: the policy names the source (an
    unapproved one), and that reason travels to the CLI output, the tags, the audit run and
    Slack. Low accuracy makes the outcome a rejection whatever the lineage rule's level."""
    receiver = Receiver()
    slack = f"{receiver.start()}/services/T000/B000/slack-path-token"
    try:
        _configure(tmp_path, monkeypatch, "slack", slack)
        leaky = f"https://reader:{SECRET}@data.example.com/train.parquet?X-Amz-Signature={SECRET}"
        version = register_sklearn(
            ztml_env.url,
            "cli-leaky",
            metrics={**GOOD_METRICS, "accuracy": 0.5},
            data_sources=[leaky],
        )
        credentialed = ztml_env.url.replace("http://", f"http://ztml:{SECRET}@")
        result = _ztml(
            "deploy", f"models:/cli-leaky/{version}", env={"MLFLOW_TRACKING_URI": credentialed}
        )
        output = result.stdout + result.stderr
        assert result.returncode == 1, output  # rejected
        assert "data.example.com" in output and "reader:***@" in output
        assert SECRET not in output

        client = mlflow.MlflowClient(ztml_env.url)
        tags = client.get_model_version("cli-leaky", version).tags
        assert tags["ztml.local.status"] == "rejected"
        assert "data.example.com" in json.dumps(tags)
        assert SECRET not in json.dumps(tags)

        run_id = tags["ztml.local.audit_run"]
        run = client.get_run(run_id)
        assert SECRET not in json.dumps(run.data.params) + json.dumps(run.data.tags)
        artifacts = Path(
            mlflow.artifacts.download_artifacts(
                run_id=run_id, tracking_uri=ztml_env.url, dst_path=str(tmp_path / "audit")
            )
        )
        texts = {p.name: p.read_text() for p in artifacts.rglob("*") if p.is_file()}
        assert "data.example.com" in texts["manifest.yaml"]
        for name, text in texts.items():
            assert SECRET not in text, name

        [message] = receiver.received
        text = json.loads(message["body"])["text"]
        assert "data.example.com" in text and SECRET not in text
        assert "slack-path-token" not in output
    finally:
        receiver.stop()


def test_manifest_converts_a_published_file_to_the_canonical_form(tmp_path: Path) -> None:
    """`ztml manifest -f` needs no MLflow: it validates and writes what the gate would judge."""
    from mlflow_ztml import manifest
    from tests.test_manifest import PUBLISHED

    source = tmp_path / "published.yaml"
    source.write_text(PUBLISHED, encoding="utf-8")
    out = tmp_path / "canonical.yaml"
    result = _ztml("manifest", "-f", str(source), "-o", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "mlflow.db").exists()
    written = out.read_text(encoding="utf-8")
    assert "demographic_parity_difference" in written and "training:" in written
    assert manifest.from_yaml(written) == manifest.from_yaml(PUBLISHED)

    broken = tmp_path / "broken.yaml"
    broken.write_text(PUBLISHED.replace("replicas: 3", "replicas: [3]"), encoding="utf-8")
    result = _ztml("manifest", "-f", str(broken), cwd=tmp_path)
    assert result.returncode == 2
    assert "spec.inference.replicas" in result.stderr and "Traceback" not in result.stderr
