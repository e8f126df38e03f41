"""Starting serving: credentials never show (logs, /ready, /model/info), a local model directory
needs no registry at all, and a failed start ends with its reason as one line on stderr."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from tests.mlflow_server import free_port
from tests.serving.conftest import ECHO_MODEL_CODE, REPO, Server, wait_ready

SECRETS = ("hunter2", "tok-123", "sig-456", "AKIAEXAMPLE")
TRACKING_WITH_CREDENTIALS = "http://alice:hunter2@127.0.0.1:{port}/mlflow?token=tok-123"
MISSING_PACKAGE_CODE = """
import mlflow


class NeedsPackage(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        import ztml_test_missing_package  # what a flavor does when the image lacks its package

    def predict(self, context, model_input, params=None):
        return model_input


mlflow.models.set_model(NeedsPackage())
"""


def run_serving(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SERVING_", "MLFLOW_"))}
    return subprocess.run(
        [sys.executable, "-m", "serving", "--port", "0", *args],
        cwd=REPO,
        env={**base, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=180,
    )


# ------------------------------------------------------------------------------ redaction
def test_redact_every_credential_form() -> None:
    from serving.redact import redact

    text = (
        "https://alice:hunter2@host/x http://tok-123@h/ s3://b/k?X-Amz-Credential=AKIAEXAMPLE"
        "&X-Amz-Signature=sig-456&x=1 https://a.blob/c?sv=1&sig=sig-456 "
        "https://h/p?token=tok-123#f https://h/?access_token=tok-123 "
        "Authorization: Bearer tok-123 models:/name@champion"
    )
    out = redact(text)
    assert not any(secret in out for secret in SECRETS), out
    assert "https://alice:***@host/x" in out and "http://***@h/" in out
    assert "X-Amz-Signature=***&x=1" in out and "sv=1&sig=***" in out
    assert "models:/name@champion" in out  # an alias is no credential
    assert redact(out) == out


def test_every_log_line_is_redacted() -> None:
    """The formatter on the one handler redacts message, arguments, extra fields, traceback."""
    from serving.logs import JsonFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test.serving.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise RuntimeError("cannot reach https://alice:hunter2@registry/")
        except RuntimeError as exc:
            logger.error(
                "download of %s failed",
                "s3://b/m?X-Amz-Signature=sig-456",
                exc_info=exc,
                extra={"model_uri": "https://h/m?token=tok-123"},
            )
    finally:
        logger.removeHandler(handler)
    line = stream.getvalue()
    record = json.loads(line)  # still one JSON object
    assert not any(secret in line for secret in SECRETS), line
    assert record["model_uri"] == "https://h/m?token=***"
    assert "alice:***@registry" in record["exception"]


@pytest.mark.slow
def test_registry_credentials_never_reach_the_log_or_stderr() -> None:
    """A registry that cannot be reached: the old server logged MLFLOW_TRACKING_URI verbatim."""
    tracking = TRACKING_WITH_CREDENTIALS.format(port=free_port())  # nothing listens there
    proc = run_serving(
        {
            "MLFLOW_TRACKING_URI": tracking,
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
        },
        "--model-uri",
        "models:/credit/1",
    )
    assert proc.returncode == 1
    output = proc.stdout + proc.stderr
    assert not any(secret in output for secret in SECRETS), output
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("serving: cannot start: ModelLoadError: cannot resolve models:/credit")
    assert "alice:***@127.0.0.1" in last and "token=***" in last


@pytest.mark.slow
def test_ready_and_model_info_bodies_are_redacted(
    monkeypatch: pytest.MonkeyPatch, model_dirs: dict[str, Path]
) -> None:
    """In process (the app itself, a real model): the /ready error of a failed load, and the
    model URI /model/info reports. No real registry takes a URI with credentials in it, so the
    second part gives the loaded model such a URI directly."""
    from starlette.testclient import TestClient

    from serving.app import create_app
    from serving.config import Settings

    monkeypatch.setenv("MLFLOW_TRACKING_URI", TRACKING_WITH_CREDENTIALS.format(port=free_port()))
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    with TestClient(create_app(Settings(model_uri="models:/credit/1"))) as client:
        body = poll_ready(client)
        assert body["status"] == "failed"
        assert "alice:***@127.0.0.1" in body["error"]
        assert not any(secret in json.dumps(body) for secret in SECRETS), body

    app = create_app(Settings(model_uri=str(model_dirs["echo"])))
    with TestClient(app) as client:
        assert poll_ready(client)["status"] == "ready"
        app.state.serving.model.source.uri = (
            "https://alice:hunter2@models.example/echo.tar?X-Amz-Signature=sig-456"
        )
        info = client.get("/model/info").json()
        assert info["model_uri"] == "https://alice:***@models.example/echo.tar?X-Amz-Signature=***"


def poll_ready(client) -> dict:
    for _ in range(1200):
        res = client.get("/ready")
        if res.status_code == 200 or res.json()["status"] == "failed":
            return res.json()
        time.sleep(0.05)
    raise AssertionError(f"still loading: {res.json()}")


# ------------------------------------------------------------------------------ failed start
@pytest.mark.slow
def test_failed_start_says_why_on_stderr(tmp_path: Path) -> None:
    """A model whose package is missing: exit 1 and, as the last stderr line, the exception type
    and message (the old server wrote nothing to stderr: "last log lines:" were empty)."""
    import mlflow.pyfunc
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    code = tmp_path / "needs_package.py"
    code.write_text(textwrap.dedent(MISSING_PACKAGE_CODE))
    mlflow.pyfunc.save_model(
        tmp_path / "model",
        python_model=str(code),
        signature=ModelSignature(inputs=Schema([ColSpec("double", "x")])),
        pip_requirements=["mlflow==3.17.2"],
    )
    proc = run_serving({}, "--model-uri", str(tmp_path / "model"))
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("serving: cannot start: ")
    assert "ModuleNotFoundError: No module named 'ztml_test_missing_package'" in last


# ------------------------------------------------------------------------------ local directory
LOG_MODEL = """
import sys

import mlflow
import pandas as pd

mlflow.set_tracking_uri(sys.argv[1])
example = pd.DataFrame({"x": [1.0, 2.0]})
with mlflow.start_run():
    info = mlflow.pyfunc.log_model(
        name="model", python_model=sys.argv[2], input_example=example,
        pip_requirements=["mlflow==3.17.2"],
    )
print(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=sys.argv[3]))
"""


@pytest.mark.slow
def test_local_model_directory_needs_no_registry(tmp_path: Path) -> None:
    """What the process runtime does: the control plane downloads the version (a logged MLflow 3
    model, with a model id) into the deployment's directory; serving gets that path and an
    environment with no registry credentials, and never talks to a registry."""
    code = tmp_path / "echo_model.py"
    code.write_text(textwrap.dedent(ECHO_MODEL_CODE))
    deployment = tmp_path / "deployment"
    subprocess.run(
        [
            sys.executable,
            "-c",
            LOG_MODEL,
            f"sqlite:///{tmp_path / 'registry.db'}",
            str(code),
            str(deployment / "model"),
        ],
        check=True,
        capture_output=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert "model_id: m-" in (deployment / "model" / "MLmodel").read_text()
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    unreachable = f"http://127.0.0.1:{free_port()}"  # a registry, were it asked, would fail
    server = Server(
        "local",
        str(deployment / "model"),
        tmp_path,
        {
            "MLFLOW_TRACKING_URI": unreachable,
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
            "SERVING_MODEL_NAME": "credit",
            "SERVING_MODEL_VERSION": "3",
        },
        bare=True,
        cwd=workdir,
    )
    try:
        wait_ready([server])
        res = httpx.post(server.url + "/predict", json={"inputs": [{"x": 2.0}]}, timeout=30)
        assert res.status_code == 200, res.text
        assert res.json()["model"] == {"name": "credit", "version": "3"}
        assert res.json()["predictions"] == [{"y": 4.0, "x": 2.0}]
    finally:
        server.stop()
    assert list(workdir.iterdir()) == []  # no mlflow.db, no mlruns: no tracking store opened
