"""The docker and kubernetes runtimes verify an image before they start anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlflow_ztml.config import Settings
from mlflow_ztml.runtimes import get_runtime
from mlflow_ztml.runtimes.base import DeploymentSpec
from mlflow_ztml.runtimes.kubernetes import KubernetesRuntime
from mlflow_ztml.supply_chain import attestations, keys
from mlflow_ztml.supply_chain.image_signatures import sign_image
from mlflow_ztml.supply_chain.registry_client import ImageReference, RegistryClient
from mlflow_ztml.supply_chain.verification import (
    ImageVerification,
    ImageVerificationDenied,
    pinned,
)
from tests.runtimes.test_kubernetes import FakeHelm


def _spec(image: ImageReference, environment: str, name: str) -> DeploymentSpec:
    return DeploymentSpec(
        name=name,
        environment=environment,
        model_name="credit",
        model_version="3",
        model_uri="models:/credit/3",
        image=f"{image.name}@{image.digest}",
        replicas=3,
        cpu="2000m",
        memory="4Gi",
    )


def _sign_for(settings: Settings, image: ImageReference, environment: str) -> None:
    client, signer = RegistryClient(image.host), keys.load_signer(settings)
    sign_image(client, image, signer)
    predicate = {"model": "credit", "version": "3", "environment": environment, "allow": True}
    attestations.attest_image(
        client,
        image,
        signer,
        [attestations.Attestation(attestations.DECISION_PREDICATE, predicate, environment)],
    )


def _never(status) -> None:
    raise AssertionError("nothing may start, so nothing is verified")


def test_docker_runtime_refuses_an_unsigned_image_before_pulling_it(
    signing_settings: Settings, tiny_image, tmp_path: Path
) -> None:
    import docker

    settings = signing_settings.model_copy(
        update={
            "home": tmp_path,
            "environments": {
                **signing_settings.environments,
                "production": signing_settings.environments["production"].model_copy(
                    update={"runtime": "docker"}
                ),
            },
        }
    )
    image = tiny_image()
    runtime = get_runtime("docker", settings)
    name = "dkt-unsigned"
    with pytest.raises(ImageVerificationDenied) as denied:
        runtime.deploy(_spec(image, "production", name), _never)
    assert any(m.startswith("image is unsigned:") for m in denied.value.decision.deny)
    assert denied.value.facts.digest == image.digest
    engine = docker.from_env(timeout=30)
    labelled = engine.containers.list(
        all=True, filters={"label": f"io.mlifecycle.ztml.deployment={name}"}
    )
    assert labelled == []
    assert not any(
        image.digest in d for i in engine.images.list() for d in (i.attrs.get("RepoDigests") or [])
    )


@pytest.fixture
def kubernetes(signing_settings: Settings, registry: str, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ZTML_CONFIG", raising=False)
    fakes: dict[str, FakeHelm] = {}
    cluster = {"namespace": "models", "approved_registries": [registry], "verify_via": "service"}
    production_values = {  # what the production deployment policy asks of every release
        "serviceAccount": {"roleArn": "arn:aws:iam::123456789012:role/inf"},
        "networkPolicy": {"allowedNamespaces": ["apps"]},
    }
    settings = Settings(
        home=tmp_path,
        signing=signing_settings.signing,
        environments={
            "staging": {"runtime": "kubernetes", "kubernetes": cluster},
            "production": {
                "runtime": "kubernetes",
                "kubernetes": {**cluster, "values": production_values},
            },
        },
    )
    runtime = KubernetesRuntime(
        settings,
        backend_factory=lambda config: fakes.setdefault(config.namespace, FakeHelm(config)),
    )
    return runtime, fakes


class _Seen:
    def __init__(self) -> None:
        self.statuses: list = []

    def __call__(self, status) -> None:
        self.statuses.append(status)


def test_kubernetes_runtime_applies_only_images_attested_for_its_environment(
    kubernetes, signing_settings: Settings, tiny_image
) -> None:
    """FakeHelm stands in for the cluster (no Kubernetes API server can run here)."""
    runtime, fakes = kubernetes
    staged = tiny_image()
    _sign_for(signing_settings, staged, "staging")
    with pytest.raises(ImageVerificationDenied) as denied:
        runtime.deploy(_spec(staged, "production", "credit-production"), _never)
    assert any("attested for staging, not production" in m for m in denied.value.decision.deny)
    assert all(helm.calls == [] for helm in fakes.values())  # nothing applied

    approved = tiny_image()
    _sign_for(signing_settings, approved, "production")
    seen = _Seen()
    status, changed = runtime.deploy(_spec(approved, "production", "credit-production"), seen)
    assert changed and status.state == "running"
    assert [call[0] for call in fakes["models"].calls] == ["install", "test"]
    assert len(seen.statuses) == 1


def test_kubernetes_runtime_pins_a_tagged_image_to_the_digest_it_verified(
    kubernetes, signing_settings: Settings, tiny_image
) -> None:
    """A tag may move between the check and the kubelet's pull: the release names the digest
    (staging: production's deployment policy refuses tags outright). FakeHelm stands in for
    the cluster (no Kubernetes API server can run here)."""
    runtime, fakes = kubernetes
    image = tiny_image()
    _sign_for(signing_settings, image, "staging")
    spec = _spec(image, "staging", "credit-tagged").model_copy(
        update={"image": f"{image.name}:{image.tag}"}
    )
    status, changed = runtime.deploy(spec, _Seen())
    assert changed and status.state == "running"
    installed = fakes["models"].history("credit-tagged")[-1]
    assert installed["values"]["image"]["digest"] == image.digest
    assert f"{image.name}@{image.digest}" in installed["manifest"]


def test_pinned_keeps_a_digest_and_pins_a_tag() -> None:
    digest = "sha256:" + "a" * 64
    facts = ImageVerification(image="127.0.0.1:5000/m/x:v1", environment="local", digest=digest)
    assert pinned("127.0.0.1:5000/m/x:v1", facts) == f"127.0.0.1:5000/m/x:v1@{digest}"
    unknown = ImageVerification(image="x", environment="local")
    assert pinned("127.0.0.1:5000/m/x:v1", unknown) == "127.0.0.1:5000/m/x:v1"
