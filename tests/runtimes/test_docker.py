"""The docker runtime on a real engine: locked-down containers (checked from inside), state from
labels, zero-failure updates, rollback on a failed verify, and a full pipeline run by digest."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import mlflow
import pytest
import requests

from mlflow_ztml import verify
from mlflow_ztml.errors import DeployError
from mlflow_ztml.runtimes.base import DeploymentSpec
from mlflow_ztml.runtimes.docker import DockerRuntime, parse_cpu, parse_memory
from mlflow_ztml.supply_chain.keys import generate_key_pair
from tests.docker_support import (
    DEPLOYMENT_PREFIX,
    MODEL,
    ROW,
    built,
    docker_env,
    remove_test_containers,
)

NAME = f"{DEPLOYMENT_PREFIX}credit"


def test_quantities() -> None:
    assert parse_cpu("500m") == 0.5
    assert parse_cpu("2") == 2.0
    assert parse_memory("512Mi") == 512 * 2**20
    assert parse_memory("1G") == 10**9
    assert parse_memory("1048576") == 1048576
    with pytest.raises(DeployError):
        parse_memory("lots")


def test_an_image_is_required(tmp_path: Path) -> None:
    spec = DeploymentSpec(
        name="x", environment="local", model_name="m", model_version="1", model_uri="models:/m/1"
    )
    with pytest.raises(DeployError, match="needs an image"):
        DockerRuntime(tmp_path, client=object()).deploy(spec, lambda status: None)


@pytest.fixture(scope="module")
def images(request: pytest.FixtureRequest):
    docker_env()  # skip (no engine configured) before starting an MLflow server for nothing
    return built(request.getfixturevalue("mlflow_server").url)


@pytest.fixture
def runtime(images, tmp_path: Path):
    remove_test_containers()
    yield DockerRuntime(tmp_path / "docker", build=images.settings().build, stop_grace_seconds=5)
    remove_test_containers()


def _spec(images, key: str, **overrides) -> DeploymentSpec:
    image = images.image(key)
    version = images.versions[key]
    fields = {
        "name": NAME,
        "environment": "local",
        "model_name": MODEL,
        "model_version": version,
        "model_uri": f"models:/{MODEL}/{version}",
        "image": image.reference,
        "cpu": "1",
        "memory": "768Mi",
        "ready_timeout_seconds": 90,
        **overrides,
    }
    return DeploymentSpec(**fields)


def _check(status) -> None:
    verify.verify(status)


@pytest.mark.slow
def test_container_is_locked_down_and_predicts(images, runtime) -> None:
    import docker

    status, changed = runtime.deploy(_spec(images, "v1"), _check)
    assert changed and status.state == "running"
    assert status.endpoint.startswith("http://127.0.0.1:")
    response = requests.post(f"{status.endpoint}/predict", json={"inputs": [ROW]}, timeout=10)
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 1

    client = docker.from_env()
    (container,) = [
        c
        for c in client.containers.list(filters={"label": f"io.mlifecycle.ztml.deployment={NAME}"})
    ]
    assert container.name == f"ztml-{NAME}"
    host = container.attrs["HostConfig"]
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["Memory"] == 768 * 2**20
    assert host["NanoCpus"] == 10**9
    assert host["PidsLimit"] > 0
    assert "/tmp" in host["Tmpfs"]
    # restarts on a crash once verified (a candidate that fails to start is not restarted)
    assert host["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    bindings = host["PortBindings"]["8080/tcp"]
    assert all(b["HostIp"] == "127.0.0.1" for b in bindings)
    assert container.attrs["Config"]["User"] == "10001:10001"
    assert container.labels["io.mlifecycle.ztml.image"] == images.image("v1").reference

    # From inside: not root, root filesystem read-only, /tmp writable.
    assert container.exec_run(["id", "-u"]).output.decode().strip() == "10001"
    write_root = container.exec_run(["sh", "-c", "touch /probe"])
    assert write_root.exit_code != 0
    assert "Read-only file system" in write_root.output.decode()
    assert container.exec_run(["sh", "-c", "touch /opt/model/probe"]).exit_code != 0
    assert container.exec_run(["sh", "-c", "touch /tmp/probe"]).exit_code == 0

    # State comes from the engine: a fresh runtime object sees the same deployment.
    fresh = DockerRuntime(runtime.root)
    seen = fresh.get(NAME)
    assert seen is not None
    assert (seen.model_version, seen.endpoint, seen.fingerprint) == (
        status.model_version,
        status.endpoint,
        status.fingerprint,
    )
    assert NAME in [s.name for s in fresh.list()]

    # Same spec again: a no-op.
    again, changed = runtime.deploy(_spec(images, "v1"), _check)
    assert not changed and again.endpoint == status.endpoint

    runtime.delete(NAME)
    assert runtime.get(NAME) is None
    with pytest.raises(DeployError):
        runtime.delete(NAME)


class _Traffic:
    """Posts /predict until stopped, re-resolving the endpoint (runtime.get) before each."""

    def __init__(self, runtime: DockerRuntime) -> None:
        self.runtime = runtime
        self.ok = 0
        self.failures: list[str] = []
        self.versions: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            status = self.runtime.get(NAME)
            try:
                response = requests.post(
                    f"{status.endpoint}/predict", json={"inputs": [ROW]}, timeout=10
                )
                if response.status_code == 200:
                    self.ok += 1
                    self.versions.add(status.model_version)
                else:
                    self.failures.append(f"{response.status_code}: {response.text[:200]}")
            except Exception as exc:  # any failure counts
                self.failures.append(repr(exc))
            time.sleep(0.02)

    def __enter__(self) -> _Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=20)


@pytest.mark.slow
def test_update_switches_without_failed_requests(images, runtime) -> None:
    first, _ = runtime.deploy(_spec(images, "v1"), _check)
    with _Traffic(runtime) as traffic:
        time.sleep(0.5)
        second, changed = runtime.deploy(_spec(images, "v2"), _check)
        time.sleep(1.0)
    assert changed
    assert traffic.failures == []
    assert traffic.ok > 10
    assert traffic.versions == {images.versions["v1"], images.versions["v2"]}
    assert second.endpoint != first.endpoint
    assert runtime.get(NAME).model_version == images.versions["v2"]
    import docker

    left = docker.from_env().containers.list(
        all=True, filters={"label": f"io.mlifecycle.ztml.deployment={NAME}"}
    )
    assert [c.name for c in left] == [f"ztml-{NAME}"]


@pytest.mark.slow
def test_failed_verify_removes_the_candidate_and_keeps_serving(images, runtime) -> None:
    first, _ = runtime.deploy(_spec(images, "v1"), _check)

    def reject(status) -> None:
        raise verify.VerifyError("candidate rejected by the test")

    with pytest.raises(DeployError, match="rejected by the test"):
        runtime.deploy(_spec(images, "v2"), reject)
    still = runtime.get(NAME)
    assert still.model_version == images.versions["v1"]
    assert still.endpoint == first.endpoint
    response = requests.post(f"{still.endpoint}/predict", json={"inputs": [ROW]}, timeout=10)
    assert response.status_code == 200
    import docker

    left = docker.from_env().containers.list(
        all=True, filters={"label": f"io.mlifecycle.ztml.deployment={NAME}"}
    )
    assert len(left) == 1


@pytest.mark.slow
def test_pipeline_builds_scans_and_deploys_by_digest(images, runtime, ztml_env) -> None:
    import yaml

    from mlflow_ztml.config import load_settings
    from mlflow_ztml.pipeline import DeployOptions, Pipeline

    settings = images.settings()
    config = {
        "build": {
            "base_image": settings.build.base_image,
            "registry": settings.build.registry,
            "repository": "ztml-test",
        },
        "scan": {"cache_dir": str(settings.scan.cache_dir)},
        "environments": {"local": {"runtime": "docker"}, "production": {"runtime": "docker"}},
        "signing": {"key": str(generate_key_pair(Path("keys")).private_key)},
    }
    Path("ztml.yaml").write_text(yaml.safe_dump(config))  # ztml_env chdir'ed to a tmp dir
    pipeline = Pipeline(load_settings())
    images.image("v2")
    version = images.versions["v2"]
    uri = f"models:/{MODEL}/{version}"
    client = mlflow.MlflowClient(ztml_env.url)

    outcome = pipeline.run(uri, "local", DeployOptions(name=NAME, ready_timeout_seconds=90))
    try:
        assert outcome.status == "deployed", outcome.error
        assert outcome.stages_skipped == []
        assert {"build", "scan", "deploy", "verify"} <= set(outcome.stage_seconds)
        assert any("vulnerability database is unavailable" in w for w in outcome.warnings)
        tags = client.get_model_version(MODEL, version).tags
        image = tags["ztml.local.image"]
        assert "@sha256:" in image and image.startswith(f"{settings.build.registry}/ztml-test/")
        assert tags["ztml.local.digest"] == image.split("@", 1)[1]
        assert "vulnerability_db=unavailable" in tags["ztml.local.scan"]
        assert tags["ztml.local.scan_decision"] == "allow"
        assert tags["ztml.local.status"] == "deployed"
        # signed and attested after the scan allowed; the runtime verified it before starting
        assert tags["ztml.local.signature"].startswith("key=sha256:")
        assert tags["ztml.local.signature"].endswith(f"digest={tags['ztml.local.digest']}")
        attested = {a.path for a in client.list_artifacts(outcome.audit_run_id, "attestations")}
        assert {
            f"attestations/{kind}.intoto.json" for kind in ("decision", "scan-report", "sbom")
        } <= attested
        assert not any("image signature" in w for w in outcome.warnings)
        import docker

        (container,) = docker.from_env().containers.list(
            filters={"label": f"io.mlifecycle.ztml.deployment={NAME}"}
        )
        assert container.labels["io.mlifecycle.ztml.image"] == image  # deployed by digest
        response = requests.post(f"{outcome.endpoint}/predict", json={"inputs": [ROW]}, timeout=10)
        assert response.status_code == 200
        artifacts = {a.path for a in client.list_artifacts(outcome.audit_run_id)}
        assert {
            "scan-report.json",
            "sbom.cdx.json",
            "build.json",
            "scan-decision.json",
        } <= artifacts
        metrics = client.get_run(outcome.audit_run_id).data.metrics
        assert metrics["scan_secrets"] == 0
        assert metrics["scan_vulnerability_db_available"] == 0

        again = pipeline.run(uri, "local", DeployOptions(name=NAME, ready_timeout_seconds=90))
        assert again.status == "unchanged", again.error

        # A runtime that trusts another key refuses the next version; v2 keeps serving.
        other = generate_key_pair(Path("other-keys")).public_key
        Path("ztml.yaml").write_text(
            yaml.safe_dump({**config, "signing": {**config["signing"], "public_key": str(other)}})
        )
        images.image("v1")
        v1 = images.versions["v1"]
        refused = Pipeline(load_settings()).run(
            f"models:/{MODEL}/{v1}", "local", DeployOptions(name=NAME, ready_timeout_seconds=90)
        )
        assert refused.status == "rejected", refused.error
        assert refused.decision.package == "ztml.signature"
        v1_tags = client.get_model_version(MODEL, v1).tags
        assert v1_tags["ztml.local.status"] == "rejected"
        assert "image signature rejected" in v1_tags["ztml.local.violations"]
        assert runtime.get(NAME).model_version == version
        Path("ztml.yaml").write_text(yaml.safe_dump(config))

        # Production: the same governance passes, the scan policy denies (no vulnerability DB).
        denied = pipeline.run(
            uri, "production", DeployOptions(name=f"{NAME}-prod", ready_timeout_seconds=90)
        )
        assert denied.status == "rejected", denied.error
        assert denied.decision.package == "ztml.scan"
        assert any("production requires a vulnerability scan" in d for d in denied.decision.deny)
        prod = client.get_model_version(MODEL, version).tags
        assert prod["ztml.production.status"] == "rejected"
        assert prod["ztml.production.scan_decision"] == "deny"
        assert "vulnerability database" in prod["ztml.production.violations"]
        assert runtime.get(f"{NAME}-prod") is None
    finally:
        remove_test_containers()


# A stand-in for a model server that cannot start: it says why on stdout and stderr and exits 3,
# or (MODE=oom) is killed by the kernel for its memory before it can write anything. Built from
# the CI base image in seconds (no pip install), so the start-failure paths run on every engine.
_START_FAILURE = """import os, sys
if os.environ.get("MODE") == "oom":
    blocks = [bytearray(64 * 2**20) for _ in range(16)]
print("loading model from /opt/model", flush=True)
sys.stderr.write("ModuleNotFoundError: No module named 'skops'\\n")
sys.exit(3)
"""


@pytest.fixture(scope="module")
def failing_image() -> str:
    import io
    import json

    import docker

    env = docker_env()
    dockerfile = (
        f"FROM {env.base_image}\nENTRYPOINT {json.dumps(['python', '-c', _START_FAILURE])}\n"
    )
    image, _ = docker.from_env(timeout=120).images.build(
        fileobj=io.BytesIO(dockerfile.encode()), tag="ztml-test/start-failure:1", rm=True
    )
    return image.id


def _failing_spec(image: str, **overrides) -> DeploymentSpec:
    fields = {
        "name": f"{DEPLOYMENT_PREFIX}fails",
        "environment": "local",
        "model_name": "fails",
        "model_version": "1",
        "model_uri": "models:/fails/1",
        "image": image,
        "ready_timeout_seconds": 60,
        **overrides,
    }
    return DeploymentSpec(**fields)


def test_a_container_that_fails_to_start_shows_its_exit_code_and_both_streams(
    failing_image, tmp_path: Path
) -> None:
    runtime = DockerRuntime(tmp_path / "docker", stop_grace_seconds=2)
    remove_test_containers()
    started = time.monotonic()
    with pytest.raises(DeployError) as failure:
        runtime.deploy(_failing_spec(failing_image), _check)
    message = str(failure.value)
    assert "exited before it was ready (exit code 3);" in message
    assert "last log lines (stdout and stderr):" in message
    assert "loading model from /opt/model" in message  # stdout
    assert "ModuleNotFoundError: No module named 'skops'" in message  # stderr
    assert "restart" not in message  # reported at its first exit, not after every retry
    assert time.monotonic() - started < 30
    assert runtime.get(f"{DEPLOYMENT_PREFIX}fails") is None  # the candidate is gone


def test_a_container_killed_for_memory_says_so(failing_image, tmp_path: Path) -> None:
    runtime = DockerRuntime(tmp_path / "docker", stop_grace_seconds=2)
    remove_test_containers()
    spec = _failing_spec(failing_image, memory="64Mi", env={"MODE": "oom"})
    with pytest.raises(DeployError) as failure:
        runtime.deploy(spec, _check)
    message = str(failure.value)
    assert "(exit code 137, killed for exceeding its memory limit of 64Mi" in message
    assert "inference.resources.memory" in message
    assert message.endswith("it wrote nothing to stdout or stderr")


@pytest.mark.slow
def test_the_serving_image_s_own_error_is_shown_readably(images, runtime) -> None:
    # The real server, pointed at a model path that does not exist: its JSON log lines come
    # back as `level logger: message`, the error among them, not a screen of escaped JSON.
    spec = _spec(images, "v1", env={"SERVING_MODEL_URI": "/opt/no-model"})
    with pytest.raises(DeployError) as failure:
        runtime.deploy(spec, _check)
    message = str(failure.value)
    assert "exited before it was ready (exit code 1);" in message
    assert "error serving.app: cannot serve the model" in message
    assert "/opt/no-model" in message
    assert '{"ts"' not in message


def test_pipeline_and_plan_reject_unsatisfiable_requirements_before_any_build(
    images, runtime, ztml_env
) -> None:
    import yaml

    from mlflow_ztml.config import load_settings
    from mlflow_ztml.pipeline import DeployOptions, Pipeline
    from tests.models import GOOD_METRICS, SKLEARN_REQUIREMENTS, register_sklearn

    build = images.settings().build
    config = {
        "build": {"base_image": build.base_image, "registry": build.registry},
        "environments": {"local": {"runtime": "docker"}},
    }
    Path("ztml.yaml").write_text(yaml.safe_dump(config))  # ztml_env chdir'ed to a tmp dir
    version = register_sklearn(
        ztml_env.url,
        "docker-cpu-label",
        metrics=GOOD_METRICS,
        requirements=[*SKLEARN_REQUIREMENTS, "torch==2.13.0+cpu"],
    )
    uri = f"models:/docker-cpu-label/{version}"
    fix = (
        "requirement torch==2.13.0+cpu has a local version label (+cpu) that the configured "
        "index (PyPI) does not serve: add an index that has it to build.pip_extra_index_url "
        "(ztml.yaml), or log the model with pip_requirements=['torch==2.13.0']"
    )
    pipeline = Pipeline(load_settings())
    options = DeployOptions(name=f"{DEPLOYMENT_PREFIX}cpu-label")

    planned = pipeline.plan(uri, "local", options)
    assert not planned.decision.allow and fix in planned.decision.deny

    outcome = pipeline.run(uri, "local", options)
    assert outcome.status == "rejected", outcome.error
    assert fix in outcome.decision.deny
    assert "build" not in outcome.stage_seconds  # found at the gate, not minutes into a build
    tags = mlflow.MlflowClient(ztml_env.url).get_model_version("docker-cpu-label", version).tags
    assert tags["ztml.local.status"] == "rejected"
    assert "torch==2.13.0+cpu" in tags["ztml.local.violations"]
    artifacts = {
        a.path for a in mlflow.MlflowClient(ztml_env.url).list_artifacts(outcome.audit_run_id)
    }
    assert "requirements.json" in artifacts
