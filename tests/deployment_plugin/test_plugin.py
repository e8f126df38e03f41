"""The `ztml` MLflow deployments target, through MLflow's own client and CLI."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow.deployments import get_deploy_client
from mlflow.exceptions import MlflowException

from tests.models import GOOD_METRICS, register_sklearn

ROWS = [{"income": 0.9, "age": 0.4, "debt": 0.1}, {"income": 0.1, "age": 0.2, "debt": 0.8}]
COLUMNS = ["income", "age", "debt"]
# MLflow's own scoring formats, as users write them for `mlflow deployments predict -I`
SCORING_FILES = {
    "dataframe_split": {
        "dataframe_split": {"columns": COLUMNS, "data": [[r[c] for c in COLUMNS] for r in ROWS]}
    },
    "dataframe_records": {"dataframe_records": ROWS},
    "inputs": {"inputs": {c: [r[c] for r in ROWS] for c in COLUMNS}},
    "instances": {"instances": ROWS},
}


def _mlflow_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    return subprocess.run(
        [str(mlflow_bin), "deployments", *args],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        cwd=cwd,
    )


def _expected_error(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """An expected failure of `mlflow deployments`: exit 1, `Error: ...`, no traceback, no
    MLflow deprecation warning."""
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output, output
    assert "Warning" not in output, output
    assert "Error: " in result.stderr, output
    for fragment in fragments:
        assert fragment in result.stderr, output
    return result.stderr


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
        reference = json.loads(predicted.stdout)["predictions"]
        assert len(reference) == 2
        for form, document in SCORING_FILES.items():
            scoring_file = tmp_path / f"{form}.json"
            scoring_file.write_text(json.dumps(document))
            scored = _mlflow_cli("predict", "-t", "ztml", "--name", "cli", "-I", str(scoring_file))
            assert scored.returncode == 0, f"{form}: {scored.stderr}"
            assert json.loads(scored.stdout)["predictions"] == reference, form
        denied = _mlflow_cli(
            "update", "-t", "ztml", "--name", "cli", "-m", f"models:/plug-cli/{bad}"
        )
        # the deny is the message with its numbered reasons, not a traceback
        message = _expected_error(denied, "Error: ztml rejected plug-cli", "policy deny")
        assert "  1. accuracy 0.5" in message
        # the good version keeps serving
        info = _mlflow_cli("get", "-t", "ztml", "--name", "cli")
        assert (
            f"model_version: '{good}'" in info.stdout or f"model_version: {good}\n" in info.stdout
        )
    finally:
        _mlflow_cli("delete", "-t", "ztml", "--name", "cli")


def test_mlflow_cli_expected_errors_are_one_line(ztml_env) -> None:
    register_sklearn(ztml_env.url, "plug-errors", metrics=GOOD_METRICS)
    # a stage URI: MLflow's stage API is deprecated (a FutureWarning) and no version is there
    _expected_error(
        _mlflow_cli("create", "-t", "ztml", "--name", "e", "-m", "models:/plug-errors/Staging"),
        "no version in that stage",
    )
    _expected_error(_mlflow_cli("get", "-t", "ztml", "--name", "nothing"), "no deployment named")
    _expected_error(_mlflow_cli("delete", "-t", "ztml", "--name", "nothing"), "no deployment named")
    _expected_error(
        _mlflow_cli("update", "-t", "ztml", "--name", "nothing", "-m", "models:/plug-errors/1"),
        "no deployment named 'nothing' to update",
    )


def test_mlflow_cli_without_a_tracking_uri_says_so_and_creates_nothing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(ZTML_HOME=str(tmp_path / "home"))
    env.pop("ZTML_CONFIG", None)
    result = _mlflow_cli("get", "-t", "ztml", "--name", "credit", env=env, cwd=tmp_path)
    _expected_error(result, "MLFLOW_TRACKING_URI is not set")
    assert not (tmp_path / "mlflow.db").exists()


def test_a_scoring_key_that_is_really_a_column_stays_a_column() -> None:
    """`pandas.read_json` gives the same one-column frame for `{"inputs": [1, 2]}` and for the
    rows `[{"inputs": 1}, {"inputs": 2}]`: the served model's signature decides."""
    import pandas as pd

    from deployment_plugin.client import _request_body

    frame = pd.DataFrame({"inputs": [1.5, None]})
    assert _request_body(frame, set) == {"inputs": [1.5, None]}  # JSON null, not NaN
    rows = {"inputs": [{"inputs": 1.5}, {"inputs": None}]}
    assert _request_body(frame, lambda: {"inputs"}) == rows
    split = pd.read_json(io.StringIO(json.dumps(SCORING_FILES["dataframe_split"])))
    assert _request_body(split, set) == SCORING_FILES["dataframe_split"]
