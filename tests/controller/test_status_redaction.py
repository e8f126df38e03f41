"""The controller's `/status` and its log never show a credential from MLFLOW_TRACKING_URI."""

from __future__ import annotations

import io
import logging

from fastapi.testclient import TestClient

from mlflow_ztml import logs
from mlflow_ztml.config import load_settings
from mlflow_ztml.controller.app import create_app
from mlflow_ztml.controller.manager import Controller
from tests.mlflow_server import free_port

SECRET = "s3cret"


def test_status_and_log_of_a_failed_poll_are_redacted(tmp_path, monkeypatch) -> None:
    # A real controller whose MLflow (credentials in the URI) is down: the poll's error text
    # is MLflow's own, which quotes the URI with its password.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://ztml:{SECRET}@127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_LOGGING_LEVEL", "WARNING")  # keep this process's MLflow as is
    monkeypatch.setenv("ZTML_HOME", str(tmp_path))
    monkeypatch.delenv("ZTML_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    root_level = logging.getLogger().level
    stream = io.StringIO()
    handler = logs.configure("INFO", logs.LOG_FORMAT, stream=stream)  # as `ztml controller`
    try:
        controller = Controller(load_settings(), secrets=["webhook-secret"])
        assert controller.poll_once() == []
        client = TestClient(create_app(controller, manage_lifecycle=False))
        answer = client.get("/status")
        page = client.get("/")
    finally:
        logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(root_level)
    assert answer.status_code == 200
    error = answer.json()["last_poll"]["error"]
    assert "cannot reach MLflow" in error
    assert "ztml:***@127.0.0.1" in error
    assert SECRET not in answer.text
    # the status page: the same redacted error, and links into MLflow without the user info
    assert answer.json()["mlflow_ui"].startswith("http://127.0.0.1:")
    assert page.status_code == 200 and "ztml:***@127.0.0.1" in page.text
    assert SECRET not in page.text and 'href="http://ztml' not in page.text
    log = stream.getvalue()
    assert "poll failed" in log and "ztml:***@" in log
    assert SECRET not in log
