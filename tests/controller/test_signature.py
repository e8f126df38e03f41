"""Webhook signature verification, proven against MLflow's own signing code."""

from __future__ import annotations

import base64

import pytest
from mlflow.webhooks.delivery import _generate_hmac_signature

from mlflow_ztml.controller import signature
from mlflow_ztml.controller.signature import SignatureError, secrets_from_env, sign, verify

BODY = b'{"entity": "model_version_alias", "action": "created", "data": {"name": "m"}}'
NOW = 1_800_000_000


def _verify(sig: str | None, *, secrets=("new",), delivery_id="d-1", timestamp=str(NOW), now=NOW):
    verify(
        list(secrets),
        delivery_id=delivery_id,
        timestamp=timestamp,
        signature=sig,
        body=BODY,
        tolerance_seconds=300,
        now=now,
    )


def test_mlflow_signatures_verify() -> None:
    mlflow_sig = _generate_hmac_signature("new", "d-1", str(NOW), BODY.decode())
    assert mlflow_sig == sign("new", "d-1", str(NOW), BODY)
    _verify(mlflow_sig)


def test_previous_secret_is_accepted_during_rotation() -> None:
    _verify(sign("old", "d-1", str(NOW), BODY), secrets=("new", "old"))
    with pytest.raises(SignatureError) as err:
        _verify(sign("old", "d-1", str(NOW), BODY), secrets=("new",))
    assert err.value.reason == "bad_signature"


def test_several_signatures_in_one_header_any_may_match() -> None:
    good = sign("new", "d-1", str(NOW), BODY)
    _verify(f"v1,{base64.b64encode(b'x' * 32).decode()} {good}")


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"sig": None}, "missing_signature"),
        ({"delivery_id": None}, "missing_delivery_id"),
        ({"timestamp": None}, "missing_timestamp"),
        ({"timestamp": "yesterday"}, "malformed_timestamp"),
        ({"now": NOW + 301}, "stale_timestamp"),
        ({"now": NOW - 301}, "stale_timestamp"),
        ({"sig": "v2,abc"}, "malformed_signature"),
        ({"sig": "v1,not base64!"}, "malformed_signature"),
        ({"sig": "v1," + base64.b64encode(b"forged" * 6).decode()}, "bad_signature"),
        ({"secrets": ()}, "no_secret_configured"),
    ],
)
def test_rejections_carry_a_reason(kwargs: dict, reason: str) -> None:
    sig = kwargs.pop("sig", sign("new", "d-1", str(NOW), BODY))
    with pytest.raises(SignatureError) as err:
        _verify(sig, **kwargs)
    assert err.value.reason == reason


def test_signature_binds_id_timestamp_and_body() -> None:
    good = sign("new", "d-1", str(NOW), BODY)
    for kwargs in ({"delivery_id": "d-2"}, {"timestamp": str(NOW + 1)}):
        with pytest.raises(SignatureError, match="does not match"):
            _verify(good, **kwargs)
    with pytest.raises(SignatureError):
        verify(
            ["new"],
            delivery_id="d-1",
            timestamp=str(NOW),
            signature=good,
            body=BODY + b" ",
            tolerance_seconds=300,
            now=NOW,
        )


def test_retries_within_the_tolerance_still_verify() -> None:
    """MLflow's retries resend the original timestamp up to about a minute later."""
    _verify(sign("new", "d-1", str(NOW), BODY), now=NOW + 120)


def test_secrets_come_from_env_or_files(tmp_path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-file\n")
    environ = {
        signature.SECRET_ENV + "_FILE": str(secret_file),
        signature.PREVIOUS_SECRET_ENV: "previous",
    }
    assert secrets_from_env(environ) == ["from-file", "previous"]
    assert secrets_from_env({signature.SECRET_ENV: "a", signature.PREVIOUS_SECRET_ENV: "a"}) == [
        "a"
    ]
    assert secrets_from_env({}) == []
