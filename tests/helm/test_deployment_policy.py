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
    "model_uri_insecure": "loads the model over http://",
    "prometheus_scrape": "lacks the annotations prometheus.io/scrape: true",
}


def test_every_deployment_check_has_a_rego_test() -> None:
    bundle = load_bundle()
    for name, environment in bundle.data["ztml"]["environments"].items():
        assert set(environment["deployment"]["enforcement"]) == set(CHECK_TESTS), name
    tests = (default_policy_dir() / "deployment" / "deployment_test.rego").read_text()
    assert [c for c, text in CHECK_TESTS.items() if text not in tests] == []


# Every ECR registry host (12-digit account, any region): approvable by pattern, not by prefix.
ECR_PATTERN = r"[0-9]{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com"
SCRAPED = {"prometheus.io/scrape": "true", "prometheus.io/port": "8080"}


def _engine(**deployment: Any) -> RegorusEngine:
    """The shipped policies with `deployment` merged into every environment's data."""
    bundle = load_bundle()
    for environment in bundle.data["ztml"]["environments"].values():
        environment["deployment"].update(deployment)
    return RegorusEngine.from_bundle(bundle)


def _decide(engine: RegorusEngine, environment: str, values: dict[str, Any]) -> Any:
    objects = render(INFERENCE, {"image": IMAGE, "model": MODEL, **values})
    return engine.decide("ztml.deployment", {"environment": environment, "objects": objects})


def test_a_chart_loading_its_model_over_http_is_denied() -> None:
    engine = _engine(approved_registries=[REGISTRY])
    values = {"preset": "production", "model": {**MODEL, "uri": "http://models.example.com/m"}}
    decision = _decide(engine, "production", {**values, "podAnnotations": SCRAPED})
    assert not decision.allow
    assert decision.deny == [
        "container server of Deployment credit-risk-prod: env SERVING_MODEL_URI loads the model "
        "over http://; production requires https, s3://, gs:// or models:/ (insecure: http://)"
    ]
    secure = {**values, "model": {**MODEL, "uri": "s3://models/m"}, "podAnnotations": SCRAPED}
    assert _decide(engine, "production", secure).allow


def test_scrape_annotations_or_a_service_monitor_satisfy_the_metrics_check() -> None:
    engine = _engine(approved_registries=[REGISTRY])
    annotated = _decide(engine, "staging", {"preset": "staging", "podAnnotations": SCRAPED})
    monitored = _decide(
        engine,
        "staging",
        {"preset": "staging", "metrics": {"serviceMonitor": {"enabled": True}}},
    )
    refused = _decide(
        engine,
        "staging",
        {"preset": "staging", "podAnnotations": {"prometheus.io/scrape": "false"}},
    )
    assert (annotated.allow, annotated.warn) == (True, [])
    assert (monitored.allow, monitored.warn) == (True, [])
    assert refused.allow and refused.warn == [
        "the pod template of Deployment credit-risk-prod lacks the annotations "
        "prometheus.io/scrape: true and no ServiceMonitor or PodMonitor is rendered; staging "
        "expects Prometheus to scrape /metrics"
    ]


def test_an_ecr_registry_is_approved_by_pattern() -> None:
    values = {"preset": "production", "podAnnotations": SCRAPED}
    assert not _decide(_engine(), "production", values).allow
    decision = _decide(_engine(approved_registry_patterns=[ECR_PATTERN]), "production", values)
    assert (decision.allow, decision.deny) == (True, [])


def _inputs() -> list[dict[str, Any]]:
    good = render(INFERENCE, {"preset": "production", "image": IMAGE, "model": MODEL})
    insecure = render(
        INFERENCE,
        {
            "preset": "production",
            "image": IMAGE,
            "model": {**MODEL, "uri": "http://models.example.com/m"},
            "podAnnotations": SCRAPED,
        },
    )
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
        cases += [{"environment": env, "objects": objects} for objects in (good, loose, insecure)]
    odd_env: list[Any] = [
        1,
        None,
        {"name": "MODEL_URI"},
        {"name": "MODEL_URI", "value": 5},
        {"name": "MODEL_URI", "value": "http://x"},
    ]
    odd_container = {"name": "c", "image": "x", "env": odd_env}
    odd_template = {"metadata": {"annotations": None}, "spec": {"containers": [odd_container]}}
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
        {
            "environment": "staging",
            "objects": [{"kind": "Deployment", "spec": {"template": odd_template}}],
        },
        {
            "environment": "production",
            "objects": [
                {
                    "kind": "Deployment",
                    "spec": {
                        "template": {
                            "metadata": {"annotations": "prometheus.io/scrape=true"},
                            "spec": {"containers": [{"name": "c", "env": "MODEL_URI=http://x"}]},
                        }
                    },
                }
            ],
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
    environments = bundle.data["ztml"]["environments"]
    for environment in environments.values():
        environment["deployment"]["approved_registries"] = [REGISTRY]
    # staging approves by pattern only; production also carries a pattern that is no regex
    environments["staging"]["deployment"].update(
        approved_registries=[], approved_registry_patterns=[ECR_PATTERN]
    )
    environments["production"]["deployment"]["approved_registry_patterns"] = ["[a-", 7]
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
