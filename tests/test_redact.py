"""One redaction for every boundary (`mlflow_ztml.redact`), and the log filter built on it."""

from __future__ import annotations

import io
import json
import logging

import pytest

from mlflow_ztml import logs
from mlflow_ztml.redact import clip, redact, redact_data

SECRET = "s3cret"

CREDENTIALED = [
    ("http://user:s3cret@127.0.0.1:5000/api", "http://user:***@127.0.0.1:5000/api"),
    ("https://ghp_s3cret@github.com/o/r.git", "https://***@github.com/o/r.git"),
    ("postgresql://ztml:p@s3cret@db:5432/mlflow", "postgresql://ztml:***@db:5432/mlflow"),
    (
        "s3://b/k?X-Amz-Credential=AKIAs3cret%2F20260101&X-Amz-Signature=abcs3cret&x=1",
        "s3://b/k?X-Amz-Credential=***&X-Amz-Signature=***&x=1",
    ),
    (
        "https://acct.blob.core.windows.net/c/b?sv=2024&sig=s3cret%3D&se=1",
        "https://acct.blob.core.windows.net/c/b?sv=2024&sig=***&se=1",
    ),
    ("https://h/cb#access_token=s3cret&state=1", "https://h/cb#access_token=***&state=1"),
    ("https://h/x?api_key=s3cret", "https://h/x?api_key=***"),
    ("https://h/x?token=s3cret;page=2", "https://h/x?token=***;page=2"),
    ("https://h/x?password=s3cret", "https://h/x?password=***"),
    ("curl -H 'Authorization: Bearer s3cret.tok-en'", "curl -H 'Authorization: Bearer ***'"),
    ("Proxy-Authorization: Basic czNjcmV0", "Proxy-Authorization: Basic ***"),
    ("sent bearer s3cret to the server", "sent bearer *** to the server"),
    ("MLFLOW_TRACKING_PASSWORD=s3cret", "MLFLOW_TRACKING_PASSWORD=***"),
    ("aws_secret_access_key = s3cret", "aws_secret_access_key = ***"),
    ("password: 's3cret with spaces' then", "password: '***' then"),
]


@pytest.mark.parametrize(("text", "expected"), CREDENTIALED)
def test_each_credential_shape_is_redacted_and_the_rest_kept(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert SECRET not in redact(text)
    assert redact(redact(text)) == redact(text)  # idempotent: safe to apply at every boundary


@pytest.mark.parametrize(
    "text",
    [
        "environment variable ZTML_WEBHOOK_SECRET is not set",
        "mail a@b.com or see http://host/path?q=a@b&page=2",
        "PWD=/home/ztml max_tokens=5 tokenizer: bert",
        "models:/credit-risk@champion",
    ],
)
def test_text_without_credentials_is_unchanged(text: str) -> None:
    assert redact(text) == text


def test_json_stays_json_and_secret_keys_are_masked_whole() -> None:
    document = json.dumps({"Authorization": "Basic czNjcmV0", "token": "s3cret", "n": 1})
    assert json.loads(redact(document)) == {"Authorization": "Basic ***", "token": "***", "n": 1}
    data = {
        "error": "cannot reach http://u:s3cret@h/",
        "nested": [{"api_key": "s3cret", "tokens": 3, "ok": True}],
    }
    assert redact_data(data) == {
        "error": "cannot reach http://u:***@h/",
        "nested": [{"api_key": "***", "tokens": 3, "ok": True}],
    }


def test_clip_cuts_at_a_word_boundary_with_an_ellipsis() -> None:
    text = "the registry answered with an unexpected status for this model version"
    clipped = clip(text, 30)
    assert len(clipped) <= 30 and clipped.endswith("...")
    assert text.startswith(clipped[:-3])
    assert clipped[:-3].split()[-1] in text.split()  # the last word is whole
    assert clip("short", 30) == "short"
    assert clip("x" * 50, 20) == "x" * 17 + "..."  # one long token: nothing better
    tagged = clip(text, 50, suffix=" ... (truncated)")
    assert tagged.endswith(" ... (truncated)") and len(tagged) <= 50


def test_log_filter_redacts_message_args_and_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_LOGGING_LEVEL", "WARNING")  # leave this process's MLflow alone
    root_level = logging.getLogger().level
    stream = io.StringIO()
    handler = logs.configure("INFO", stream=stream)
    log = logging.getLogger("ztml.test_redact")
    try:
        log.warning("cannot reach %s", "http://user:s3cret@127.0.0.1:1/")
        log.warning("%s://%s@%s", "http", "user:s3cret", "host")  # secret spans the args
        log.info("headers %s", {"Authorization": "Bearer s3cret"})
        log.info("count %d of %s", 3, "clean")
        try:
            raise RuntimeError("token=s3cret rejected")
        except RuntimeError:
            log.exception("call failed")
    finally:
        logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(root_level)
    output = stream.getvalue()
    assert SECRET not in output
    assert "cannot reach http://user:***@127.0.0.1:1/" in output
    assert "count 3 of clean" in output  # clean records keep their formatting
    assert "RuntimeError: token=*** rejected" in output  # the traceback text too
