"""The build stage: a real image from a real MLflow model, pushed to and pulled from a real
registry by digest, with the requirements layer shared between versions; ECR login via moto."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import mlflow
import pytest
import requests

from mlflow_ztml.build import (
    REQUIREMENTS_LABEL,
    BuildRequest,
    BuiltImage,
    ImageBuilder,
    ecr_region,
    image_repository,
    normalise_requirements,
    registry_auth,
    registry_host,
)
from mlflow_ztml.config import BuildConfig, Settings
from mlflow_ztml.errors import BuildError
from tests.docker_support import MODEL, built, docker_env

# --------------------------------------------------------------------------- units


def test_requirements_are_normalised_for_a_stable_cache_key() -> None:
    a = "numpy==2.4.6\n# a comment\nscikit-learn==1.9.1  # pinned\n\nmlflow==3.17.2"
    b = "mlflow==3.17.2\r\nscikit-learn==1.9.1\nnumpy==2.4.6\nnumpy==2.4.6\n"
    assert normalise_requirements(a) == normalise_requirements(b)
    assert normalise_requirements(a) == "mlflow==3.17.2\nnumpy==2.4.6\nscikit-learn==1.9.1\n"
    with_options = normalise_requirements("torch==2.13.0\n--extra-index-url https://x/cpu\n")
    assert with_options.splitlines()[0].startswith("--extra-index-url")


def test_names_and_hosts() -> None:
    config = BuildConfig(registry="123456789012.dkr.ecr.eu-west-1.amazonaws.com")
    assert image_repository(config, "Credit Risk_v2") == (
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com/ztml-models/credit-risk_v2"
    )
    assert image_repository(BuildConfig(), "m") == "ztml-models/m"
    assert registry_host("127.0.0.1:5000/a/b@sha256:00") == "127.0.0.1:5000"
    assert registry_host("ztml-models/m:v1") is None
    assert ecr_region("123456789012.dkr.ecr.eu-west-1.amazonaws.com") == "eu-west-1"
    assert ecr_region("123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com") == "us-gov-west-1"
    assert ecr_region("ghcr.io") is None
    assert ecr_region("evil.dkr.ecr.us-east-1.amazonaws.com.attacker.io") is None


def _fake_model(uri: str, destination: Path, requirements: str = "scikit-learn==1.9.1\n") -> None:
    destination.mkdir(parents=True)
    (destination / "MLmodel").write_text("flavors: {}\n")
    (destination / "requirements.txt").write_text(requirements)


def test_context_layout_and_extra_ca_certificates(tmp_path: Path) -> None:
    pem = tmp_path / "corp root.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    settings = Settings(home=tmp_path, build=BuildConfig(extra_ca_certificates=[pem]))
    builder = ImageBuilder(settings, client=object(), model_downloader=_fake_model)
    context = tmp_path / "ctx"
    context.mkdir()
    builder.prepare_context(
        BuildRequest(model_name="m", model_version="1", environment="local"), context
    )
    assert (context / "serving" / "Dockerfile").is_file()
    assert (context / "serving" / "app.py").is_file()
    assert (context / "requirements.txt").read_text() == "scikit-learn==1.9.1\n"
    assert (context / "model" / "MLmodel").is_file()
    assert [p.name for p in (context / "ca-certificates").iterdir()] == ["00-corp-root.crt"]

    pem.write_text("not a certificate")
    other = tmp_path / "ctx2"
    other.mkdir()
    with pytest.raises(BuildError, match="not a PEM certificate"):
        builder.prepare_context(
            BuildRequest(model_name="m", model_version="1", environment="local"), other
        )


def test_torch_without_an_index_warns(tmp_path: Path) -> None:
    lines: list[str] = []
    builder = ImageBuilder(
        Settings(home=tmp_path),
        client=object(),
        progress=lines.append,
        model_downloader=lambda uri, dest: _fake_model(uri, dest, "torch==2.13.0\n"),
    )
    (tmp_path / "ctx").mkdir()
    builder.prepare_context(
        BuildRequest(model_name="m", model_version="1", environment="local"), tmp_path / "ctx"
    )
    assert any("download.pytorch.org/whl/cpu" in line for line in lines)


def test_model_without_requirements_is_a_build_error(tmp_path: Path) -> None:
    def no_requirements(uri: str, dest: Path) -> None:
        dest.mkdir(parents=True)
        (dest / "MLmodel").write_text("flavors: {}\n")

    builder = ImageBuilder(
        Settings(home=tmp_path), client=object(), model_downloader=no_requirements
    )
    (tmp_path / "ctx").mkdir()
    with pytest.raises(BuildError, match=r"no requirements\.txt"):
        builder.prepare_context(
            BuildRequest(model_name="m", model_version="1", environment="local"), tmp_path / "ctx"
        )


# --------------------------------------------------------------------------- ECR (moto)

ECR_HOST = "123456789012.dkr.ecr.us-east-1.amazonaws.com"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch):
    moto = pytest.importorskip("moto")
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    with moto.mock_aws():
        yield


def test_ecr_login_uses_the_authorization_token(aws) -> None:
    auth = registry_auth(ECR_HOST, BuildConfig())
    assert auth is not None
    assert auth.username == "AWS"
    assert auth.password
    assert auth.serveraddress.endswith(ECR_HOST) or "amazonaws.com" in auth.serveraddress
    assert auth.password not in repr(auth)
    assert registry_auth("127.0.0.1:5000", BuildConfig()) is None
    assert registry_auth(None, BuildConfig()) is None


class _FakeApi:
    """Records push calls; answers like the engine (a digest, or an error quoting the token)."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.calls: list[dict] = []

    def push(self, repository, tag=None, stream=False, decode=False, auth_config=None):
        self.calls.append({"repository": repository, "tag": tag, "auth_config": auth_config})
        password = (auth_config or {}).get("password", "")
        if self.fail:
            return iter([{"errorDetail": {"message": f"denied: token {password} expired"}}])
        return iter(
            [
                {"status": "Preparing", "id": "abc"},
                {"status": "Pushed", "id": "abc"},
                {"status": f"v1-local: digest: sha256:{'a' * 64} size: 1234"},
                {"aux": {"Tag": "v1-local", "Digest": f"sha256:{'a' * 64}", "Size": 1234}},
            ]
        )


class _FakeClient:
    def __init__(self, fail: bool = False) -> None:
        self.api = _FakeApi(fail)


def _image(repository: str) -> BuiltImage:
    return BuiltImage(
        reference="sha256:" + "b" * 64,
        repository=repository,
        tag="v1-local",
        image_id="sha256:" + "b" * 64,
        requirements_sha256="c" * 64,
    )


def test_push_to_ecr_logs_in_and_never_shows_the_token(aws, tmp_path: Path) -> None:
    lines: list[str] = []
    client = _FakeClient()
    settings = Settings(home=tmp_path, build=BuildConfig(registry=ECR_HOST))
    pushed = ImageBuilder(settings, client=client, progress=lines.append).push(
        _image(f"{ECR_HOST}/ztml-models/m")
    )
    assert pushed.reference == f"{ECR_HOST}/ztml-models/m@sha256:{'a' * 64}"
    assert pushed.pushed and pushed.digest == f"sha256:{'a' * 64}"
    auth = client.api.calls[0]["auth_config"]
    assert auth["username"] == "AWS" and auth["password"]
    token = auth["password"]
    assert all(token not in line for line in lines)
    assert base64.b64decode(base64.b64encode(token.encode())).decode() == token

    failing = _FakeClient(fail=True)
    with pytest.raises(BuildError) as caught:
        ImageBuilder(settings, client=failing).push(_image(f"{ECR_HOST}/ztml-models/m"))
    assert failing.api.calls[0]["auth_config"]["password"] not in str(caught.value)
    assert "***" in str(caught.value)


def test_password_from_environment_for_other_registries(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ZTML_TEST_REGISTRY_PASSWORD", "s3cr3t-pw")
    config = BuildConfig(
        registry_username="bot", registry_password_env="ZTML_TEST_REGISTRY_PASSWORD"
    )
    auth = registry_auth("registry.example.com", config)
    assert auth is not None and auth.username == "bot" and auth.password == "s3cr3t-pw"
    monkeypatch.delenv("ZTML_TEST_REGISTRY_PASSWORD")
    with pytest.raises(BuildError, match="not set"):
        registry_auth("registry.example.com", config)


# --------------------------------------------------------------------------- real engine


@pytest.fixture(scope="module")
def images(request: pytest.FixtureRequest):
    docker_env()  # skip (no engine configured) before starting an MLflow server for nothing
    return built(request.getfixturevalue("mlflow_server").url)


@pytest.mark.slow
def test_same_requirements_reuse_the_requirements_layer(images) -> None:
    v1 = images.image("v1")
    v2 = images.image("v2")
    assert v1.requirements_sha256 == v2.requirements_sha256
    assert v1.digest != v2.digest
    # Every layer up to the model files is shared (base, CA certs, venv with the model's
    # requirements, serving package); only the model layer differs.
    assert len(v1.layers) == len(v2.layers)
    assert v1.layers[:-1] == v2.layers[:-1]
    assert v1.layers[-1] != v2.layers[-1]
    # v2's build reused the cached pip install steps instead of running them again.
    log = "\n".join(images.progress["v2"])
    assert "Using cache" in log
    assert "Successfully installed" not in log
    assert v2.cached_steps >= 10


@pytest.mark.slow
def test_rebuilding_the_same_version_gives_the_same_digest(images) -> None:
    v1 = images.image("v1")
    version = images.versions["v1"]
    run_id = mlflow.MlflowClient(images.tracking_uri).get_model_version(MODEL, version).run_id
    again = ImageBuilder(images.settings()).build(
        BuildRequest(model_name=MODEL, model_version=version, run_id=run_id, environment="local")
    )
    assert again.image_id == v1.image_id
    assert again.reference == v1.reference


@pytest.mark.slow
def test_build_labels_push_and_pull_by_digest(images) -> None:
    import docker

    v1 = images.image("v1")
    version = images.versions["v1"]
    assert v1.pushed
    assert v1.reference == f"{images.env.registry}/ztml-test/{MODEL}@{v1.digest}"
    assert any(line.startswith("Step ") for line in images.progress["v1"])
    assert any("Pushed" in line or "exists" in line for line in images.progress["v1"])

    client = docker.from_env(timeout=120)
    labels = client.images.get(v1.image_id).labels
    assert labels["io.mlifecycle.model.name"] == MODEL
    assert labels["io.mlifecycle.model.version"] == version
    assert labels["io.mlifecycle.model.run-id"]
    assert labels["io.mlifecycle.environment"] == "local"
    assert labels[REQUIREMENTS_LABEL] == v1.requirements_sha256
    assert labels["org.opencontainers.image.title"]
    assert labels["org.opencontainers.image.version"] == version

    # The registry serves the manifest under that digest, and its config is our image.
    repo = f"ztml-test/{MODEL}"
    manifest = requests.get(
        f"http://{images.env.registry}/v2/{repo}/manifests/{v1.digest}",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        timeout=10,
    )
    assert manifest.status_code == 200
    assert json.loads(manifest.text)["config"]["digest"] == v1.image_id

    # Remove a local image and pull it back by digest: the same image comes back. (An image
    # of its own, for staging: removing v1 would drop the build cache other tests rely on.)
    other = images.image("v1", environment="staging")
    assert other.layers[:-1] == v1.layers[:-1]
    client.images.remove(f"{other.repository}:{other.tag}", force=True)
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get(other.reference)
    client.images.pull(other.reference)
    assert client.images.get(other.reference).id == other.image_id


@pytest.mark.slow
def test_a_requirement_no_index_serves_fails_the_build_with_the_fix(images) -> None:
    # What the gate catches before a build (tests/test_requirements.py), if a build runs anyway
    # (`build_image` called directly): pip's "no matching distribution" comes with the fix.
    from tests.models import register_sklearn

    images.image("v1")  # the server's dependency layers are cached: pip fails in seconds
    name = "build-cpu-label"
    version = register_sklearn(images.tracking_uri, name, requirements=["torch==2.13.0+cpu"])
    with pytest.raises(BuildError) as failure:
        ImageBuilder(images.settings()).build(
            BuildRequest(model_name=name, model_version=version, environment="local")
        )
    message = str(failure.value)
    assert "No matching distribution found for torch==2.13.0+cpu" in message
    assert message.endswith(
        "hint: torch==2.13.0+cpu has a local version label that the build's indexes do not "
        "serve: add an index that has it to build.pip_extra_index_url, or log the model with "
        "pip_requirements=['torch==2.13.0']"
    )
