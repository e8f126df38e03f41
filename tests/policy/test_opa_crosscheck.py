"""`ztml policy test` runs every Rego test under both engines and fails on any disagreement.

The engines are ztml's default (regorus, with the compat layer) and OPA's own Go engine
(opa-golib-python-bindings, installed by the Makefile; these tests skip where it is not).
A test one engine passes and the other fails is reported with each engine's result, and the
command exits 1, because a policy author must never see two answers.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlflow_ztml.cli import main
from mlflow_ztml.errors import PolicyError
from mlflow_ztml.policy import testing
from mlflow_ztml.policy.testing import run_policy_tests, select_engines

pytest.importorskip(
    "opa_bindings",
    reason="OPA's engine is not installed "
    "(pip install --no-deps --ignore-requires-python opa-golib-python-bindings==0.4.4)",
    exc_type=ImportError,
)

BOTH = ("regorus", "opa")

# A test of the published policies' style: a JSON pointer with a leading slash, which
# regorus alone treats as a no-op. OPA removes the key, and so must ztml.
POINTER_TEST = """package pointer_test

import rego.v1

manifest := {"spec": {"model": {"experiment_id": "1"}, "monitoring": {"enabled": true}}}

test_leading_slash_removes_the_key if {
\tm := json.remove(manifest, ["/spec/model/experiment_id"])
\tnot m.spec.model.experiment_id
}

test_patch_then_remove if {
\tm := json.patch(manifest, [{"op": "replace", "path": "/spec/monitoring/enabled", "value": false}])
\tm.spec.monitoring.enabled == false
\tobject.keys(json.remove(m, ["/spec/monitoring"]).spec) == {"model"}
}
"""

# Comparing an object with a set: OPA orders objects before sets, regorus the other way
# round, inside `<` (an operator ztml does not rewrite; see docs/rego-divergences.md).
DISAGREEING_TEST = """package ordering_test

import rego.v1

test_an_object_sorts_before_a_set if {
\t{"a": 1} < {1}
}
"""


def _write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(text, encoding="utf-8")
    return directory


def test_every_shipped_rego_test_gets_the_same_answer_from_both_engines() -> None:
    results = run_policy_tests(engines=BOTH)
    assert results
    assert all(len(r.verdicts) == 2 for r in results)
    disagreements = [f"{r.qualified_name}: {r.error}" for r in results if r.disagreement]
    assert not disagreements, "\n".join(disagreements)


def test_json_pointer_paths_pass_under_both_engines(tmp_path: Path) -> None:
    directory = _write(tmp_path / "pointer", "pointer_test.rego", POINTER_TEST)
    results = run_policy_tests(directory, engines=BOTH)
    assert [(r.name, r.passed) for r in results] == [
        ("test_leading_slash_removes_the_key", True),
        ("test_patch_then_remove", True),
    ]


def test_a_disagreement_fails_and_shows_each_engines_answer(tmp_path: Path) -> None:
    directory = _write(tmp_path / "ordering", "ordering_test.rego", DISAGREEING_TEST)
    [result] = run_policy_tests(directory, engines=BOTH)
    assert not result.passed and result.disagreement
    assert {v.engine: v.passed for v in result.verdicts} == {"regorus": False, "opa": True}
    assert "regorus FAIL (test evaluated to undefined)" in (result.error or "")
    assert "opa PASS" in (result.error or "")

    outcome = CliRunner().invoke(main, ["policy", "test", str(directory)])
    assert outcome.exit_code == 1, outcome.output
    assert "DISAGREE data.ordering_test.test_an_object_sorts_before_a_set" in outcome.output
    assert "0 passed, 1 failed (engines: regorus, opa)" in outcome.output


def test_cli_runs_several_directories_under_both_engines(tmp_path: Path) -> None:
    first = _write(tmp_path / "one", "pointer_test.rego", POINTER_TEST)
    second = _write(tmp_path / "two", "pointer_test.rego", POINTER_TEST)
    outcome = CliRunner().invoke(main, ["policy", "test", str(first), str(second)])
    assert outcome.exit_code == 0, outcome.output
    assert f"# {first}" in outcome.output and f"# {second}" in outcome.output
    assert "4 passed, 0 failed (engines: regorus, opa)" in outcome.output


def test_cli_exit_codes_for_tests_that_cannot_run(tmp_path: Path) -> None:
    _write(tmp_path / "empty", "p.rego", "package p\n\nallow := true\n")
    no_tests = CliRunner().invoke(main, ["policy", "test", str(tmp_path / "empty")])
    assert no_tests.exit_code == 2 and "no Rego tests" in no_tests.output
    missing = CliRunner().invoke(main, ["policy", "test", str(tmp_path / "missing")])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_without_opas_engine_auto_runs_regorus_and_both_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "opa_bindings", None)  # as if it were not installed
    assert select_engines("auto") == ("regorus",)
    with pytest.raises(PolicyError, match="OPA's engine is not installed"):
        select_engines("both")
    assert not testing.opa_engine_available()
    directory = _write(tmp_path / "pointer", "pointer_test.rego", POINTER_TEST)
    outcome = CliRunner().invoke(main, ["policy", "test", "--engine", "both", str(directory)])
    assert outcome.exit_code == 2 and "OPA's engine is not installed" in outcome.output
    auto = CliRunner().invoke(main, ["policy", "test", str(directory)])
    assert auto.exit_code == 0 and "2 passed, 0 failed\n" in auto.output
