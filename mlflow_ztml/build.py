"""Build the serving image of one model version, push it, and name it by digest.

The image is `serving/Dockerfile` built by the Docker engine (docker-py, classic builder) from a
context this module prepares:

    serving/           the inference server package, its requirements and the Dockerfile
    requirements.txt   the model's pinned requirements, normalised (see `normalise_requirements`)
    model/             the MLflow model directory, downloaded from the registry
    ca-certificates/   `build.extra_ca_certificates` (corporate proxies, private indexes)

Why the layers cache: the normalised requirements are their own COPY + `pip install` layer in
front of any model file, and Docker keys a COPY by the content of what it copies. A new version
with the same requirements therefore reuses the installed-requirements layer and only the model
layer (and the per-version labels) change. The requirements' SHA-256 is also an image label
(`io.mlifecycle.requirements.sha256`) so tooling can see which versions share that layer.

Contract: `ImageBuilder.build()` returns a `BuiltImage` whose `reference` is immutable —
`REPO@sha256:<manifest digest>` once pushed (what every runtime deploys), or the local image id
`sha256:...` when nothing is pushed (`build.push: false` or no `build.registry`). Identical
inputs give the identical image (no timestamps in labels), so a rebuild of a deployed version is
a cache hit with the same digest and the deploy stays a no-op.

Registry credentials: ECR hosts (`<account>.dkr.ecr.<region>.amazonaws.com`) log in through
boto3 `ecr.get_authorization_token` (the usual AWS credential chain); other registries use the
password in the environment variable `build.registry_password_env`, else Docker's own
`~/.docker/config.json`. Credentials are handed to the engine per request and never logged,
written to tags or kept on disk by ztml.
"""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from mlflow_ztml.config import BuildConfig, Settings
from mlflow_ztml.errors import BuildError
from mlflow_ztml.redact import clip, redact, safe
from mlflow_ztml.requirements import install_failure_hint
from mlflow_ztml.supply_chain.model_files import (
    IMAGE_SIGNATURE_DIR,
    PUBLIC_KEY_FILE,
    SIGNATURE_FILE,
)

Progress = Callable[[str], None]

LABEL_PREFIX = "io.mlifecycle."
REQUIREMENTS_LABEL = f"{LABEL_PREFIX}requirements.sha256"
_ECR_HOST = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$"
)
_SLUG = re.compile(r"[^a-z0-9._-]+")


class BuildRequest(BaseModel):
    """What to build: one registered model version for one environment."""

    model_name: str
    model_version: str
    model_uri: str = ""
    run_id: str | None = None
    environment: str
    source_url: str | None = None
    # The model files' model-signing bundle and its PEM public key: the image carries both in
    # /opt/model-signature/ and serving verifies the model against them before loading it.
    model_signature: str | None = Field(default=None, repr=False)
    model_public_key: str | None = Field(default=None, repr=False)

    def model_post_init(self, _context: Any) -> None:
        if not self.model_uri:
            self.model_uri = f"models:/{self.model_name}/{self.model_version}"


class BuiltImage(BaseModel):
    """What the build stage produced; `reference` is what a runtime deploys."""

    reference: str
    repository: str
    tag: str
    image_id: str
    digest: str | None = None
    pushed: bool = False
    requirements_sha256: str
    labels: dict[str, str] = Field(default_factory=dict)
    layers: list[str] = Field(default_factory=list)
    size_bytes: int = 0
    steps: int = 0
    cached_steps: int = 0
    seconds: dict[str, float] = Field(default_factory=dict)
    dockerfile: str = ""


class RegistryAuth(BaseModel):
    """Credentials for one push or pull. `repr` hides the password."""

    username: str
    password: str = Field(repr=False)
    serveraddress: str

    def docker(self) -> dict[str, str]:
        return {
            "username": self.username,
            "password": self.password,
            "serveraddress": self.serveraddress,
        }


# --------------------------------------------------------------------------- naming


def _serving_source(name: str) -> bool:
    """What of the `serving` package goes into the image: code, protos, Dockerfile and
    requirements, and the subpackages (`grpc/`) holding them; never caches or bytecode."""
    if name == "__pycache__" or name.startswith("."):
        return False
    return (
        "." not in name
        or name.endswith((".py", ".proto"))
        or name
        in (
            "Dockerfile",
            "requirements.txt",
        )
    )


def serving_dir() -> Path:
    """The `serving` package (source checkout or installed wheel: it ships its Dockerfile)."""
    import serving

    return Path(serving.__file__).resolve().parent


def slug(text: str) -> str:
    """A Docker repository path component for `text` (lowercase, [a-z0-9._-])."""
    value = _SLUG.sub("-", text.lower()).strip("-._")
    return value[:128] or "model"


def image_repository(config: BuildConfig, model_name: str) -> str:
    """`REGISTRY/REPOSITORY/MODEL`, or `REPOSITORY/MODEL` for a local-only build."""
    path = f"{config.repository.strip('/')}/{slug(model_name)}"
    return f"{config.registry.rstrip('/')}/{path}" if config.registry else path


def image_tag(model_version: str, environment: str) -> str:
    return slug(f"v{model_version}-{environment}")[:128]


def registry_host(reference: str) -> str | None:
    """The registry host of an image reference (`None` for Docker Hub short names)."""
    first = reference.split("/", 1)[0]
    if "/" in reference and ("." in first or ":" in first or first == "localhost"):
        return first
    return None


def _signature_context(request: BuildRequest, directory: Path) -> None:
    """`model-signature/` of the build context: the signature and public key when the version
    was signed, else empty (the Dockerfile copies it either way)."""
    directory.mkdir()
    if request.model_signature and request.model_public_key:
        (directory / SIGNATURE_FILE).write_text(request.model_signature, encoding="utf-8")
        (directory / PUBLIC_KEY_FILE).write_text(request.model_public_key, encoding="utf-8")


# --------------------------------------------------------------------------- requirements


def normalise_requirements(text: str) -> str:
    """Requirements as the image installs them: comments and blanks dropped, duplicates removed,
    pip options first, then requirements sorted. Two versions whose requirements differ only in
    order, comments or whitespace therefore share one cached layer."""
    options: list[str] = []
    requirements: list[str] = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        target = options if line.startswith("-") else requirements
        if line not in target:
            target.append(line)
    return "".join(f"{line}\n" for line in [*options, *sorted(requirements, key=str.lower)])


def requirements_hash(normalised: str) -> str:
    return hashlib.sha256(normalised.encode()).hexdigest()


def _unpinned_torch(normalised: str, config: BuildConfig) -> bool:
    """True when torch is required and no index is configured: PyPI's Linux torch wheels carry
    CUDA (several GB); a CPU image needs `https://download.pytorch.org/whl/cpu` as an index."""
    wants_torch = any(
        re.match(r"^torch\s*(==|>=|~=|<|>|$|\[|;)", line) for line in normalised.splitlines()
    )
    return wants_torch and not (
        config.pip_index_url or config.pip_extra_index_url or config.pip_find_links
    )


# --------------------------------------------------------------------------- credentials


def ecr_region(host: str) -> str | None:
    """The AWS region of an ECR registry host, or None when `host` is not ECR."""
    match = _ECR_HOST.match(host)
    return match["region"] if match else None


def registry_auth(host: str | None, config: BuildConfig) -> RegistryAuth | None:
    """Credentials for `host`: ECR via boto3, else `registry_password_env`, else None (Docker's
    own credential store decides). Raises BuildError when ECR login fails."""
    if not host:
        return None
    region = config.ecr_region or ecr_region(host)
    if region and ecr_region(host):
        return _ecr_auth(host, region)
    if config.registry_password_env:
        import os

        password = os.environ.get(config.registry_password_env)
        if not password:
            raise BuildError(
                f"build.registry_password_env names {config.registry_password_env}, which is "
                "not set in the environment"
            )
        return RegistryAuth(
            username=config.registry_username or "", password=password, serveraddress=host
        )
    return None


def _ecr_auth(host: str, region: str) -> RegistryAuth:
    try:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError as exc:  # pragma: no cover - boto3 is in the [docker] extra
        raise BuildError(
            f"pushing to ECR ({host}) needs boto3: pip install 'mlflow-ztml[docker]'"
        ) from exc
    account = _ECR_HOST.match(host)["account"]  # type: ignore[index]
    try:
        answer = boto3.client("ecr", region_name=region).get_authorization_token(
            registryIds=[account]
        )
        data = answer["authorizationData"][0]
        username, password = base64.b64decode(data["authorizationToken"]).decode().split(":", 1)
    except (BotoCoreError, ClientError, KeyError, IndexError, ValueError) as exc:
        raise BuildError(
            f"ECR login for {host} failed ({type(exc).__name__}: {safe(exc, 300)}); "
            "check the AWS credentials and ecr:GetAuthorizationToken permission"
        ) from None
    endpoint = data.get("proxyEndpoint") or f"https://{host}"
    return RegistryAuth(username=username, password=password, serveraddress=endpoint)


# --------------------------------------------------------------------------- docker engine


def docker_client(timeout: float = 600) -> Any:
    """A docker-py client from the environment (`DOCKER_HOST`, ...), or a BuildError."""
    try:
        import docker
    except ImportError as exc:  # pragma: no cover - docker is in the [docker] extra
        raise BuildError(
            "building images needs docker-py: pip install 'mlflow-ztml[docker]'"
        ) from exc
    try:
        client = docker.from_env(timeout=int(timeout))
        client.ping()
    except Exception as exc:
        raise BuildError(
            f"cannot reach the Docker engine ({safe(exc, 300)}); start it or set DOCKER_HOST"
        ) from None
    return client


class ImageBuilder:
    """Prepares the context, builds, pushes. One instance may build many images."""

    def __init__(
        self,
        settings: Settings,
        client: Any | None = None,
        progress: Progress | None = None,
        model_downloader: Callable[[str, Path], None] | None = None,
    ) -> None:
        self.settings = settings
        self.config = settings.build
        self._client = client
        self.progress = progress or (lambda _line: None)
        self._download = model_downloader or self._download_from_mlflow

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = docker_client(self.config.timeout_seconds)
        return self._client

    # -- the stage ------------------------------------------------------------------

    def build(self, request: BuildRequest) -> BuiltImage:
        """Build (and push, when configured) the image of `request`; see the module contract."""
        seconds: dict[str, float] = {}
        with tempfile.TemporaryDirectory(prefix="ztml-build-") as tmp:
            started = time.monotonic()
            context = Path(tmp)
            self.progress(f"downloading {request.model_uri}")
            normalised = self.prepare_context(request, context)
            seconds["context"] = round(time.monotonic() - started, 3)
            result = self._build(request, context, normalised, seconds)
        if self.config.push and self.config.registry:
            started = time.monotonic()
            result = self.push(result)
            seconds["push"] = round(time.monotonic() - started, 3)
        result.seconds = seconds
        return result

    def prepare_context(self, request: BuildRequest, context: Path) -> str:
        """Lay out the build context in `context`; return the normalised requirements."""
        serving = context / "serving"
        shutil.copytree(
            serving_dir(),
            serving,
            ignore=lambda _dir, names: [n for n in names if not _serving_source(n)],
        )
        if not (serving / "Dockerfile").is_file():
            raise BuildError(
                f"serving/Dockerfile is missing from {serving_dir()}; reinstall mlflow-ztml"
            )
        model = context / "model"
        self._download(request.model_uri, model)
        if not (model / "MLmodel").is_file():
            raise BuildError(f"{request.model_uri} downloaded without an MLmodel file")
        raw = model / "requirements.txt"
        if not raw.is_file():
            raise BuildError(
                f"{request.model_uri} has no requirements.txt; log the model with "
                "pip_requirements so the image can install exactly what it needs"
            )
        normalised = normalise_requirements(raw.read_text(encoding="utf-8"))
        (context / "requirements.txt").write_text(normalised, encoding="utf-8")
        if _unpinned_torch(normalised, self.config):
            self.progress(
                "warning: the model requires torch and no pip index is configured; PyPI's "
                "Linux torch wheels include CUDA (GBs). For CPU images set build.pip_index_url "
                "to https://download.pytorch.org/whl/cpu and build.pip_extra_index_url to PyPI"
            )
        _signature_context(request, context / "model-signature")
        certificates = context / "ca-certificates"
        certificates.mkdir()
        for index, path in enumerate(self.config.extra_ca_certificates):
            path = Path(path).expanduser()
            try:
                text = path.read_text(encoding="ascii")
            except (OSError, UnicodeDecodeError) as exc:
                raise BuildError(
                    f"build.extra_ca_certificates: cannot read {path}: {exc}"
                ) from None
            if "-----BEGIN CERTIFICATE-----" not in text:
                raise BuildError(f"build.extra_ca_certificates: {path} is not a PEM certificate")
            # update-ca-certificates only picks up *.crt
            (certificates / f"{index:02d}-{slug(path.stem)}.crt").write_text(text)
        return normalised

    def _download_from_mlflow(self, model_uri: str, destination: Path) -> None:
        import mlflow.artifacts

        from mlflow_ztml.registry import _tracking, translate_errors

        destination.mkdir(parents=True, exist_ok=True)
        with (
            translate_errors(f"downloading {model_uri} for the image build"),
            _tracking(self.settings.tracking_uri()),
        ):
            mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(destination))

    def labels(self, request: BuildRequest, requirements_sha: str) -> dict[str, str]:
        """Labels on the image. Deterministic (no build time) so rebuilds hit the cache."""
        labels = {
            f"{LABEL_PREFIX}model.name": request.model_name,
            f"{LABEL_PREFIX}model.version": request.model_version,
            f"{LABEL_PREFIX}model.uri": request.model_uri,
            f"{LABEL_PREFIX}model.run-id": request.run_id or "",
            f"{LABEL_PREFIX}environment": request.environment,
            REQUIREMENTS_LABEL: requirements_sha,
            "org.opencontainers.image.title": f"ztml-serving-{slug(request.model_name)}",
            "org.opencontainers.image.version": request.model_version,
            "org.opencontainers.image.base.name": self.config.base_image,
        }
        if request.source_url:
            labels["org.opencontainers.image.source"] = redact(request.source_url)
        return labels

    def _buildargs(self, request: BuildRequest) -> dict[str, str]:
        args = {
            **self.config.build_args,
            "BASE_IMAGE": self.config.base_image,
            "MODEL_NAME": request.model_name,
            "MODEL_VERSION": request.model_version,
            "MODEL_RUN_ID": request.run_id or "",
            "SOURCE_URL": redact(request.source_url or ""),
        }
        for key, value in (
            ("PIP_INDEX_URL", self.config.pip_index_url),
            ("PIP_EXTRA_INDEX_URL", self.config.pip_extra_index_url),
            ("PIP_FIND_LINKS", self.config.pip_find_links),
        ):
            if value:
                args[key] = value
        if request.model_signature and request.model_public_key:
            args["MODEL_SIGNATURE"] = f"{IMAGE_SIGNATURE_DIR}/{SIGNATURE_FILE}"
            args["MODEL_PUBLIC_KEY"] = f"{IMAGE_SIGNATURE_DIR}/{PUBLIC_KEY_FILE}"
        return args

    def _build(
        self, request: BuildRequest, context: Path, normalised: str, seconds: dict[str, float]
    ) -> BuiltImage:
        repository = image_repository(self.config, request.model_name)
        tag = image_tag(request.model_version, request.environment)
        requirements_sha = requirements_hash(normalised)
        labels = self.labels(request, requirements_sha)
        dockerfile = (context / "serving" / "Dockerfile").read_text(encoding="utf-8")
        self.progress(f"building {repository}:{tag} (requirements {requirements_sha[:12]})")
        started = time.monotonic()
        try:
            stream = self.client.api.build(
                path=str(context),
                dockerfile="serving/Dockerfile",
                tag=f"{repository}:{tag}",
                buildargs=self._buildargs(request),
                labels=labels,
                rm=True,
                forcerm=True,
                pull=False,
                nocache=self.config.no_cache,
                decode=True,
                network_mode=self.config.network_mode,
                timeout=int(self.config.timeout_seconds),
            )
            image_id, steps, cached = self._follow_build(stream)
        except BuildError:
            raise
        except Exception as exc:
            raise BuildError(f"building {repository}:{tag} failed: {safe(exc, 1000)}") from None
        seconds["build"] = round(time.monotonic() - started, 3)
        image = self.client.images.get(image_id or f"{repository}:{tag}")
        attrs = image.attrs
        return BuiltImage(
            reference=image.id,
            repository=repository,
            tag=tag,
            image_id=image.id,
            requirements_sha256=requirements_sha,
            labels=labels,
            layers=list(attrs.get("RootFS", {}).get("Layers") or []),
            size_bytes=int(attrs.get("Size") or 0),
            steps=steps,
            cached_steps=cached,
            dockerfile=dockerfile,
        )

    def _follow_build(self, stream: Iterable[dict[str, Any]]) -> tuple[str | None, int, int]:
        """Relay build output to progress; return (image id, steps, cached steps)."""
        image_id: str | None = None
        steps = cached = 0
        tail: list[str] = []
        for chunk in stream:
            if "error" in chunk or "errorDetail" in chunk:
                message = chunk.get("error") or chunk.get("errorDetail", {}).get("message", "")
                context = "\n".join(tail[-15:])
                hint = install_failure_hint("\n".join(tail))
                raise BuildError(
                    f"image build failed: {redact(message.strip())}\nlast build output:\n"
                    f"{redact(context)}" + (f"\n{hint}" if hint else "")
                )
            aux = chunk.get("aux")
            if isinstance(aux, dict) and aux.get("ID"):
                image_id = aux["ID"]
            text = chunk.get("stream")
            if not text:
                continue
            for line in text.splitlines():
                line = line.rstrip()
                if not line:
                    continue
                tail.append(line)
                del tail[:-40]
                if line.startswith("Step "):
                    steps += 1
                elif "Using cache" in line:
                    cached += 1
                self.progress(redact(line))
        return image_id, steps, cached

    def push(self, image: BuiltImage) -> BuiltImage:
        """Push `repository:tag`; return `image` with `digest` and `reference` = REPO@DIGEST."""
        host = registry_host(image.repository)
        auth = registry_auth(host, self.config)
        self.progress(f"pushing {image.repository}:{image.tag}")
        try:
            stream = self.client.api.push(
                image.repository,
                tag=image.tag,
                stream=True,
                decode=True,
                auth_config=auth.docker() if auth else None,
            )
            digest = self._follow_push(stream, secrets=[auth.password] if auth else [])
        except BuildError:
            raise
        except Exception as exc:
            message = _scrub(str(exc), [auth.password] if auth else [])
            raise BuildError(
                f"pushing {image.repository}:{image.tag} failed: {clip(message, 1000)}"
            ) from None
        if not digest:
            raise BuildError(
                f"the registry did not report a digest for {image.repository}:{image.tag}"
            )
        return image.model_copy(
            update={
                "digest": digest,
                "pushed": True,
                "reference": f"{image.repository}@{digest}",
            }
        )

    def _follow_push(self, stream: Iterable[dict[str, Any]], secrets: list[str]) -> str | None:
        digest: str | None = None
        last_status: dict[str, str] = {}
        for chunk in stream:
            if "error" in chunk or "errorDetail" in chunk:
                message = chunk.get("error") or chunk.get("errorDetail", {}).get("message", "")
                raise BuildError(f"push failed: {_scrub(message, secrets)}")
            aux = chunk.get("aux")
            if isinstance(aux, dict) and aux.get("Digest"):
                digest = aux["Digest"]
            status = chunk.get("status")
            if not status:
                continue
            layer = chunk.get("id", "")
            # One line per layer state change, not one per progress tick.
            if last_status.get(layer) != status:
                last_status[layer] = status
                self.progress(_scrub(f"{layer}: {status}" if layer else status, secrets))
            match = re.search(r"digest: (sha256:[0-9a-f]{64})", status)
            if match:
                digest = digest or match[1]
        return digest


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return redact(text)


def pull(client: Any, reference: str, config: BuildConfig) -> None:
    """Make `reference` present in the local engine (pulling with registry credentials)."""
    try:
        client.images.get(reference)
        return
    except Exception:  # noqa: S110 - not local: pull it below
        pass
    auth = registry_auth(registry_host(reference), config)
    repository, _, digest = reference.partition("@")
    try:
        client.api.pull(
            repository,
            tag=digest or None,
            auth_config=auth.docker() if auth else None,
        )
    except Exception as exc:
        raise BuildError(
            f"pulling {reference} failed: {_scrub(str(exc), [auth.password] if auth else [])}"
        ) from None


def build_image(
    settings: Settings, request: BuildRequest, progress: Progress | None = None
) -> BuiltImage:
    """The build stage as one call: prepare, build, push (when configured)."""
    return ImageBuilder(settings, progress=progress).build(request)
