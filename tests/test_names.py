"""Deployment names: one rule (a DNS-1123 label that fits a Helm release) for every runtime."""

from __future__ import annotations

import pytest

from mlflow_ztml import names
from mlflow_ztml.errors import ConfigError, InvalidNameError
from mlflow_ztml.evidence import deployment_name
from mlflow_ztml.pipeline import default_deployment_name


@pytest.mark.parametrize("name", ["a", "credit-risk-local", "m1", "x" * 53, "0-9"])
def test_valid_names_pass_unchanged(name: str) -> None:
    assert names.validate(name) == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("../x", "contains './'"),
        ("a/b", "contains '/'"),
        ("Credit", "upper-case"),
        ("credit_risk", "contains '_'"),
        ("-credit", "starts or ends with '-'"),
        ("credit-", "starts or ends with '-'"),
        ("x" * 54, "54 characters"),
        ("", "empty"),
        ("modèle", "non-ASCII"),
    ],
)
def test_invalid_names_are_usage_errors_that_say_why(name: str, reason: str) -> None:
    with pytest.raises(InvalidNameError) as raised:
        names.validate(name)
    message = str(raised.value)
    assert f"invalid deployment name {name!r}" in message
    assert reason in message
    assert "DNS-1123" in message
    assert isinstance(raised.value, ConfigError)  # the CLI's exit 2, not 1 (= rejected)


def test_invalid_names_suggest_a_valid_spelling() -> None:
    with pytest.raises(InvalidNameError, match=r"try --name credit-risk$"):
        names.validate("Credit_Risk")


@pytest.mark.parametrize(
    ("model", "env", "expected"),
    [
        ("credit_risk", "local", "credit-risk-local"),  # the names ztml always gave
        ("Credit.Risk", "staging", "credit-risk-staging"),
        ("pipe-good", "local", "pipe-good-local"),
        ("-dash", "local", "dash-local"),
        ("modèle_crédit", "local", "modele-credit-local"),  # transliterated, not dropped
    ],
)
def test_default_names(model: str, env: str, expected: str) -> None:
    assert default_deployment_name(model, env) == expected


def test_default_names_are_always_valid_and_keep_the_environment() -> None:
    long_a = "fraud-detection-gradient-boosting-ensemble-model-for-cards-a"
    long_b = "fraud-detection-gradient-boosting-ensemble-model-for-cards-b"
    for model in (long_a, long_b, "模型", "!!!", "x" * 300, "ÆØÅ"):
        for env in ("local", "production"):
            name = default_deployment_name(model, env)
            assert names.is_valid(name), name
            assert name.endswith(f"-{env}"), name
    # cut to fit, two long names still get two deployments
    assert default_deployment_name(long_a, "production") != default_deployment_name(
        long_b, "production"
    )
    assert default_deployment_name("模型", "local") != default_deployment_name("数据", "local")
    assert deployment_name("Credit_Risk") == "credit-risk"
    assert names.is_valid(deployment_name("模型"))


@pytest.mark.parametrize("name", ["../x", ".hidden", "a/b", "", "a\0b", "line\nbreak"])
def test_lookups_never_leave_the_runtime_directory(name: str) -> None:
    with pytest.raises(InvalidNameError):
        names.check_lookup(name)


def test_lookups_still_find_names_made_before_the_rule() -> None:
    assert names.check_lookup("Old_Name") == "Old_Name"
