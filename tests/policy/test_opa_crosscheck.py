"""Cross-check the policies against OPA's own Go engine (opa-golib-python-bindings).

regorus and OPA disagree in corners (number formatting in sprintf, builtins over undefined
values), so the shipped policies are run through both: every Rego test must pass in OPA too,
and every decision must match regorus'. Skipped where the bindings are not installed
(they declare Python >= 3.14 and need `pip install --ignore-requires-python`).
"""

from __future__ import annotations

from typing import Any

import pytest

from mlflow_ztml import gate
from mlflow_ztml.policy.bundle import PolicyBundle, default_policy_dir, read_modules
from mlflow_ztml.policy.engine import decision_from_document
from mlflow_ztml.policy.regorus import RegorusEngine
from mlflow_ztml.policy.testing import discover_tests
from tests.policy.manifests import CASES, good_document

opa_bindings = pytest.importorskip(
    "opa_bindings",
    reason="opa-golib-python-bindings not installed "
    "(pip install --ignore-requires-python opa-golib-python-bindings==0.4.4)",
    exc_type=ImportError,
)
try:  # the Go shared library loads lazily; a build for another platform fails here
    opa_bindings.OpaEngine().close()
except OSError as exc:  # pragma: no cover - depends on the machine
    pytest.skip(
        f"opa-golib-python-bindings cannot load its library: {exc}", allow_module_level=True
    )

ENVIRONMENTS = ("local", "staging", "production", "qa")

# Inputs outside the happy path, where engines are most likely to differ.
ODD_INPUTS: list[dict[str, Any]] = [
    {},
    {"environment": "production"},
    {"environment": 7, "manifest": good_document()},
    {"environment": "production", "manifest": {}},
    {"environment": "production", "manifest": {"spec": {}}},
    {"environment": "staging", "manifest": {"spec": {"model": {}}}},
    {"environment": "local", "manifest": {"spec": {"model": {"uri": "http://x"}, "metrics": {}}}},
    {
        "environment": "production",
        "manifest": {
            "spec": {
                "model": {"framework": "sklearn", "uri": "models:/m/1"},
                "metrics": {"accuracy": 1, "f1_score": 0},
                "fairness": {},
                "drift": {"a": 1},
                "dependencies": [{"name": "numpy"}],
                "data_sources": [{}],
                "serving": {"version": "1", "metrics": {"accuracy": 2}},
            }
        },
    },
]


@pytest.fixture(scope="module")
def opa_engine(default_bundle: PolicyBundle) -> Any:
    engine = opa_bindings.OpaEngine()
    for module_id, source in default_bundle.modules.items():
        engine.add_policy(module_id, source)
    engine.add_data(default_bundle.data)
    yield engine
    engine.close()


def _opa_decision(opa_engine: Any, input: dict[str, Any]) -> tuple[bool, list[str], list[str]]:
    try:
        document = opa_engine.eval_document("ztml.governance", input)
    except opa_bindings.OpaUndefinedError:
        document = None
    decision = decision_from_document(document, engine="opa-go", package="ztml.governance")
    return decision.allow, decision.deny, decision.warn


def test_rego_tests_pass_in_opa(default_bundle: PolicyBundle) -> None:
    policy_dir = default_policy_dir()
    modules = {**read_modules(policy_dir), **read_modules(policy_dir, tests=True)}
    engine = opa_bindings.OpaEngine()
    try:
        for module_id, source in modules.items():
            engine.add_policy(module_id, source)
        engine.add_data(default_bundle.data)
        failures = []
        for _, package, name in discover_tests(modules):
            try:
                passed = engine.eval_document(f"{package}.{name}") is True
            except opa_bindings.OpaError as exc:
                passed, name = False, f"{name}: {exc}"
            if not passed:
                failures.append(f"{package}.{name}")
    finally:
        engine.close()
    assert not failures


@pytest.mark.parametrize("case", sorted(CASES))
def test_decisions_match_regorus(case: str, opa_engine: Any, regorus_engine: RegorusEngine) -> None:
    document, _, _, _ = CASES[case]
    for environment in ENVIRONMENTS:
        envelope = gate.policy_input(document, environment)
        ours = gate.evaluate(document, environment, regorus_engine)
        assert _opa_decision(opa_engine, envelope) == (ours.allow, ours.deny, ours.warn)


@pytest.mark.parametrize("index", range(len(ODD_INPUTS)))
def test_odd_inputs_match_regorus(
    index: int, opa_engine: Any, regorus_engine: RegorusEngine
) -> None:
    envelope = ODD_INPUTS[index]
    ours = regorus_engine.decide("ztml.governance", envelope)
    assert _opa_decision(opa_engine, envelope) == (ours.allow, ours.deny, ours.warn)
    assert not ours.allow
