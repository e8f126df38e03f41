"""The `process` runtime against a real `mlflow server` and real `python -m serving` processes:
model code gets no secrets, the model copy lives and dies with the deployment, and a process
that cannot start says why in its own words."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import mlflow
import pytest
import requests

from mlflow_ztml.config import load_settings
from mlflow_ztml.pipeline import DeployOptions, Pipeline
from mlflow_ztml.runtimes.base import DeploymentSpec
from tests.models import (
    APPROVED_SOURCE,
    GOOD_METRICS,
    register_broken_pyfunc,
    register_sklearn,
    training_frame,
)
from tests.pipeline_fixtures import process_runtime

ROW = {"income": 0.9, "age": 0.4, "debt": 0.1}
SECRETS = {
    "ZTML_WEBHOOK_SECRET": "whsec-never-in-model-1",
    "MLFLOW_TRACKING_USERNAME": "ztml-bot",
    "MLFLOW_TRACKING_PASSWORD": "mlflow-password-never-in-model-2",
    "MLFLOW_TRACKING_TOKEN": "mlflow-token-never-in-model-3",
    "AWS_ACCESS_KEY_ID": "AKIANEVERINMODEL4",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-never-in-model-5",
    "ZTML_SLACK_URL": "https://hooks.example.invalid/services/never-in-model-6",
}


def _home() -> Path:
    return Path(os.environ["ZTML_HOME"]) / "process"


def _record(name: str) -> dict:
    return json.loads((_home() / f"{name}.json").read_text())


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = [item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item]
    return {key.decode(): value.decode(errors="replace") for key, value in pairs}


def test_serving_process_gets_no_secrets_and_loads_a_local_copy(
    ztml_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    version = register_sklearn(ztml_env.url, "proc-secrets", metrics=GOOD_METRICS)
    for key, value in SECRETS.items():  # what a control plane holds
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    pipeline = Pipeline(load_settings())
    outcome = pipeline.run(f"models:/proc-secrets/{version}", "local", DeployOptions())
    try:
        assert outcome.status == "deployed", outcome.error
        pid = _record("proc-secrets-local")["pid"]
        environ = _environ(pid)
        leaked = sorted(k for k, v in environ.items() if k in SECRETS or v in SECRETS.values())
        assert leaked == []
        assert not any(k.startswith(("AWS_", "MLFLOW_", "ZTML_")) for k in environ), environ
        assert environ["OMP_NUM_THREADS"] == "1"  # thread counts do pass
        # the model was fetched by the control plane into the deployment's own directory
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        [model_uri] = [arg.split("=", 1)[1] for arg in cmdline if arg.startswith("--model-uri=")]
        assert Path(model_uri).is_relative_to(_home() / "deployments" / "proc-secrets-local")
        assert (Path(model_uri) / "MLmodel").is_file()
        response = requests.post(f"{outcome.endpoint}/predict", json={"inputs": [ROW]}, timeout=10)
        assert response.status_code == 200, response.text
        info = requests.get(f"{outcome.endpoint}/model/info", timeout=5).json()
        assert str(info["version"]) == version
    finally:
        pipeline.delete("proc-secrets-local", "local")


def test_model_copy_lives_in_the_deployment_and_goes_with_it(
    ztml_env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    pipeline = Pipeline(load_settings())
    good = register_sklearn(ztml_env.url, "proc-copy", metrics=GOOD_METRICS)
    first = pipeline.run(f"models:/proc-copy/{good}", "local", DeployOptions())
    copies = _home() / "deployments" / "proc-copy-local"
    try:
        assert first.status == "deployed", first.error
        assert len(list(copies.iterdir())) == 1
        broken = register_broken_pyfunc(ztml_env.url, "proc-copy", tmp_path)
        second = pipeline.run(f"models:/proc-copy/{broken}", "local", DeployOptions())
        assert second.status == "rolled_back", second.error
        # the failed candidate's copy is gone; the serving version's copy stays
        [kept] = list(copies.iterdir())
        assert kept.name.startswith(f"v{good}-")
        assert Path(_record("proc-copy-local")["dir"]) == kept
    finally:
        pipeline.delete("proc-copy-local", "local")
    assert not copies.exists()
    assert sorted(p.name for p in scratch.glob("serving-model-*")) == []


CRASH_ON_LOAD = '''
import os
import sys

import mlflow
import pandas as pd


class CrashOnLoad(mlflow.pyfunc.PythonModel):
    """Dies the way a broken native extension does: says why on stdout, then exits hard
    (no Python shutdown, so nothing buffered is flushed). Only inside the server."""

    def load_context(self, context):
        if sys.argv and sys.argv[0].endswith(os.path.join("serving", "__main__.py")):
            print("libfeature.so: cannot open shared object file (crash-marker-7f3a)")
            os._exit(3)

    def predict(self, context, model_input, params=None):
        return pd.Series([0] * len(model_input))


mlflow.models.set_model(CrashOnLoad())
'''


def _register_crash_on_load(tracking_uri: str, name: str, code_dir: Path) -> str:
    mlflow.set_tracking_uri(tracking_uri)
    frame, _ = training_frame()
    code = code_dir / "crash_model.py"
    code.write_text(CRASH_ON_LOAD)
    with mlflow.start_run():
        mlflow.log_metrics(GOOD_METRICS)
        mlflow.log_input(
            mlflow.data.from_pandas(frame, source=APPROVED_SOURCE, name="train"),
            context="training",
        )
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(code),
            input_example=frame.head(2),
            pip_requirements=[f"mlflow=={mlflow.__version__}", "pandas==3.1.1"],
            registered_model_name=name,
        )
    return str(info.registered_model_version)


def test_process_that_dies_at_start_shows_its_own_last_log_lines(ztml_env, tmp_path) -> None:
    version = _register_crash_on_load(ztml_env.url, "proc-crash", tmp_path)
    outcome = Pipeline(load_settings()).run(
        f"models:/proc-crash/{version}", "local", DeployOptions(ready_timeout_seconds=90)
    )
    assert outcome.status == "failed"
    assert "exit code 3" in outcome.error, outcome.error
    assert "crash-marker-7f3a" in outcome.error, outcome.error
    tags = mlflow.MlflowClient(ztml_env.url).get_model_version("proc-crash", version).tags
    assert "crash-marker-7f3a" in tags["ztml.local.error"]
    assert process_runtime().get("proc-crash-local") is None
    assert not (_home() / "deployments" / "proc-crash-local").exists() or not any(
        (_home() / "deployments" / "proc-crash-local").iterdir()
    )


def _spec(name: str, model: str, version: str, tracking_uri: str) -> DeploymentSpec:
    return DeploymentSpec(
        name=name,
        environment="local",
        model_name=model,
        model_version=version,
        model_uri=f"models:/{model}/{version}",
        tracking_uri=tracking_uri,
    )


def _pid_running(pid: int) -> bool:
    try:
        return "Z" not in next(
            line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if "State" in line
        )
    except (OSError, StopIteration):
        return False


def test_update_answers_before_the_old_process_has_drained_and_loses_nothing(ztml_env) -> None:
    """`deploy` returns once the new version answers: the prefetched copy is taken (nothing
    left in prefetch/), the old process drains in the background (still answering what it is
    sent in the switch grace), and `delete` waits for that drain to end."""
    model, name = "proc-retire", "proc-retire-local"
    first = register_sklearn(ztml_env.url, model, metrics=GOOD_METRICS)
    second = register_sklearn(ztml_env.url, model, metrics=GOOD_METRICS)
    runtime = process_runtime()
    old, _ = runtime.deploy(_spec(name, model, first, ztml_env.url), lambda _status: None)
    old_record = _record(name)
    try:
        runtime.prefetch(name, f"models:/{model}/{second}", ztml_env.url, None)
        new, changed = runtime.deploy(_spec(name, model, second, ztml_env.url), lambda _s: None)
        assert changed and new.model_version == second
        assert list((_home() / "prefetch").iterdir()) == []  # the download was taken
        # the old process still runs, marked as retiring, and answers a late caller
        assert _pid_running(old_record["pid"])
        assert [p.name for p in _home().glob(f".{name}.retiring-*")] == [
            f".{name}.retiring-{old_record['pid']}"
        ]
        late = requests.post(f"{old.endpoint}/predict", json={"inputs": [ROW]}, timeout=10)
        assert late.status_code == 200, late.text
    finally:
        runtime.delete(name)  # waits for the drain
    assert not _pid_running(old_record["pid"])
    assert list(_home().glob(f".{name}.retiring-*")) == []
    assert not (_home() / "deployments" / name).exists()


def test_a_prefetched_copy_no_deploy_takes_is_discarded(ztml_env) -> None:
    version = register_sklearn(ztml_env.url, "proc-discard", metrics=GOOD_METRICS)
    runtime = process_runtime()
    runtime.prefetch("proc-discard-local", f"models:/proc-discard/{version}", ztml_env.url, None)
    assert len(list((_home() / "prefetch").iterdir())) == 1
    runtime.discard("proc-discard-local", f"models:/proc-discard/{version}")
    deadline = time.monotonic() + 30
    while list((_home() / "prefetch").iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list((_home() / "prefetch").iterdir()) == []
