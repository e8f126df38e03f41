"""Governance decisions through the gate and the in-process engine, messages included."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from mlflow_ztml import gate
from mlflow_ztml.cli import main
from mlflow_ztml.config import PolicyConfig
from mlflow_ztml.manifest import ModelDeployment, from_dict
from mlflow_ztml.policy.bundle import PolicyBundle, load_bundle
from mlflow_ztml.policy.engine import Decision, UnavailableEngine, make_engine
from mlflow_ztml.policy.regorus import RegorusEngine
from tests.policy.manifests import (
    CASES,
    PUBLISHED_INVALID,
    PUBLISHED_SOURCE,
    manifest,
    published_valid,
)

ENVIRONMENTS = ("local", "staging", "production")


@pytest.mark.parametrize("case", sorted(CASES))
def test_representative_manifests(case: str, regorus_engine: RegorusEngine) -> None:
    document, environment, deny, warn = CASES[case]
    decision = gate.evaluate(document, environment, regorus_engine)
    assert decision.deny == sorted(deny)
    assert decision.warn == sorted(warn)
    assert decision.allow is (not deny)
    assert decision.engine == "regorus" and decision.package == "ztml.governance"


def test_policy_input_is_the_envelope() -> None:
    document = manifest(drop=("fairness",))
    envelope = gate.policy_input(document, "staging")
    assert envelope["environment"] == "staging"
    assert "fairness" not in envelope["manifest"]["spec"]  # missing stays missing, never 0
    assert envelope["manifest"]["kind"] == "ModelDeployment"


def test_unknown_environment_is_denied(regorus_engine: RegorusEngine) -> None:
    decision = gate.evaluate(manifest(), "qa", regorus_engine)
    assert not decision.allow
    assert decision.deny == [
        "no policy data for environment qa (known: local, production, staging)"
    ]


def test_settings_overrides_change_thresholds_without_touching_rego(make_settings) -> None:
    settings = make_settings(
        environments={"production": {"policy": {"governance": {"min_accuracy": 0.95}}}}
    )
    decision = gate.evaluate(manifest(), "production", make_engine(settings))
    assert decision.deny == ["accuracy 0.9300 is below the minimum 0.9500 for production"]
    # other environments keep their profile
    assert gate.evaluate(manifest(), "staging", make_engine(settings)).allow


def test_a_new_environment_starts_from_its_profile(make_settings) -> None:
    settings = make_settings(
        environments={
            "qa": {"policy_profile": "local"},
            "edge": {
                "policy": {"governance": {"max_fairness": {"demographic_parity_difference": 0.01}}}
            },
        }
    )
    engine = make_engine(settings)
    lenient = gate.evaluate(manifest(drop=("fairness",)), "qa", engine)
    assert lenient.allow and lenient.warn
    # not built in and no profile named: production, the strictest (fail closed)
    strict = gate.evaluate(manifest(), "edge", engine)
    assert strict.deny == [
        "demographic_parity_difference 0.0400 exceeds the maximum 0.0100 for edge"
    ]


def test_data_files_override_settings(make_settings, tmp_path: Path) -> None:
    yaml_file = tmp_path / "tight.yaml"
    yaml_file.write_text(
        "environments:\n  production:\n    governance:\n      drift_deny_above: 0.04\n",
        encoding="utf-8",
    )
    json_file = tmp_path / "frameworks.json"
    json_file.write_text(
        json.dumps(
            {
                "ztml": {
                    "environments": {
                        "production": {"governance": {"allowed_frameworks": ["pytorch"]}}
                    }
                }
            }
        ),
        encoding="utf-8",
    )
    settings = make_settings(
        environments={"production": {"policy": {"governance": {"drift_deny_above": 0.5}}}},
        policy=PolicyConfig(data_files=[yaml_file, json_file]),
    )
    decision = gate.evaluate(manifest(), "production", make_engine(settings))
    assert decision.deny == [
        "drift age 0.0500 exceeds the maximum 0.0400 for production",
        "framework sklearn is not allowed in production (allowed: pytorch)",
    ]


def test_enforcement_levels_are_data(make_settings) -> None:
    settings = make_settings(
        environments={
            "local": {"policy": {"governance": {"enforcement": {"fairness_missing": "deny"}}}}
        }
    )
    decision = gate.evaluate(manifest(drop=("fairness",)), "local", make_engine(settings))
    assert not decision.allow and decision.deny[0].startswith("no fairness evaluation recorded")


def test_unknown_policy_profile_denies_everything(make_settings) -> None:
    settings = make_settings(environments={"qa": {"policy_profile": "lenient"}})
    engine = make_engine(settings)
    assert isinstance(engine, UnavailableEngine)
    decision = gate.evaluate(manifest(), "production", engine)
    assert not decision.allow
    assert "policy profile 'lenient'" in (decision.error or "")


def test_unreadable_data_file_denies(make_settings, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("environments: [unclosed\n", encoding="utf-8")
    settings = make_settings(policy=PolicyConfig(data_files=[bad]))
    decision = gate.evaluate(manifest(), "local", make_engine(settings))
    assert not decision.allow and "bad.yaml" in decision.deny[0]


def test_broken_rego_is_a_deny_with_the_parse_error(policy_copy: Path, make_settings) -> None:
    (policy_copy / "governance" / "governance.rego").write_text(
        "package ztml.governance\n\ndeny contains msg if {\n  msg := \n}\n", encoding="utf-8"
    )
    settings = make_settings(policy=PolicyConfig(policy_dir=policy_copy))
    decision = gate.evaluate(manifest(), "production", make_engine(settings))
    assert not decision.allow
    assert decision.error and "governance/governance.rego" in decision.error
    assert decision.deny == [f"policy engine error: {decision.error}"]


def test_rego_that_fails_to_compile_is_a_deny(default_bundle: PolicyBundle) -> None:
    modules = dict(default_bundle.modules)
    modules["governance/extra.rego"] = (
        "package ztml.governance\n\ndeny contains msg if {\n\tmsg := undefined_helper(1)\n}\n"
    )
    decision = RegorusEngine(modules, default_bundle.data).decide(
        "ztml.governance", gate.policy_input(manifest(), "local")
    )
    assert not decision.allow and "undefined_helper" in (decision.error or "")


def test_evaluation_error_is_a_deny() -> None:
    modules = {
        "p.rego": "package p\n\ndeny := set()\n\nallow := true if input.n == 1\n\n"
        "allow := false if input.n == 1\n"
    }
    decision = RegorusEngine(modules, {}).decide("p", {"n": 1})
    assert not decision.allow
    assert (decision.error or "").startswith("policy evaluation failed")


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("deny := {1}\n\nallow := true\n", "policy package p: deny must be a set of strings"),
        ("deny := set()\n\nallow := 1\n", "policy package p does not define a boolean allow"),
        ("allow := true\n", "policy package p does not define deny"),
    ],
)
def test_packages_breaking_the_contract_are_denies(source: str, error: str) -> None:
    decision = RegorusEngine({"p.rego": f"package p\n\n{source}"}, {}).decide("p", {})
    assert not decision.allow and decision.error == error


@pytest.mark.parametrize(
    ("package", "error"),
    [
        ("ztml.missing", "policy package ztml.missing is not defined"),
        ("ztml.governance; true", "invalid policy package name"),
    ],
)
def test_bad_packages_are_denies(package: str, error: str, regorus_engine: RegorusEngine) -> None:
    decision = regorus_engine.decide(package, {"environment": "local"})
    assert not decision.allow and error in (decision.error or "")


def test_non_json_input_is_a_deny(regorus_engine: RegorusEngine) -> None:
    decision = regorus_engine.decide("ztml.governance", {"environment": float("nan")})
    assert not decision.allow and "JSON" in (decision.error or "")


def test_allow_false_without_reason_still_denies() -> None:
    modules = {"p.rego": "package p\n\ndeny := set()\n\nallow := false\n"}
    decision = RegorusEngine(modules, {}).decide("p", {})
    assert decision == Decision(
        allow=False,
        deny=["policy package p did not allow and gave no reason"],
        engine="regorus",
        package="p",
    )


def test_decide_is_thread_safe(regorus_engine: RegorusEngine) -> None:
    cases = [CASES[name] for name in sorted(CASES)]
    expected = [gate.evaluate(m, env, regorus_engine) for m, env, _, _ in cases]
    failures: list[str] = []

    def worker() -> None:
        try:
            for _ in range(20):
                for (m, env, _, _), want in zip(cases, expected, strict=True):
                    got = gate.evaluate(m, env, regorus_engine)
                    if got != want:
                        failures.append(f"{env}: {got} != {want}")
        except BaseException as exc:  # a pyo3 panic is a BaseException
            failures.append(repr(exc))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures


def test_default_engine_for_default_settings(make_settings) -> None:
    engine = make_engine(make_settings())
    assert isinstance(engine, RegorusEngine)
    assert gate.evaluate(manifest(), "production", engine).allow


def test_bundle_without_settings_is_the_shipped_profiles(default_bundle: PolicyBundle) -> None:
    environments = default_bundle.data["ztml"]["environments"]
    assert set(environments) == {"local", "staging", "production"}
    assert "governance/governance.rego" in default_bundle.modules
    assert not any(name.endswith("_test.rego") for name in default_bundle.modules)
    assert load_bundle().data == default_bundle.data


def test_manifest_round_trip_keeps_decisions(regorus_engine: RegorusEngine) -> None:
    document, environment, deny, _ = CASES["high-drift"]
    again = ModelDeployment.model_validate(document.to_dict())
    assert gate.evaluate(again, environment, regorus_engine).deny == sorted(deny)


# --- the published format through `ztml gate -f` -------------------------------------------


def _gate_file(document: dict[str, Any], directory: Path, environment: str) -> dict[str, Any]:
    """`ztml gate -f FILE --env ENV --format json` run in `directory` (its ztml.yaml applies)."""
    path = directory / "manifest.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    result = CliRunner().invoke(
        main, ["gate", "-f", str(path), "--env", environment, "--format", "json"]
    )
    assert result.exit_code in (0, 1), result.output
    payload = json.loads(result.stdout)
    assert result.exit_code == (0 if payload["allow"] else 1)
    return payload


def _approve_in_staging(directory: Path) -> None:
    """A ztml.yaml that approves the published table source (a name, not a prefix) in staging."""
    governance = {"approved_data_sources": [PUBLISHED_SOURCE]}
    config = {"environments": {"staging": {"policy": {"governance": governance}}}}
    (directory / "ztml.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")


@pytest.fixture
def approving(make_settings, tmp_path: Path) -> Path:
    make_settings()  # isolates the environment (no ZTML_* variables) and enters tmp_path
    _approve_in_staging(tmp_path)
    return tmp_path


def test_published_valid_manifest_is_allowed_in_staging_once_its_sources_are_approved(
    make_settings, tmp_path: Path
) -> None:
    make_settings()
    unapproved = _gate_file(published_valid(), tmp_path, "staging")
    assert unapproved["deny"] == [
        f"data source {PUBLISHED_SOURCE} is outside the approved prefixes for "
        "staging: gs://ml-datasets-, s3://approved-data-"
    ]
    _approve_in_staging(tmp_path)
    approved = _gate_file(published_valid(), tmp_path, "staging")
    assert approved["allow"] is True and approved["deny"] == []
    # only what ztml adds on top of the published rules warns: ranges instead of pins, and
    # no signature (a hand-written manifest has none)
    requirements = published_valid()["spec"]["dependencies"]
    assert approved["warn"] == sorted(
        [
            f"dependency {r.split('>=')[0]} is not pinned to an exact version ({r}); "
            "staging requires =="
            for r in requirements
        ]
        + [
            "model has no signature; staging requires one (log the model with a signature or "
            "an input example)"
        ]
    )


def test_production_is_deliberately_stricter_than_the_published_rules(approving: Path) -> None:
    """Exact pins and a signature: the only reasons production refuses the valid example
    (besides its data sources, which only staging's ztml.yaml approves here)."""
    decision = _gate_file(published_valid(), approving, "production")
    requirements = published_valid()["spec"]["dependencies"]
    assert decision["deny"] == sorted(
        [
            f"data source {PUBLISHED_SOURCE} is outside the approved prefixes for "
            "production: gs://ml-datasets-, s3://approved-data-"
        ]
        + [
            f"dependency {r.split('>=')[0]} is not pinned to an exact version ({r}); "
            "production requires =="
            for r in requirements
        ]
        + [
            "model has no signature; production requires one (log the model with a signature "
            "or an input example)"
        ]
    )


@pytest.mark.parametrize("name", sorted(PUBLISHED_INVALID))
def test_each_published_invalid_manifest_is_denied_for_its_own_reason_everywhere(
    name: str, approving: Path
) -> None:
    document, reasons = PUBLISHED_INVALID[name]
    for environment in ENVIRONMENTS:
        own = {reason.format(env=environment) for reason in reasons}
        decision = _gate_file(document, approving, environment)
        assert decision["allow"] is False, environment
        assert own <= set(decision["deny"]), (environment, decision["deny"])
    # locally nothing else denies: the defect alone decides
    assert _gate_file(document, approving, "local")["deny"] == sorted(
        reason.format(env="local") for reason in reasons
    )


def test_published_format_and_canonical_form_get_the_same_decision(
    regorus_engine: RegorusEngine,
) -> None:
    """What the gate judged is what `ztml manifest` writes: the canonical form decides alike."""
    published = from_dict(published_valid())
    canonical = from_dict(published.to_dict())
    for environment in ENVIRONMENTS:
        assert gate.evaluate(published, environment, regorus_engine) == gate.evaluate(
            canonical, environment, regorus_engine
        )
