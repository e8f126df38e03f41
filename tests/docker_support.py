"""What the build, scan and docker-runtime tests share: the engine check and the built images.

The images are built once per test session (module-level cache) because a cold build installs
the model's requirements from PyPI: a minute or two on two cores. Every test module asks
`built(...)` for the same images and gets them from the cache.

In CI (`.ci/run`) `../shared/ci/docker-up` exports DOCKER_HOST, ZTML_TEST_REGISTRY and
ZTML_TEST_BASE_IMAGE; then these tests must run, and an unreachable engine is a failure. With
none of them set, the tests skip and say how to get an engine.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import pytest
from sklearn.linear_model import LogisticRegression

from mlflow_ztml.build import BuildRequest, BuiltImage, ImageBuilder
from mlflow_ztml.config import BuildConfig, ScanConfig, Settings
from tests.models import APPROVED_SOURCE, GOOD_METRICS, SKLEARN_REQUIREMENTS, training_frame

SKIP_REASON = (
    'no Docker engine configured: run `eval "$(../shared/ci/docker-up)"` first (it exports '
    "DOCKER_HOST, ZTML_TEST_REGISTRY and ZTML_TEST_BASE_IMAGE)"
)
TEST_LABEL = "io.mlifecycle.ztml.managed"
# A well-formed, made-up AWS key pair that trivy's secret rules recognise.
PLANTED_SECRET = (
    "aws_access_key_id = AKIA2E0A8F3B244C9986\n"
    "aws_secret_access_key = 7CE556A3BC234CC1FF9E8A5C324C0BB70AA21B6D\n"
)
MODEL = "docker-credit"
ROW = {"income": 0.9, "age": 0.4, "debt": 0.1}


@dataclass(frozen=True)
class DockerEnv:
    registry: str
    base_image: str


def docker_env() -> DockerEnv:
    """The CI Docker set-up, or a skip when there is none (a failure when it is half there)."""
    host = os.environ.get("DOCKER_HOST")
    registry = os.environ.get("ZTML_TEST_REGISTRY")
    base = os.environ.get("ZTML_TEST_BASE_IMAGE")
    if not (host or registry or base):
        pytest.skip(SKIP_REASON)
    if not (registry and base):
        pytest.fail(
            f"DOCKER_HOST is set but ZTML_TEST_REGISTRY/ZTML_TEST_BASE_IMAGE are not; {SKIP_REASON}"
        )
    import docker

    try:
        docker.from_env(timeout=30).ping()
    except Exception as exc:
        pytest.fail(
            f"DOCKER_HOST={host} is set but the engine does not answer ({exc}); {SKIP_REASON}"
        )
    return DockerEnv(registry=registry, base_image=base)


def settings(env: DockerEnv, home: Path, **build: object) -> Settings:
    """ztml settings that build on the CI base image and push to the local registry."""
    return Settings(
        home=home,
        build=BuildConfig(
            base_image=env.base_image, registry=env.registry, repository="ztml-test", **build
        ),
        scan=ScanConfig(cache_dir=Path(tempfile.gettempdir()) / "ztml-test-trivy-cache"),
    )


def register(tracking_uri: str, name: str = MODEL, secret: bool = False) -> str:
    """Register one sklearn version with pinned requirements (optionally a planted secret)."""
    mlflow.set_tracking_uri(tracking_uri)
    frame, labels = training_frame()
    extra: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        if secret:
            path = Path(tmp) / "deploy-credentials.ini"
            path.write_text(f"[default]\n{PLANTED_SECRET}")
            extra.append(str(path))
        with mlflow.start_run():
            for key, value in GOOD_METRICS.items():
                mlflow.log_metric(key, value)
            dataset = mlflow.data.from_pandas(
                frame.assign(label=labels), source=APPROVED_SOURCE, name="train"
            )
            mlflow.log_input(dataset, context="training")
            info = mlflow.sklearn.log_model(
                LogisticRegression().fit(frame, labels),
                name="model",
                input_example=frame.head(2),
                pip_requirements=SKLEARN_REQUIREMENTS,
                extra_files=extra or None,
                registered_model_name=name,
            )
    return str(info.registered_model_version)


@dataclass
class Built:
    """Images built for the session: v1 and v2 (same requirements), v3 with a planted secret."""

    env: DockerEnv
    tracking_uri: str
    home: Path
    versions: dict[str, str] = field(default_factory=dict)
    images: dict[str, BuiltImage] = field(default_factory=dict)
    progress: dict[str, list[str]] = field(default_factory=dict)

    def settings(self) -> Settings:
        return settings(self.env, self.home)

    def image(self, key: str, environment: str = "local") -> BuiltImage:
        """Build (once) the image of version `key` ("v1", "v2" or "secret") for `environment`."""
        cache_key = key if environment == "local" else f"{key}@{environment}"
        if cache_key not in self.images:
            version = self.versions.get(key) or register(self.tracking_uri, secret=key == "secret")
            self.versions[key] = version
            lines: list[str] = []
            os.environ["MLFLOW_TRACKING_URI"] = self.tracking_uri
            builder = ImageBuilder(self.settings(), progress=lines.append)
            run_id = mlflow.MlflowClient(self.tracking_uri).get_model_version(MODEL, version).run_id
            self.images[cache_key] = builder.build(
                BuildRequest(
                    model_name=MODEL,
                    model_version=version,
                    run_id=run_id,
                    environment=environment,
                )
            )
            self.progress[cache_key] = lines
        return self.images[cache_key]


_BUILT: dict[str, Built] = {}


def built(tracking_uri: str) -> Built:
    env = docker_env()
    if tracking_uri not in _BUILT:
        home = Path(tempfile.mkdtemp(prefix="ztml-docker-tests-"))
        _BUILT[tracking_uri] = Built(env=env, tracking_uri=tracking_uri, home=home)
    return _BUILT[tracking_uri]


DEPLOYMENT_PREFIX = "dkt-"


def remove_test_containers() -> None:
    """Remove the containers of the tests' deployments (named `dkt-*`), and nothing else."""
    import docker

    client = docker.from_env(timeout=60)
    for container in client.containers.list(all=True, filters={"label": f"{TEST_LABEL}=true"}):
        if container.labels.get("io.mlifecycle.ztml.deployment", "").startswith(DEPLOYMENT_PREFIX):
            container.remove(force=True)
