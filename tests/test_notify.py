"""Notifications against a real local HTTP receiver."""

from __future__ import annotations

import http.server
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import pytest

from mlflow_ztml.config import load_settings
from mlflow_ztml.notify import DeploymentEvent, Notifier, verify_signature
from mlflow_ztml.pipeline import DeployOptions, Pipeline
from tests.mlflow_server import free_port
from tests.models import GOOD_METRICS, register_sklearn

SLACK_TOKEN = "T000/B000/slack-url-secret-token"
SIGNING_SECRET = "whsec-never-print-me"


@dataclass
class Receiver:
    """A real HTTP server recording what it receives; `script` gives status codes in turn
    (the last repeats); `hang` makes it never answer within the client's timeout."""

    script: list[int] = field(default_factory=lambda: [200])
    hang: float = 0.0
    received: list[dict] = field(default_factory=list)

    def start(self) -> str:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                index = len(receiver.received)
                receiver.received.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body}
                )
                if receiver.hang:
                    time.sleep(receiver.hang)
                status = receiver.script[min(index, len(receiver.script) - 1)]
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    rec.stop()


def _configure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, url: str, **extra
) -> None:
    monkeypatch.setenv("ZTML_TEST_NOTIFY_URL", url)
    monkeypatch.setenv("ZTML_TEST_NOTIFY_SECRET", SIGNING_SECRET)
    options = ", ".join(f"{k}: {v}" for k, v in extra.items())
    (tmp_path / "ztml.yaml").write_text(
        "environments:\n"
        "  local:\n"
        "    notifications:\n"
        f"      - {{kind: {kind}, url_env: ZTML_TEST_NOTIFY_URL, "
        f"secret_env: ZTML_TEST_NOTIFY_SECRET{', ' + options if options else ''}}}\n"
    )


def test_rejection_sends_one_readable_message_naming_each_reason(
    ztml_env, receiver, tmp_path, monkeypatch, caplog
) -> None:
    url = receiver.start()
    _configure(tmp_path, monkeypatch, "slack", f"{url}/services/{SLACK_TOKEN}")
    version = register_sklearn(
        ztml_env.url, "notify-bad", metrics={**GOOD_METRICS, "accuracy": 0.61, "f1": 0.55}
    )
    settings = load_settings()
    notifier = Notifier(settings)
    # ztml's own logs at every level; libraries at INFO (urllib3's DEBUG lines print request
    # paths, which a user only sees when they turn DEBUG on for everything).
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="ztml")
    outcome = Pipeline(settings, notifier=notifier).run(
        f"models:/notify-bad/{version}", "local", DeployOptions()
    )
    assert outcome.status == "rejected"
    assert notifier.flush(10)
    [message] = receiver.received
    text = json.loads(message["body"])["text"]
    assert "notify-bad" in text and f"v{version}" in text and "rejected" in text
    for reason in outcome.decision.deny:
        assert reason in text
    assert f"/#/models/notify-bad/versions/{version}" in text
    assert f"/runs/{outcome.audit_run_id}" in text
    tags = mlflow.MlflowClient(ztml_env.url).get_model_version("notify-bad", version).tags
    for secret in (SLACK_TOKEN, SIGNING_SECRET):
        assert secret not in caplog.text
        assert secret not in json.dumps(tags)
        assert secret not in text


def test_deployment_event_is_signed_and_carries_the_endpoint(
    ztml_env, receiver, tmp_path, monkeypatch
) -> None:
    url = receiver.start()
    _configure(tmp_path, monkeypatch, "webhook", f"{url}/hooks/ztml")
    version = register_sklearn(ztml_env.url, "notify-good", metrics=GOOD_METRICS)
    settings = load_settings()
    notifier = Notifier(settings)
    pipeline = Pipeline(settings, notifier=notifier)
    outcome = pipeline.run(f"models:/notify-good/{version}", "local", DeployOptions())
    try:
        assert outcome.status == "deployed", outcome.error
        assert notifier.flush(10)
        [delivery] = receiver.received
        headers = delivery["headers"]
        assert headers["X-Ztml-Event"] == "ztml.deployment.v1"
        assert verify_signature(
            SIGNING_SECRET,
            headers["X-Ztml-Event-Id"],
            headers["X-Ztml-Timestamp"],
            delivery["body"],
            headers["X-Ztml-Signature"],
        )
        assert not verify_signature(
            "wrong",
            headers["X-Ztml-Event-Id"],
            headers["X-Ztml-Timestamp"],
            delivery["body"],
            headers["X-Ztml-Signature"],
        )
        event = json.loads(delivery["body"])
        assert event["type"] == "ztml.deployment.v1"
        assert event["status"] == "deployed" and event["decision"] == "allow"
        assert event["endpoint"] == outcome.endpoint
        assert event["model"] == "notify-good" and event["version"] == version
        assert event["audit_run_id"] == outcome.audit_run_id
        assert SIGNING_SECRET not in delivery["body"].decode()
    finally:
        pipeline.delete(outcome.deployment, "local")


def _event(env: str = "local") -> DeploymentEvent:
    return DeploymentEvent(model="m", version="1", env=env, status="failed", error="boom")


def test_a_500_then_200_is_delivered_once_after_a_retry(receiver, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    receiver.script = [500, 200]
    _configure(tmp_path, monkeypatch, "webhook", receiver.start(), backoff_seconds=0.05)
    notifier = Notifier(load_settings())
    assert notifier.publish(_event()) == 1
    assert notifier.flush(10)
    assert len(receiver.received) == 2
    ids = {r["headers"]["X-Ztml-Event-Id"] for r in receiver.received}
    assert len(ids) == 1  # the same event, retried


def test_a_receiver_that_never_answers_does_not_hold_the_caller(
    receiver, tmp_path, monkeypatch, caplog
) -> None:
    monkeypatch.chdir(tmp_path)
    receiver.hang = 5
    _configure(
        tmp_path,
        monkeypatch,
        "webhook",
        receiver.start(),
        timeout_seconds=0.5,
        max_attempts=2,
        backoff_seconds=0.05,
    )
    notifier = Notifier(load_settings())
    started = time.monotonic()
    notifier.publish(_event())
    assert time.monotonic() - started < 0.5  # publish only enqueues
    assert notifier.flush_timeout("local") == 0.5
    flushed = notifier.flush(notifier.flush_timeout("local"))
    assert not flushed  # the bounded wait gave up instead of waiting for the receiver
    assert time.monotonic() - started < 2.0
    caplog.set_level(logging.WARNING, logger="ztml.notify")
    assert notifier.flush(10)  # the background attempts end on their own timeouts
    assert "failed after 2 attempt(s): ReadTimeout" in caplog.text
    assert "127.0.0.1" not in caplog.text  # the URL (a credential for Slack) is never logged


def test_outcomes_that_do_not_notify_and_misconfigured_targets(
    receiver, tmp_path, monkeypatch, caplog
) -> None:
    monkeypatch.chdir(tmp_path)
    _configure(tmp_path, monkeypatch, "webhook", receiver.start(), outcomes="[rejected]")
    notifier = Notifier(load_settings())
    assert notifier.publish(_event()) == 0  # 'failed' is not in this target's list
    monkeypatch.delenv("ZTML_TEST_NOTIFY_URL")
    rejected = DeploymentEvent(model="m", version="1", env="local", status="rejected")
    assert notifier.publish(rejected) == 0
    assert "ZTML_TEST_NOTIFY_URL is not set" in caplog.text
    assert receiver.received == []


def test_notify_test_command_reports_each_target(receiver, tmp_path, monkeypatch) -> None:
    import subprocess
    import sys

    monkeypatch.chdir(tmp_path)
    _configure(tmp_path, monkeypatch, "slack", receiver.start())
    result = subprocess.run(
        [sys.executable, "-m", "mlflow_ztml.cli", "notify", "test", "--env", "local"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "OK   slack[0]: delivered" in result.stdout
    assert "(test)" in json.loads(receiver.received[0]["body"])["text"]
    empty = subprocess.run(
        [sys.executable, "-m", "mlflow_ztml.cli", "notify", "test", "--env", "staging"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert empty.returncode == 2
    assert "no notification targets" in empty.stderr


def test_notification_config_never_takes_a_url_inline(tmp_path, monkeypatch) -> None:
    from mlflow_ztml.errors import ConfigError

    monkeypatch.chdir(tmp_path)
    (tmp_path / "ztml.yaml").write_text(
        "environments:\n  local:\n    notifications:\n      - {kind: slack, url: 'http://x'}\n"
    )
    with pytest.raises(ConfigError, match="notifications"):
        load_settings()


def test_events_are_redacted_before_they_leave(receiver, tmp_path, monkeypatch, caplog) -> None:
    """An error or reason quoting a credentialed URL reaches neither a webhook body (still
    signed, still JSON) nor Slack; a failed delivery never echoes the target's secret path."""
    monkeypatch.chdir(tmp_path)
    _configure(tmp_path, monkeypatch, "webhook", f"{receiver.start()}/hooks/ztml")
    event = DeploymentEvent(
        model="m",
        version="1",
        env="local",
        status="failed",
        error="cannot reach MLflow (API request to http://ztml:s3cret@mlflow:5000/api failed)",
        violations=["data source train (https://h/t.parquet?X-Amz-Signature=s3cret) unapproved"],
    )
    notifier = Notifier(load_settings())
    assert notifier.publish(event) == 1 and notifier.flush(10)
    [delivery] = receiver.received
    headers = delivery["headers"]
    assert verify_signature(
        SIGNING_SECRET,
        headers["X-Ztml-Event-Id"],
        headers["X-Ztml-Timestamp"],
        delivery["body"],
        headers["X-Ztml-Signature"],
    )
    sent = json.loads(delivery["body"])
    assert "s3cret" not in delivery["body"].decode()
    assert sent["error"].startswith("cannot reach MLflow (API request to http://ztml:***@mlflow")
    assert sent["violations"] == [
        "data source train (https://h/t.parquet?X-Amz-Signature=***) unapproved"
    ]

    url = f"http://127.0.0.1:{receiver.server.server_address[1]}"
    _configure(tmp_path, monkeypatch, "slack", f"{url}/services/{SLACK_TOKEN}")
    notifier = Notifier(load_settings())
    assert notifier.publish(event) == 1 and notifier.flush(10)
    text = json.loads(receiver.received[-1]["body"])["text"]
    assert "http://ztml:***@mlflow:5000" in text and "s3cret" not in text

    # a receiver that is not there: the failure says why, without the URL's secret path
    _configure(
        tmp_path, monkeypatch, "slack", f"http://127.0.0.1:{free_port()}/services/{SLACK_TOKEN}"
    )
    caplog.set_level(logging.DEBUG, logger="ztml")
    [(label, delivered, problem)] = Notifier(load_settings()).send_now(event)
    assert not delivered and label == "slack[0]"
    assert SLACK_TOKEN not in problem and SLACK_TOKEN not in caplog.text
