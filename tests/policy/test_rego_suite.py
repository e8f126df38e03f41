"""The Rego unit tests (`*_test.rego`) run green, and the runner reports failures honestly."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlflow_ztml.errors import PolicyError
from mlflow_ztml.policy.testing import run_policy_tests


def test_every_shipped_rego_test_passes() -> None:
    results = run_policy_tests()
    failures = [f"{r.qualified_name}: {r.error}" for r in results if not r.passed]
    assert not failures, "\n".join(failures)
    packages = {r.package for r in results}
    assert {"ztml.governance_test", "ztml.lib_test"} <= packages
    assert len(results) >= 50


def test_every_governance_check_has_a_test(default_bundle) -> None:
    """Each enforcement check id in the data is exercised by name in the Rego tests."""
    checks = default_bundle.data["ztml"]["environments"]["production"]["governance"]["enforcement"]
    tests = (Path(default_bundle.source) / "governance" / "governance_test.rego").read_text()
    keywords = {
        "metrics": "below the minimum",
        "metrics_missing": "metric logged",
        "fairness": "exceeds the maximum 0.1000",
        "fairness_missing": "no fairness evaluation",
        "drift": "drift age 0.3100",
        "framework": "is not allowed in",
        "dependencies_missing": "no dependencies recorded",
        "dependency_allowlist": "not on the dependency allowlist",
        "dependency_pinning": "not pinned to an exact version",
        "lineage_missing": "no data sources declared",
        "lineage_unapproved": "outside the approved prefixes",
        "signature": "model has no signature",
        "regression": "below the serving version",
        "insecure_uri": "uses an insecure scheme",
        "experiment_missing": "model experiment_id is absent",
        "model_version_missing": "model version is absent",
        "model_version_format": "is not semantic versioning",
        "required_labels": "manifest lacks the labels",
        "resources_missing": "inference resources lack",
        "autoscaling_missing": "inference autoscaling is absent",
        "latency_regression": "p99 latency 60.0000 ms",
        "monitoring_disabled": "monitoring is not enabled",
        "monitoring_drift_detection": "monitoring has no drift detection",
        "monitoring_alerting": "monitoring has no alerting",
        "explainability_missing": "no explainability method recorded",
        "training_samples_missing": "no training sample count recorded",
        "training_samples": "is below the minimum 100",
        "training_samples_low": "is below the recommended 1000",
        "vulnerable_dependency": "a known-vulnerable version",
    }
    assert set(checks) == set(keywords)
    missing = [check for check, text in keywords.items() if text not in tests]
    assert not missing


def test_a_failing_test_is_reported_as_failing(policy_copy: Path) -> None:
    (policy_copy / "governance" / "broken_test.rego").write_text(
        "package ztml.broken_test\n\n"
        "import data.ztml.governance\n\n"
        "test_deliberately_wrong if {\n"
        '\tgovernance.allow with input as {"environment": "production", "manifest": {}}\n'
        "}\n\n"
        "test_deliberately_erroring if {\n"
        "\tgovernance.no_such_function(1)\n"
        "}\n",
        encoding="utf-8",
    )
    # regorus only: OPA refuses the whole bundle for the undefined function, so under it
    # every test fails (the cross-check in test_opa_crosscheck.py covers both engines).
    results = {r.name: r for r in run_policy_tests(policy_copy, engines=("regorus",))}
    wrong = results["test_deliberately_wrong"]
    assert not wrong.passed and not wrong.disagreement
    assert {v.error for v in wrong.verdicts} == {"test evaluated to undefined"}
    erroring = results["test_deliberately_erroring"]
    assert not erroring.passed and "no_such_function" in (erroring.error or "")
    assert results["test_good_manifest_is_allowed_everywhere"].passed


def test_a_module_that_does_not_parse_fails_every_test(policy_copy: Path) -> None:
    (policy_copy / "governance" / "governance.rego").write_text(
        "package ztml.governance\n\ndeny contains msg if {\n", encoding="utf-8"
    )
    results = run_policy_tests(policy_copy)
    assert results and not any(r.passed for r in results)
    assert all("governance/governance.rego" in (r.error or "") for r in results)


def test_a_construct_regorus_cannot_evaluate_like_opa_fails_with_file_and_line(
    tmp_path: Path,
) -> None:
    (tmp_path / "p_test.rego").write_text(
        "package p_test\n\nimport rego.v1\n\n"
        'test_template if strings.render_template("{{.a}}", {"a": 1}) == "1"\n',
        encoding="utf-8",
    )
    [result] = run_policy_tests(tmp_path, engines=("regorus",))
    assert not result.passed
    assert "p_test.rego:5: strings.render_template(...)" in (result.error or "")


def test_a_directory_without_tests_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "p.rego").write_text("package p\n\nallow := true\n", encoding="utf-8")
    with pytest.raises(PolicyError, match="no Rego tests"):
        run_policy_tests(tmp_path)
