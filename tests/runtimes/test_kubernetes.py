"""The kubernetes runtime.

No Kubernetes API server can run on the CI machines, so the deploy logic (policy gate before
anything is applied, idempotence, install vs upgrade, helm test, verify, rollback/uninstall on
failure, get/list/delete) is tested against `FakeHelm`: an in-memory stand-in for Helm's
*release actions only*. Rendering stays real (the real Helm engine renders the real chart)
and so does the policy (the shipped Rego through regorus).

The real thing, install -> upgrade -> failed upgrade rolled back -> delete against a cluster,
is `test_real_cluster_install_upgrade_rollback`: it runs when ZTML_TEST_KUBECONFIG (and
ZTML_TEST_K8S_IMAGE) are set and is skipped otherwise; docs/kubernetes.md says how to run
it against kind or EKS.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("helm_python", reason="helm-python-sdk is not installed")

from mlflow_ztml.config import KubernetesConfig, Settings
from mlflow_ztml.errors import DeployError, DeploymentPolicyError, PolicyError
from mlflow_ztml.runtimes import get_runtime
from mlflow_ztml.runtimes.base import DeploymentSpec, DeploymentStatus
from mlflow_ztml.runtimes.kubernetes import (
    KubernetesRuntime,
    SdkHelm,
    _deployment_engine,
    split_image,
)

REGISTRY = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
DIGEST = "sha256:" + "cd" * 32
IMAGE = f"{REGISTRY}/ztml-models@{DIGEST}"


class FakeHelm:
    """In-memory Helm release storage with real rendering (see the module docstring).

    `fail` maps an action name to the DeployError it raises once; `calls` records actions.
    """

    def __init__(self, config: KubernetesConfig) -> None:
        self.namespace = config.namespace
        self._renderer = SdkHelm(config)
        self.revisions: dict[str, list[dict[str, Any]]] = {}
        self.calls: list[tuple[str, str]] = []
        self.fail: dict[str, DeployError] = {}

    def _maybe_fail(self, action: str, release: str) -> None:
        self.calls.append((action, release))
        if action in self.fail:
            raise self.fail.pop(action)

    def render(self, chart: Path, release: str, values: dict[str, Any]) -> dict[str, str]:
        return self._renderer.render(chart, release, values)

    def status(self, release: str) -> dict[str, Any] | None:
        history = self.revisions.get(release)
        return dict(history[-1]) if history else None

    def list(self) -> list[dict[str, Any]]:
        return [
            {k: v for k, v in h[-1].items() if k != "manifest"} for h in self.revisions.values()
        ]

    def history(self, release: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self.revisions.get(release, [])]

    def _store(self, chart: Path, release: str, values: dict, labels: dict) -> dict[str, Any]:
        rendered = self.render(chart, release, values)
        manifest = "\n---\n".join(v for k, v in sorted(rendered.items()) if k.endswith(".yaml"))
        history = self.revisions.setdefault(release, [])
        for old in history:
            old["status"] = "superseded"
        summary = {
            "name": release,
            "namespace": self.namespace,
            "revision": len(history) + 1,
            "status": "deployed",
            "labels": dict(labels),
            "manifest": manifest,
            "deployed_at": "2026-11-26T12:00:00Z",
            "values": values,
        }
        history.append(summary)
        return dict(summary)

    def install(self, chart: Path, release: str, values: dict, labels: dict) -> dict[str, Any]:
        self._maybe_fail("install", release)
        assert release not in self.revisions
        return self._store(chart, release, values, labels)

    def upgrade(self, chart: Path, release: str, values: dict, labels: dict) -> dict[str, Any]:
        self._maybe_fail("upgrade", release)
        return self._store(chart, release, values, labels)

    def rollback(self, release: str, revision: int) -> None:
        self._maybe_fail("rollback", release)
        history = self.revisions[release]
        target = dict(history[revision - 1])
        for old in history:
            old["status"] = "superseded"
        history.append({**target, "revision": len(history) + 1, "status": "deployed"})

    def uninstall(self, release: str) -> None:
        self._maybe_fail("uninstall", release)
        self.revisions.pop(release, None)

    def test(self, release: str) -> str:
        self._maybe_fail("test", release)
        return "OK: predictions"


UNSIGNED_WARNS = {"signature": {"enforcement": {"unverifiable": "warn"}}}


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ZTML_CONFIG", raising=False)
    kubernetes = {
        "namespace": "models",
        "approved_registries": [REGISTRY],
        "verify_via": "service",
    }
    return Settings(
        home=tmp_path / "home",
        environments={
            "local": {"runtime": "kubernetes", "kubernetes": {**kubernetes, "namespace": "dev"}},
            "staging": {"runtime": "kubernetes", "kubernetes": kubernetes},
            "production": {
                "runtime": "kubernetes",
                # Images here live in made-up registries and no key is configured: image
                # signature checks are tests/supply_chain's; here they warn instead of deny.
                "policy": UNSIGNED_WARNS,
                "kubernetes": {
                    **kubernetes,
                    "values": {
                        "serviceAccount": {"roleArn": "arn:aws:iam::123456789012:role/inf"},
                        "image": {"repository": "evil.example.com/x"},  # identity wins
                        "networkPolicy": {"allowedNamespaces": ["apps"]},
                    },
                },
            },
            "qa": {"runtime": "kubernetes", "kubernetes": kubernetes, "policy": UNSIGNED_WARNS},
        },
    )


@pytest.fixture
def fakes() -> dict[str, FakeHelm]:
    return {}


@pytest.fixture
def runtime(settings: Settings, fakes: dict[str, FakeHelm]) -> KubernetesRuntime:
    def factory(config: KubernetesConfig) -> FakeHelm:
        return fakes.setdefault(config.namespace, FakeHelm(config))

    return KubernetesRuntime(settings, backend_factory=factory)


def spec(**changes: Any) -> DeploymentSpec:
    base: dict[str, Any] = {
        "name": "credit-production",
        "environment": "production",
        "model_name": "credit",
        "model_version": "4",
        "model_uri": "models:/credit/4",
        "image": IMAGE,
        "replicas": 3,
        "cpu": "2000m",
        "memory": "4Gi",
    }
    return DeploymentSpec(**{**base, **changes})


class Recorder:
    def __init__(self, error: Exception | None = None) -> None:
        self.seen: list[DeploymentStatus] = []
        self.error = error

    def __call__(self, status: DeploymentStatus) -> None:
        self.seen.append(status)
        if self.error is not None:
            raise self.error


# --- values -------------------------------------------------------------------------------


def test_values_come_from_the_spec_the_preset_and_the_environment(
    runtime: KubernetesRuntime,
) -> None:
    values = runtime.values_for(spec(gpu=1, tracking_uri="https://mlflow.example.com"))
    assert values["preset"] == "production"
    assert values["replicaCount"] == 3
    assert values["resources"]["limits"] == {"cpu": "2000m", "memory": "4Gi"}
    assert values["gpu"] == {"enabled": True, "count": 1}
    assert values["serving"] == {"maxBatchSize": 32, "maxBatchDelayMs": 2.0}
    assert values["mlflow"] == {"trackingUri": "https://mlflow.example.com"}
    assert values["serviceAccount"]["roleArn"].endswith("role/inf")
    assert values["image"] == {"repository": f"{REGISTRY}/ztml-models", "tag": "", "digest": DIGEST}
    assert values["model"]["fingerprint"] == spec(gpu=1).fingerprint()


@pytest.mark.parametrize(
    ("environment", "preset"),
    [("local", "dev"), ("staging", "staging"), ("production", "production"), ("qa", "production")],
)
def test_presets_follow_the_policy_profile(
    runtime: KubernetesRuntime, environment: str, preset: str
) -> None:
    assert runtime.preset_for(environment) == preset


@pytest.mark.parametrize(
    ("image", "parts"),
    [
        (f"{REGISTRY}/m@{DIGEST}", (f"{REGISTRY}/m", "", DIGEST)),
        (f"{REGISTRY}/m:v4@{DIGEST}", (f"{REGISTRY}/m", "v4", DIGEST)),
        ("localhost:5000/m:v4", ("localhost:5000/m", "v4", "")),
        ("localhost:5000/m", ("localhost:5000/m", "", "")),
    ],
)
def test_split_image(image: str, parts: tuple[str, str, str]) -> None:
    assert split_image(image) == parts


def test_an_image_that_is_not_in_a_registry_is_refused(runtime: KubernetesRuntime) -> None:
    with pytest.raises(DeployError, match="needs an image"):
        runtime.values_for(spec(image=None))
    with pytest.raises(DeployError, match="not in a registry"):
        runtime.values_for(spec(image=DIGEST))


def test_render_returns_the_objects_for_the_audit_run(runtime: KubernetesRuntime) -> None:
    objects = runtime.render(spec())
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "Pod"} <= kinds
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE


# --- the policy gate ----------------------------------------------------------------------


def test_a_policy_deny_applies_nothing(
    runtime: KubernetesRuntime, fakes: dict[str, FakeHelm]
) -> None:
    verify = Recorder()
    with pytest.raises(DeploymentPolicyError) as caught:
        runtime.deploy(spec(image=f"docker.io/someone/model@{DIGEST}"), verify)
    error = caught.value
    assert isinstance(error, PolicyError)
    assert not error.decision.allow
    assert any("not from an approved registry for production" in m for m in error.decision.deny)
    assert any(o["kind"] == "Deployment" for o in error.objects)
    assert [c for c in fakes["models"].calls if c[0] != "render"] == []
    assert fakes["models"].revisions == {} and verify.seen == []


def test_production_denies_a_single_replica(runtime: KubernetesRuntime) -> None:
    with pytest.raises(DeploymentPolicyError, match="requires at least 2"):
        runtime.deploy(spec(replicas=1), Recorder())


def test_approved_registries_and_the_build_registry_reach_the_policy_data(
    settings: Settings,
) -> None:
    with_build = settings.model_copy(
        update={"build": settings.build.model_copy(update={"registry": "registry.corp:5000"})}
    )
    engine = _deployment_engine(with_build)
    objects = KubernetesRuntime(with_build).render(
        spec(image=f"registry.corp:5000/ztml-models@{DIGEST}")
    )
    decision = engine.decide("ztml.deployment", {"environment": "production", "objects": objects})
    assert decision.allow, decision.deny


# --- deploy, idempotence, rollback ----------------------------------------------------------


def test_first_deploy_installs_tests_and_verifies(
    runtime: KubernetesRuntime, fakes: dict[str, FakeHelm]
) -> None:
    verify = Recorder()
    status, changed = runtime.deploy(spec(), verify)
    assert changed and status.state == "running"
    assert status.endpoint == "http://credit-production.models.svc.cluster.local"
    assert (status.model_name, status.model_version, status.environment) == (
        "credit",
        "4",
        "production",
    )
    assert status.fingerprint == spec().fingerprint()
    helm = fakes["models"]
    assert [c[0] for c in helm.calls] == ["install", "test"]
    assert [s.endpoint for s in verify.seen] == [status.endpoint]
    labels = helm.status("credit-production")["labels"]
    assert labels["ztml.io/managed"] == "true" and labels["ztml.io/model-version"] == "4"


def test_the_same_deploy_twice_is_a_no_op(
    runtime: KubernetesRuntime, fakes: dict[str, FakeHelm]
) -> None:
    runtime.deploy(spec(), Recorder())
    status, changed = runtime.deploy(spec(), Recorder())
    assert not changed and status.state == "running"
    assert [c[0] for c in fakes["models"].calls] == ["install", "test"]


def test_a_changed_environment_value_upgrades(
    runtime: KubernetesRuntime, settings: Settings, fakes: dict[str, FakeHelm]
) -> None:
    runtime.deploy(spec(), Recorder())
    settings.environments["production"].kubernetes.values["podAnnotations"] = {"team": "risk"}
    _, changed = runtime.deploy(spec(), Recorder())
    assert changed
    assert [c[0] for c in fakes["models"].calls] == ["install", "test", "upgrade", "test"]


def test_a_failed_verify_rolls_back_to_what_served(
    runtime: KubernetesRuntime, fakes: dict[str, FakeHelm]
) -> None:
    runtime.deploy(spec(), Recorder())
    with pytest.raises(DeployError, match="bad predictions"):
        runtime.deploy(spec(model_version="5"), Recorder(DeployError("bad predictions")))
    helm = fakes["models"]
    assert [c[0] for c in helm.calls] == ["install", "test", "upgrade", "test", "rollback"]
    status = runtime.get("credit-production")
    assert status is not None and status.model_version == "4" and status.state == "running"


def test_a_failed_helm_test_on_first_install_uninstalls(
    runtime: KubernetesRuntime, fakes: dict[str, FakeHelm]
) -> None:
    fakes["models"] = FakeHelm(KubernetesConfig(namespace="models"))
    fakes["models"].fail["test"] = DeployError("helm test failed: /predict answered 500")
    verify = Recorder()
    with pytest.raises(DeployError, match="answered 500"):
        runtime.deploy(spec(), verify)
    assert [c[0] for c in fakes["models"].calls] == ["install", "test", "uninstall"]
    assert runtime.get("credit-production") is None and verify.seen == []


def test_a_failed_helm_upgrade_leaves_the_old_release(
    runtime: KubernetesRuntime, fakes: dict[str, FakeHelm]
) -> None:
    """Helm's own rollback-on-failure undoes a release whose pods never became ready."""
    runtime.deploy(spec(), Recorder())
    fakes["models"].fail["upgrade"] = DeployError("helm upgrade failed: timed out waiting")
    with pytest.raises(DeployError, match="timed out"):
        runtime.deploy(spec(model_version="5"), Recorder())
    assert runtime.get("credit-production").model_version == "4"


def test_a_failed_undo_says_both(runtime: KubernetesRuntime, fakes: dict[str, FakeHelm]) -> None:
    runtime.deploy(spec(), Recorder())
    fakes["models"].fail["rollback"] = DeployError("rollback: API unreachable")
    with pytest.raises(DeployError, match="undoing it failed too: rollback: API unreachable"):
        runtime.deploy(spec(model_version="5"), Recorder(DeployError("verify failed")))


# --- get, list, delete ------------------------------------------------------------------------


def test_get_list_and_delete_read_helm_releases(
    runtime: KubernetesRuntime, fakes: dict[str, FakeHelm]
) -> None:
    runtime.deploy(spec(), Recorder())
    runtime.deploy(
        spec(name="credit-staging", environment="staging", replicas=2, cpu="1", memory="1Gi"),
        Recorder(),
    )
    names = [s.name for s in runtime.list()]
    assert names == ["credit-production", "credit-staging"]
    assert runtime.endpoint("credit-staging") == "http://credit-staging.models.svc.cluster.local"
    assert runtime.get("nope") is None
    runtime.delete("credit-staging")
    assert [s.name for s in runtime.list()] == ["credit-production"]
    with pytest.raises(DeployError, match="no kubernetes deployment"):
        runtime.delete("credit-staging")


def test_an_ingress_host_is_the_endpoint(runtime: KubernetesRuntime, settings: Settings) -> None:
    settings.environments["production"].kubernetes.values["ingress"] = {
        "enabled": True,
        "host": "credit.example.com",
        "tlsSecretName": "credit-tls",
    }
    status, _ = runtime.deploy(spec(), Recorder())
    assert status.endpoint == "https://credit.example.com"


def test_get_runtime_knows_kubernetes(settings: Settings) -> None:
    assert isinstance(get_runtime("kubernetes", settings), KubernetesRuntime)


# --- a real cluster -------------------------------------------------------------------------


@pytest.mark.skipif(
    not os.environ.get("ZTML_TEST_KUBECONFIG") or not os.environ.get("ZTML_TEST_K8S_IMAGE"),
    reason="needs a real cluster: set ZTML_TEST_KUBECONFIG and ZTML_TEST_K8S_IMAGE "
    "(a pushed ztml serving image, repo@sha256:...) - see docs/kubernetes.md",
)
def test_real_cluster_install_upgrade_rollback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """install -> verify -> upgrade -> a broken upgrade is rolled back -> delete."""
    from mlflow_ztml import verify as verify_module

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ZTML_CONFIG", raising=False)
    image = os.environ["ZTML_TEST_K8S_IMAGE"]
    registry = image.split("/", 1)[0]
    namespace = os.environ.get("ZTML_TEST_NAMESPACE", "default")
    real = Settings(
        home=tmp_path / "home",
        environments={
            "local": {
                "runtime": "kubernetes",
                "kubernetes": {
                    "namespace": namespace,
                    "kubeconfig": os.environ["ZTML_TEST_KUBECONFIG"],
                    "approved_registries": [registry],
                    "timeout_seconds": float(os.environ.get("ZTML_TEST_K8S_TIMEOUT", "300")),
                    "values": {"podDisruptionBudget": {"enabled": False}},
                },
            }
        },
    )
    runtime = KubernetesRuntime(real)
    name = f"ztml-it-{uuid.uuid4().hex[:6]}"
    base = spec(name=name, environment="local", image=image, replicas=1, cpu="500m", memory="1Gi")

    def verify(status: DeploymentStatus) -> None:
        verify_module.verify(status, timeout_seconds=120)

    try:
        status, changed = runtime.deploy(base, verify)
        assert changed and status.state == "running"
        assert runtime.deploy(base, verify)[1] is False
        upgraded = base.model_copy(update={"env": {"ZTML_IT": "2"}})
        assert runtime.deploy(upgraded, verify)[1] is True
        repository = image.split("@", 1)[0]
        broken = upgraded.model_copy(
            update={"image": f"{repository}@sha256:{'0' * 64}", "env": {"ZTML_IT": "3"}}
        )
        runtime.config_for("local").timeout_seconds = 60
        with pytest.raises(DeployError):
            runtime.deploy(broken, verify)
        after = runtime.get(name)
        assert after is not None and after.state == "running"
        assert after.fingerprint == upgraded.fingerprint()
    finally:
        if runtime.get(name) is not None:
            runtime.delete(name)


# --- the `helm` binary backend ---------------------------------------------------------------

FAKE_HELM = """#!/bin/sh
# Records its arguments; answers `status` and `list` like Helm 4 does with -o json.
echo "$@" >> "$0.calls"
case "$*" in
  *" status "*) echo '{"name": "m", "namespace": "models", "version": 2,
                  "info": {"status": "deployed"}, "manifest": ""}' ;;
  *" list "*) echo '[{"name": "m", "namespace": "models", "revision": "2",
                "status": "deployed"}]' ;;
esac
"""


def test_the_binary_backend_speaks_helm_4(tmp_path: Path) -> None:
    """A recording stand-in for the `helm` binary (none can be installed here): the flags
    are Helm 4's (`--rollback-on-failure`, `--wait=watcher`) and its JSON is parsed."""
    from mlflow_ztml.runtimes.kubernetes import BinaryHelm

    binary = tmp_path / "helm"
    binary.write_text(FAKE_HELM)
    binary.chmod(0o755)
    config = KubernetesConfig(namespace="models", kubeconfig=tmp_path / "kc", timeout_seconds=90)
    backend = BinaryHelm(config, str(binary))
    summary = backend.install(
        Path("/charts/ztml-inference"), "m", {"a": 1}, {"ztml.io/managed": "true"}
    )
    assert summary["revision"] == 2 and summary["status"] == "deployed"
    backend.rollback("m", 1)
    assert backend.list()[0]["labels"] == {"ztml.io/managed": "true"}
    calls = (tmp_path / "helm.calls").read_text().splitlines()
    install = calls[0].split()
    assert install[:5] == ["--namespace", "models", "--kubeconfig", str(tmp_path / "kc"), "install"]
    assert {"--wait=watcher", "--rollback-on-failure", "--timeout=90s"} <= set(install)
    assert "--labels=ztml.io/managed=true" in install
    assert calls[2].split()[4:] == ["rollback", "m", "1", "--wait=watcher", "--timeout=90s"]
    assert "--selector=ztml.io/managed=true" in calls[3]
