"""Process lifecycle: not ready while loading, graceful drain on SIGTERM, non-zero exit when the
model cannot load, JSON logs, and no dependency on the control plane (`mlflow_ztml`)."""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]

if TYPE_CHECKING:
    from conftest import Server

pytestmark = pytest.mark.slow


def test_not_ready_until_warm(servers: dict[str, Server]) -> None:
    """Every server answered /ready with 503 while /health was already 200 (model loading)."""
    assert all(s.saw_not_ready for s in servers.values())


def test_logs_are_json(echo_server: Server) -> None:
    httpx.post(
        echo_server.url + "/predict",
        json={"inputs": [{"x": 1.0}]},
        headers={"X-API-Key": "s3cret-key", "X-Request-ID": "log-me"},
    )
    lines = [json.loads(line) for line in echo_server.log().splitlines() if line.strip()]
    assert any(r["logger"] == "py.warnings" for r in lines)  # MLflow's warning, as JSON
    assert any(r["message"] == "model ready" for r in lines)
    access = [r for r in lines if r.get("request_id") == "log-me"]
    assert access and access[0]["status"] == 200 and access[0]["path"] == "/predict"


def test_sigterm_drains_in_flight(drain_server: Server) -> None:
    result: dict = {}

    def slow() -> None:
        result["res"] = httpx.post(
            drain_server.url + "/predict", json={"inputs": [{"x": 2.0, "sleep": 1.5}]}, timeout=30
        )

    worker = threading.Thread(target=slow)
    worker.start()
    time.sleep(0.5)
    drain_server.proc.send_signal(signal.SIGTERM)
    worker.join(30)
    assert result["res"].status_code == 200
    assert result["res"].json()["predictions"] == [{"y": 4.0, "x": 2.0}]
    assert drain_server.proc.wait(20) == 0


def test_unloadable_model_exits_non_zero(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERVING_")}
    env.update(PYTHONPATH=str(REPO), SERVING_MODEL_URI=str(tmp_path))  # no MLmodel there
    proc = subprocess.run(
        [sys.executable, "-m", "serving", "--port", "0"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "not an MLflow model directory" in proc.stdout


def test_bad_settings_exit_with_usage_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "serving", "--model-uri", "x", "--device", "tpu"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 2 and "device" in proc.stderr


def test_never_imports_control_plane(model_dirs: dict[str, Path]) -> None:
    """Statically (no import of mlflow_ztml anywhere) and at runtime (after load + predict)."""
    for path in (REPO / "serving").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(
                n.split(".")[0] in ("mlflow_ztml", "deployment_plugin") for n in names
            ), path
    code = (
        "import sys\n"
        "from serving.config import Settings\n"
        "from serving.model import load\n"
        "from serving import app, __main__, v1\n"
        f"m = load(Settings(model_uri={str(model_dirs['sk'])!r}))\n"
        "inp, _ = v1.decode(m.input_example, m.schema)\n"
        "m.predictor.predict(inp)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in "
        "('mlflow_ztml', 'deployment_plugin'))\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
