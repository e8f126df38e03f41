"""The `ztml.deployment` policy beyond its Rego tests: every enforcement check is exercised by
a Rego test, and OPA's own Go engine decides exactly like regorus on rendered charts and on
odd inputs (engines disagree on builtins over undefined values)."""

from __future__ import annotations

from typing import Any

import pytest

from mlflow_ztml.policy.bundle import default_policy_dir, load_bundle
from mlflow_ztml.policy.engine import decision_from_document
from mlflow_ztml.policy.regorus import RegorusEngine
from tests.helm.conftest import IMAGE, INFERENCE, MODEL, REGISTRY, render

CHECK_TESTS = {
    "non_root": "may run as root",
    "privilege_escalation": "allows privilege escalation",
    "privileged": "is privileged",
    "read_only_root_filesystem": "has a writable root filesystem",
    "capabilities": "does not drop ALL capabilities",
    "seccomp": "has no seccomp profile",
    "host_namespaces": "uses hostNetwork",
    "service_account_token": "mounts a service account token",
    "resources": "has no cpu limit",
    "probes": "has no readinessProbe",
    "image_tag": "uses the moving tag latest",
    "image_digest": "is not pinned by digest",
    "registry": "is not from an approved registry",
    "required_labels": "lacks the required labels",
    "replicas": "requires at least 2",
    "required_kinds": "no PodDisruptionBudget among the rendered objects",
}


def test_every_deployment_check_has_a_rego_test() -> None:
    bundle = load_bundle()
    for name, environment in bundle.data["ztml"]["environments"].items():
        assert set(environment["deployment"]["enforcement"]) == set(CHECK_TESTS), name
    tests = (default_policy_dir() / "deployment" / "deployment_test.rego").read_text()
    assert [c for c, text in CHECK_TESTS.items() if text not in tests] == []


def _inputs() -> list[dict[str, Any]]:
    good = render(INFERENCE, {"preset": "production", "image": IMAGE, "model": MODEL})
    loose = render(
        INFERENCE,
        {
            "preset": "dev",
            "image": {"repository": "docker.io/library/python", "tag": "latest"},
            "securityContext": {"runAsNonRoot": False},
            "podSecurityContext": {},
            "resources": {"requests": {"cpu": "1"}},
            "autoscaling": {"enabled": False},
            "podDisruptionBudget": {"enabled": False},
        },
    )
    cases: list[dict[str, Any]] = []
    for env in ("local", "staging", "production", "qa"):
        cases += [{"environment": env, "objects": good}, {"environment": env, "objects": loose}]
    cases += [
        {},
        {"environment": "production"},
        {"environment": 3, "objects": good},
        {"environment": "production", "objects": None},
        {"environment": "production", "objects": [1, "x", None]},
        {"environment": "production", "objects": [{"kind": "Deployment"}]},
        {"environment": "production", "objects": [{"kind": "Pod", "spec": {"containers": [{}]}}]},
        {
            "environment": "production",
            "objects": [{"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": {}}}}}],
        },
    ]
    return cases


def test_opa_decides_like_regorus() -> None:
    opa_bindings = pytest.importorskip(
        "opa_bindings",
        reason="opa-golib-python-bindings not installed "
        "(pip install --ignore-requires-python opa-golib-python-bindings==0.4.4)",
        exc_type=ImportError,
    )
    bundle = load_bundle()
    for environment in bundle.data["ztml"]["environments"].values():
        environment["deployment"]["approved_registries"] = [REGISTRY]
    ours = RegorusEngine.from_bundle(bundle)
    try:
        opa = opa_bindings.OpaEngine()
    except OSError as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"opa-golib-python-bindings cannot load its library: {exc}")
    try:
        for module_id, source in bundle.modules.items():
            opa.add_policy(module_id, source)
        opa.add_data(bundle.data)
        for case in _inputs():
            try:
                document = opa.eval_document("ztml.deployment", case)
            except opa_bindings.OpaUndefinedError:
                document = None
            theirs = decision_from_document(document, engine="opa-go", package="ztml.deployment")
            mine = ours.decide("ztml.deployment", case)
            assert (theirs.allow, theirs.deny, theirs.warn) == (mine.allow, mine.deny, mine.warn), (
                case.get("environment")
            )
    finally:
        opa.close()
