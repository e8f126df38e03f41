"""The status page (`GET /`) without a browser: escaping, headers, links, the data it shows.

The controller here is the stand-in from helpers.py with a fixed `status()` shaped exactly like
`manager.Controller.status()` (hostile names cannot be made in a real MLflow: a registered
model name may not contain `/`); tests/controller/test_browser.py loads the page of a real
controller in Chromium.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient

from mlflow_ztml.controller import status_page
from mlflow_ztml.controller.app import create_app
from mlflow_ztml.redact import public_url
from tests.controller.helpers import RecordingController

HOSTILE = "<script>alert(1)</script>"
REASON = 'accuracy 0.69 < 0.85 <img src=x onerror="alert(2)">'


class StatusController(RecordingController):
    def __init__(self, status: dict[str, Any]) -> None:
        super().__init__()
        self._status = status

    def status(self) -> dict[str, Any]:
        return self._status


def sample_status(ui: str | None = "http://mlflow.internal:5000") -> dict[str, Any]:
    return {
        "leader": True,
        "identity": None,
        "environments": ["canary", "production", "staging"],
        "last_poll": {"at": 1_796_176_920.0, "ok": True, "seconds": 0.1, "differences": []},
        "queue": {"credit/production": {"state": "waiting", "failures": 2, "retry_in": 4.2}},
        "keys": {
            "credit/canary": {"key": "credit/canary", "action": "in_sync", "conflicts": []},
            f"{HOSTILE}/staging": {
                "key": f"{HOSTILE}/staging",
                "action": "deploy",
                "desired_version": "8",
                "desired_source": "alias staging",
                "actual_version": "7",
                "actual_state": "running",
                "outcome": "rejected",
                "error": REASON,
                "conflicts": [],
                "seconds": 1.0,
                "at": 1_796_176_900.0,
                "serving_version": "7",
                "endpoint": "http://127.0.0.1:8123",
                "since": 1_796_176_000.0,
            },
        },
        "decisions": [
            {
                "model": HOSTILE,
                "environment": "staging",
                "version": "8",
                "outcome": "rejected",
                "decision": "deny",
                "reasons": [REASON, "f1 0.57 < 0.80"],
                "warnings": [],
                "audit_run_id": "abc123",
                "audit_experiment_id": "4",
                "at": 1_796_176_900.0,
            }
        ],
        "mlflow_ui": ui,
    }


def get_page(status: dict[str, Any]):
    return TestClient(create_app(StatusController(status), manage_lifecycle=False)).get("/")


def test_every_value_is_escaped_and_no_script_can_run() -> None:
    answer = get_page(sample_status())
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    page = answer.text
    assert "<script" not in page and "<img" not in page and "onerror=" not in page.split("<li>")[0]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "accuracy 0.69 &lt; 0.85 &lt;img src=x onerror=&quot;alert(2)&quot;&gt;" in page
    # the link to the version page quotes the name for the URL, then escapes it for HTML
    assert (
        'href="http://mlflow.internal:5000/#/models/%3Cscript%3Ealert%281%29%3C%2Fscript%3E'
        '/versions/8"' in page
    )
    assert 'href="http://mlflow.internal:5000/#/experiments/4/runs/abc123"' in page
    csp = answer.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp and "unsafe-inline" not in csp
    # the one inline stylesheet is allowed by its hash, nothing else is
    assert f"'sha256-{status_page._CSS_HASH}'" in csp
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert "<form" not in page and "<button" not in page  # read-only


def test_the_page_shows_what_status_shows() -> None:
    page = get_page(sample_status()).text
    text = re.sub(r"<[^>]+>", " ", page)
    assert "Environment staging" in text and "Environment canary" in text
    assert "rejected v8" in text  # the status word beside the version it is about
    assert "v7" in text and "http://127.0.0.1:8123" in text  # what still serves
    assert "2026-12-02" in text  # since when, UTC
    assert "credit" in text and "retrying" in text and "4 s" in text  # the queue's view
    # canary: an idle key (nothing wanted, nothing serving) makes no row
    assert "nothing deployed or wanted in this environment" in text
    assert "f1 0.57 &lt; 0.80" in page


def test_links_never_carry_tracking_credentials() -> None:
    ui = public_url("https://alice:s3cret@mlflow.example.internal:8443/?token=abc#frag")
    assert ui == "https://mlflow.example.internal:8443"
    page = get_page(sample_status(ui)).text
    assert "s3cret" not in page and "alice" not in page and "token=abc" not in page
    assert 'href="https://mlflow.example.internal:8443/#/models/' in page
    assert public_url("file:///tmp/mlruns") is None
    assert public_url("databricks") is None
    assert public_url("http://[::1]:5000/") == "http://[::1]:5000"


def test_without_an_mlflow_address_the_page_has_no_links() -> None:
    page = get_page(sample_status(ui=None)).text
    assert "<a " not in page
    assert "MLflow address unknown" in page


def test_a_deploy_in_progress_and_a_retry_read_as_such() -> None:
    deploying = {"action": "deploy", "outcome": None, "desired_version": "8"}
    assert status_page.status_word(deploying, {"state": "processing"}) == "deploying"
    finished = {"action": "deploy", "outcome": "rejected", "serving_version": "7"}
    # a quick re-check of a rejected version keeps its word; a backoff says "retrying"
    assert status_page.status_word(finished, {"state": "processing"}) == "rejected"
    assert status_page.status_word(finished, {"state": "waiting"}) == "retrying"
    assert status_page.status_word({}, {"state": "ready"}) == "queued"
    served = {"action": "in_sync", "serving_version": "7"}
    assert status_page.status_word(served, None) == "deployed"
