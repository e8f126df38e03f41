"""helm/ztml-inference rendered with the real Helm engine: schema-valid for a current
Kubernetes, allowed by the deployment policy, clean under trivy, lint-clean, installable
(client dry-run), with the sizing, GPU and security settings the presets promise."""

from __future__ import annotations

import json
import py_compile
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from mlflow_ztml.policy.bundle import load_bundle
from mlflow_ztml.policy.regorus import RegorusEngine
from tests.helm.conftest import (
    CUSTOM_KINDS,
    IMAGE,
    INFERENCE,
    KUBE_VERSION,
    MODEL,
    REGISTRY,
    helm,
    render,
    trivy_findings,
    validate,
    write_objects,
)

PRESETS = {"dev": "local", "staging": "staging", "production": "production"}
SIZES = {  # preset: (replicas, cpu, memory, hpa min, hpa max)
    "dev": (1, "500m", "512Mi", 1, 2),
    "staging": (2, "1000m", "1Gi", 2, 4),
    "production": (3, "2000m", "4Gi", 3, 10),
}
CASES = [(preset, gpu) for preset in PRESETS for gpu in (False, True)]


def values(preset: str, gpu: bool, **extra: Any) -> dict[str, Any]:
    return {
        "preset": preset,
        "environment": PRESETS[preset],
        "image": IMAGE,
        "model": MODEL,
        "gpu": {"enabled": gpu, "count": 1},
        **extra,
    }


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


@pytest.fixture(scope="module")
def engine() -> RegorusEngine:
    """The shipped deployment policy, with the test registry approved everywhere."""
    bundle = load_bundle()
    for environment in bundle.data["ztml"]["environments"].values():
        environment["deployment"]["approved_registries"] = [REGISTRY]
    return RegorusEngine.from_bundle(bundle)


@pytest.fixture(scope="module")
def rendered() -> dict[tuple[str, bool], list[dict[str, Any]]]:
    return {(preset, gpu): render(INFERENCE, values(preset, gpu)) for preset, gpu in CASES}


def test_default_values_render_the_core_objects() -> None:
    kinds = {o["kind"] for o in render(INFERENCE)}
    assert {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ServiceAccount",
    } <= kinds


@pytest.mark.parametrize(("preset", "gpu"), CASES)
def test_objects_are_valid_for_a_current_kubernetes(
    preset: str, gpu: bool, rendered: dict[tuple[str, bool], list[dict[str, Any]]]
) -> None:
    assert validate(rendered[(preset, gpu)]) == []


@pytest.mark.parametrize(("preset", "gpu"), CASES)
def test_objects_pass_the_deployment_policy(
    preset: str,
    gpu: bool,
    rendered: dict[tuple[str, bool], list[dict[str, Any]]],
    engine: RegorusEngine,
) -> None:
    environment = PRESETS[preset]
    decision = engine.decide(
        "ztml.deployment", {"environment": environment, "objects": rendered[(preset, gpu)]}
    )
    assert decision.allow, decision.deny
    assert decision.warn == []


def test_the_policy_judges_what_the_chart_renders(engine: RegorusEngine) -> None:
    """A tag instead of a digest and a writable root filesystem are caught in production."""
    objects = render(
        INFERENCE,
        values(
            "production",
            False,
            image={"repository": IMAGE["repository"], "tag": "latest"},
            securityContext={"readOnlyRootFilesystem": False},
        ),
    )
    decision = engine.decide("ztml.deployment", {"environment": "production", "objects": objects})
    assert not decision.allow
    text = "\n".join(decision.deny)
    assert "uses the moving tag latest" in text
    assert "is not pinned by digest" in text
    assert "container server of Deployment credit-risk-prod has a writable root filesystem" in text


def test_trivy_finds_nothing_in_any_rendering(
    tmp_path: Path, rendered: dict[tuple[str, bool], list[dict[str, Any]]]
) -> None:
    """One trivy run over every preset x GPU rendering plus every optional object."""
    for (preset, gpu), objects in rendered.items():
        write_objects(tmp_path, objects, f"{preset}-{'gpu' if gpu else 'cpu'}")
    everything = values(
        "production",
        True,
        ingress={"enabled": True, "host": "credit.example.com", "tlsSecretName": "credit-tls"},
        metrics={
            "serviceMonitor": {"enabled": True},
            "prometheusRule": {"enabled": True},
            "grafanaDashboard": {"enabled": True},
        },
        networkPolicy={"allowedNamespaces": ["apps"], "egress": {"enabled": True}},
        apiKey={"existingSecret": "credit-api-key"},
    )
    write_objects(tmp_path, render(INFERENCE, everything), "all")
    findings = trivy_findings(tmp_path)
    assert findings == [], [f"{f['target']}: {f['ID']} {f['Title']}" for f in findings]


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_size_the_release(preset: str) -> None:
    replicas, cpu, memory, low, high = SIZES[preset]
    objects = render(INFERENCE, {"preset": preset, "autoscaling": {"enabled": False}})
    deployment = by_kind(objects, "Deployment")[0]
    assert deployment["spec"]["replicas"] == replicas
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["requests"] == {"cpu": cpu, "memory": memory}
    assert container["resources"]["limits"] == {"cpu": cpu, "memory": memory}
    hpa = by_kind(render(INFERENCE, {"preset": preset}), "HorizontalPodAutoscaler")[0]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (low, high)


def test_hpa_owns_replicas_and_scales_with_the_agreed_behaviour() -> None:
    objects = render(INFERENCE, {"preset": "production", "replicaCount": 5})
    assert "replicas" not in by_kind(objects, "Deployment")[0]["spec"]
    spec = by_kind(objects, "HorizontalPodAutoscaler")[0]["spec"]
    assert spec["minReplicas"] == 5 and spec["maxReplicas"] == 10
    assert {m["resource"]["name"] for m in spec["metrics"]} == {"cpu", "memory"}
    up, down = spec["behavior"]["scaleUp"], spec["behavior"]["scaleDown"]
    assert {(p["type"], p["value"], p["periodSeconds"]) for p in up["policies"]} == {
        ("Pods", 4, 60),
        ("Percent", 100, 60),
    }
    assert up["selectPolicy"] == "Max"
    assert down["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 120}]


def test_gpu_requests_devices_and_targets_the_gpu_node_group() -> None:
    objects = render(
        INFERENCE, {**values("production", True), "gpu": {"enabled": True, "count": 2}}
    )
    pod = by_kind(objects, "Deployment")[0]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert pod["nodeSelector"] == {"ztml.io/node-group": "gpu"}
    assert {
        "key": "nvidia.com/gpu",
        "operator": "Equal",
        "value": "true",
        "effect": "NoSchedule",
    } in pod["tolerations"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SERVING_DEVICE"] == "cuda"
    cpu_pod = by_kind(render(INFERENCE, values("production", False)), "Deployment")[0]
    assert "nodeSelector" not in cpu_pod["spec"]["template"]["spec"]


def test_pods_are_hardened() -> None:
    objects = render(INFERENCE, values("production", False))
    pod = by_kind(objects, "Deployment")[0]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod["containers"][0]
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    tmp = next(v for v in pod["volumes"] if v["name"] == "tmp")
    assert tmp["emptyDir"]["medium"] == "Memory"
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["startupProbe"]["httpGet"]["path"] == "/ready"


def test_pods_drain_within_the_grace_period_and_are_scrapeable() -> None:
    """SIGTERM comes after the preStop sleep; serving must finish draining before SIGKILL."""
    objects = render(
        INFERENCE, values("staging", False, terminationGracePeriodSeconds=40, preStopSleepSeconds=8)
    )
    template = by_kind(objects, "Deployment")[0]["spec"]["template"]
    env = {e["name"]: e for e in template["spec"]["containers"][0]["env"]}
    assert 0 < int(env["SERVING_SHUTDOWN_GRACE_SECONDS"]["value"]) <= 40 - 8
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"


def test_model_identity_image_and_environment_reach_the_pod() -> None:
    objects = render(
        INFERENCE,
        values(
            "staging",
            False,
            mlflow={"trackingUri": "https://mlflow.example.com"},
            apiKey={"existingSecret": "credit-key"},
            serviceAccount={"roleArn": "arn:aws:iam::123456789012:role/ztml-inference"},
        ),
    )
    deployment = by_kind(objects, "Deployment")[0]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"{IMAGE['repository']}@{IMAGE['digest']}"
    env = {e["name"]: e for e in container["env"]}
    assert env["SERVING_MODEL_NAME"]["value"] == "credit-risk"
    assert env["SERVING_MODEL_VERSION"]["value"] == "7"
    assert env["SERVING_MAX_BATCH_SIZE"]["value"] == "32"
    assert env["MLFLOW_TRACKING_URI"]["value"] == "https://mlflow.example.com"
    assert env["SERVING_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "credit-key"
    labels = deployment["metadata"]["labels"]
    assert labels["ztml.io/model"] == "credit-risk" and labels["ztml.io/environment"] == "staging"
    assert deployment["metadata"]["annotations"]["ztml.io/model-uri"] == "models:/credit-risk/7"
    account = by_kind(objects, "ServiceAccount")[0]
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith(
        "role/ztml-inference"
    )
    assert account["automountServiceAccountToken"] is False


def test_digest_wins_over_tag_and_tag_defaults_to_app_version() -> None:
    both = render(INFERENCE, {"image": {**IMAGE, "tag": "v7"}})
    assert (
        by_kind(both, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["image"]
        == f"{IMAGE['repository']}@{IMAGE['digest']}"
    )
    tagged = render(INFERENCE, {"image": {"repository": "r.example.com/m"}})
    image = by_kind(tagged, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "r.example.com/m:0.1.0"


def test_labels_are_sanitised_and_annotations_verbatim() -> None:
    objects = render(INFERENCE, {"model": {"name": "Credit Risk (EU)", "version": "12"}})
    deployment = by_kind(objects, "Deployment")[0]
    assert deployment["metadata"]["labels"]["ztml.io/model"] == "Credit-Risk--EU"
    assert deployment["metadata"]["annotations"]["ztml.io/model-name"] == "Credit Risk (EU)"


def test_network_policy_admits_only_configured_callers() -> None:
    objects = render(INFERENCE, {"networkPolicy": {"allowedNamespaces": ["apps", "batch"]}})
    policy = by_kind(objects, "NetworkPolicy")[0]["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    namespaces = {
        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for rule in policy["ingress"]
        for peer in rule["from"]
        if "namespaceSelector" in peer
    }
    assert namespaces == {"apps", "batch", "ingress-nginx", "monitoring"}
    test_peer = policy["ingress"][-1]["from"][0]["podSelector"]["matchLabels"]
    assert test_peer["app.kubernetes.io/component"] == "test"


def test_optional_objects_render_and_validate() -> None:
    objects = render(
        INFERENCE,
        values(
            "production",
            False,
            ingress={"enabled": True, "host": "credit.example.com", "tlsSecretName": "tls"},
            metrics={
                "serviceMonitor": {"enabled": True},
                "prometheusRule": {"enabled": True},
                "grafanaDashboard": {"enabled": True},
            },
        ),
    )
    kinds = {o["kind"] for o in objects}
    assert {"Ingress", "ServiceMonitor", "PrometheusRule", "ConfigMap"} <= kinds
    assert kinds >= CUSTOM_KINDS
    assert validate(objects) == []
    alerts = {
        rule["alert"]
        for group in by_kind(objects, "PrometheusRule")[0]["spec"]["groups"]
        for rule in group["rules"]
    }
    assert alerts == {
        "ZtmlInferenceHighErrorRate",
        "ZtmlInferenceHighP99Latency",
        "ZtmlInferenceNotReady",
    }
    dashboard_map = by_kind(objects, "ConfigMap")[0]
    assert dashboard_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(next(iter(dashboard_map["data"].values())))
    assert dashboard["title"] == "ztml: credit-risk (models)"
    assert all('namespace="models"' in t["expr"] for p in dashboard["panels"] for t in p["targets"])


def test_strict_lint_is_clean() -> None:
    report = helm.lint(INFERENCE, strict=True, kube_version=f"v{KUBE_VERSION}")
    errors = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert errors == []


def test_client_dry_run_install() -> None:
    with helm.Config(namespace="models", storage_driver="memory") as config:
        release = config.install(
            str(INFERENCE), "credit-risk-prod", values("production", True), dry_run="client"
        )
    assert release["name"] == "credit-risk-prod"
    assert "kind: Deployment" in release["manifest"]
    assert "credit-risk-prod.models.svc.cluster.local" in release["notes"]


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"replicaCount": "three"}, "/replicaCount"),
        ({"gpu": {"count": "two"}}, "/gpu/count"),
        ({"image": {"digest": "latest"}}, "/image/digest"),
        ({"autoscaling": {"targetCPUUtilizationPercentage": 150}}, "/autoscaling"),
        ({"servce": {"port": 80}}, "servce"),
    ],
)
def test_a_wrong_value_is_a_schema_error_naming_the_field(
    bad: dict[str, Any], field: str, tmp_path: Path
) -> None:
    with helm.Chart.load(INFERENCE) as chart, pytest.raises(helm.HelmValuesError) as caught:
        chart.render(bad, name="x", namespace="models")
    assert field in str(caught.value)


def test_a_values_file_with_a_wrong_type_fails_lint(tmp_path: Path) -> None:
    report = helm.lint(INFERENCE, {"service": {"port": "eighty"}}, strict=True)
    text = json.dumps(report)
    assert "/service/port" in text


def test_the_test_hook_posts_the_input_example() -> None:
    pod = next(o for o in render(INFERENCE, values("production", False)) if o["kind"] == "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["metadata"]["labels"]["app.kubernetes.io/name"] == "ztml-inference-test"
    container = pod["spec"]["containers"][0]
    assert container["command"] == ["python", "-c"]
    assert (
        container["args"][0].strip() == (INFERENCE / "files" / "smoke_test.py").read_text().strip()
    )
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["ZTML_TEST_URL"] == "http://credit-risk-prod.models.svc.cluster.local:80"
    assert env["ZTML_EXPECTED_VERSION"] == "7"


class _FakeServer(BaseHTTPRequestHandler):
    """Stands in for the inference server (no cluster here): /ready, /model/info, /predict."""

    answer: dict[str, Any] = {"predictions": [0, 1]}
    seen: list[Any] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/ready":
            self._reply(200, {"ready": True})
        else:
            self._reply(
                200, {"version": "7", "input_example": {"dataframe_split": {"data": [[1]]}}}
            )

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        type(self).seen.append(json.loads(self.rfile.read(length)))
        self._reply(200, type(self).answer)


@pytest.mark.parametrize(
    ("answer", "ok"), [({"predictions": [0, 1]}, True), ({"predictions": []}, False)]
)
def test_the_smoke_test_script_calls_predict_with_the_example(
    answer: dict[str, Any], ok: bool
) -> None:
    """The hook's script against a stand-in server (the real one needs a cluster)."""
    py_compile.compile(str(INFERENCE / "files" / "smoke_test.py"), doraise=True)
    _FakeServer.answer, _FakeServer.seen = answer, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        done = subprocess.run(
            [sys.executable, str(INFERENCE / "files" / "smoke_test.py")],
            env={
                "ZTML_TEST_URL": f"http://127.0.0.1:{server.server_port}",
                "ZTML_TEST_TIMEOUT": "5",
                "ZTML_EXPECTED_VERSION": "7",
            },
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        server.shutdown()
        server.server_close()
    assert (done.returncode == 0) is ok, done.stdout + done.stderr
    assert _FakeServer.seen == [{"dataframe_split": {"data": [[1]]}}]


def test_grpc_gets_a_service_port_container_port_and_network_policy_port() -> None:
    assert not any(
        p["name"] == "grpc" for p in by_kind(render(INFERENCE, {}), "Service")[0]["spec"]["ports"]
    )  # off by default
    objects = render(
        INFERENCE,
        {
            "serving": {"grpc": {"enabled": True, "port": 9001}},
            "service": {"grpcPort": 9000},
            "networkPolicy": {"allowedNamespaces": ["apps"]},
        },
    )
    assert validate(objects) == []
    service = by_kind(objects, "Service")[0]["spec"]["ports"]
    assert {
        "name": "grpc",
        "port": 9000,
        "targetPort": "grpc",
        "protocol": "TCP",
        "appProtocol": "grpc",
    } in service
    container = by_kind(objects, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "grpc", "containerPort": 9001, "protocol": "TCP"} in container["ports"]
    assert {"name": "SERVING_GRPC_PORT", "value": "9001"} in container["env"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] == "http"  # probes stay on HTTP
    callers = by_kind(objects, "NetworkPolicy")[0]["spec"]["ingress"][0]
    assert {"port": "grpc", "protocol": "TCP"} in callers["ports"]
