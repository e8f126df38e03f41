"""The few OCI distribution API calls the cosign storage convention needs.

Signatures and attestations live in the image's own repository as ordinary OCI manifests
under tags derived from the image digest (`sha256-<hex>.sig`, `sha256-<hex>.att`), so any
registry that stores images stores them, and any cosign-aware verifier finds them.

Contract: `RegistryClient(host, auth)` talks to `https://HOST/v2/` (plain HTTP only for
loopback hosts, which Docker also trusts without TLS). Authentication follows the registry's
`WWW-Authenticate` challenge: Basic with the given credentials, or a Bearer token from the
realm it names. Credentials come from `build.registry_auth` (ECR via boto3, or
`build.registry_password_env`), else Docker's `~/.docker/config.json` `auths` entry; they are
never logged and never appear in an error message.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from mlflow_ztml.errors import SigningError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_LOOPBACK = re.compile(r"^(localhost|127\.\d+\.\d+\.\d+|\[::1\])(:\d+)?$")
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class ImageReference:
    """`HOST/REPOSITORY[:TAG][@sha256:HEX]` split into its parts."""

    host: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, reference: str) -> ImageReference:
        text = reference.strip()
        digest = None
        if "@" in text:
            text, digest = text.split("@", 1)
            if not _DIGEST.match(digest):
                raise SigningError(f"image reference {reference!r} has an invalid digest")
        host, sep, path = text.partition("/")
        if not sep or not ("." in host or ":" in host or host == "localhost"):
            raise SigningError(
                f"image reference {reference!r} names no registry: signatures live in a "
                "registry, so sign and verify images pushed to one (set build.registry)"
            )
        tag = None
        name, colon, maybe_tag = path.rpartition(":")
        if colon and "/" not in maybe_tag:
            path, tag = name, maybe_tag
        if not path:
            raise SigningError(f"image reference {reference!r} has no repository")
        return cls(host=host, repository=path, tag=tag, digest=digest)

    @property
    def name(self) -> str:
        """`HOST/REPOSITORY`: what cosign's payload calls the docker-reference."""
        return f"{self.host}/{self.repository}"

    def with_digest(self, digest: str) -> ImageReference:
        return ImageReference(self.host, self.repository, self.tag, digest)

    def __str__(self) -> str:
        text = self.name + (f":{self.tag}" if self.tag else "")
        return text + (f"@{self.digest}" if self.digest else "")


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def attachment_tag(digest: str, suffix: str) -> str:
    """cosign's tag for what is attached to `digest`: `sha256-<hex>.<suffix>`."""
    return digest.replace(":", "-") + "." + suffix


@dataclass(frozen=True)
class Manifest:
    body: bytes
    media_type: str
    digest: str

    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


def docker_config_auth(host: str) -> tuple[str, str] | None:
    """The `auths` entry for `host` in Docker's config.json (credential helpers are not read)."""
    root = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")
    try:
        config = json.loads((root / "config.json").read_text())
    except (OSError, ValueError):
        return None
    for key, entry in (config.get("auths") or {}).items():
        if key.removeprefix("https://").removeprefix("http://").split("/")[0] != host:
            continue
        encoded = (entry or {}).get("auth")
        if encoded:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
            return user, password
    return None


class RegistryClient:
    """One registry host; requests reuse one session and its tokens."""

    def __init__(
        self,
        host: str,
        credentials: tuple[str, str] | None = None,
        timeout: float = 30,
    ) -> None:
        self.host = host
        scheme = "http" if _LOOPBACK.match(host) else "https"
        self.base = f"{scheme}://{host}/v2/"
        self.credentials = credentials if credentials is not None else docker_config_auth(host)
        self.timeout = timeout
        self.session = requests.Session()
        self._tokens: dict[str, str] = {}

    # -- transport ------------------------------------------------------------------------

    def _request(
        self, method: str, url: str, repository: str, push: bool = False, **kwargs: Any
    ) -> requests.Response:
        scope = f"repository:{repository}:{'pull,push' if push else 'pull'}"
        headers = dict(kwargs.pop("headers", {}) or {})
        for attempt in range(2):
            if scope in self._tokens:
                headers["Authorization"] = self._tokens[scope]
            try:
                response = self.session.request(
                    method, url, headers=headers, timeout=self.timeout, **kwargs
                )
            except requests.RequestException as exc:
                raise SigningError(
                    f"registry {self.host} did not answer {method} {_path(url)}: "
                    f"{type(exc).__name__}"
                ) from None
            if response.status_code != 401 or attempt:
                return response
            self._tokens[scope] = self._authorize(response, scope)
        return response  # pragma: no cover - the loop always returns

    def _authorize(self, response: requests.Response, scope: str) -> str:
        challenge = response.headers.get("WWW-Authenticate", "")
        scheme = challenge.split(" ", 1)[0].lower()
        if scheme == "basic":
            if not self.credentials:
                raise SigningError(f"registry {self.host} needs credentials (docker login)")
            user, password = self.credentials
            return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        if scheme != "bearer":
            raise SigningError(f"registry {self.host} asks for unsupported auth {scheme!r}")
        params = dict(_CHALLENGE_PARAM.findall(challenge))
        realm = params.pop("realm", None)
        if not realm:
            raise SigningError(f"registry {self.host} sent a Bearer challenge without a realm")
        query = {"service": params.get("service", ""), "scope": scope}
        try:
            answer = requests.get(realm, params=query, auth=self.credentials, timeout=self.timeout)
        except requests.RequestException as exc:
            raise SigningError(
                f"token service of {self.host} did not answer: {type(exc).__name__}"
            ) from None
        if answer.status_code != 200:
            raise SigningError(
                f"token service of {self.host} refused {scope} (HTTP {answer.status_code}): "
                "check the registry credentials"
            )
        body = answer.json()
        return "Bearer " + str(body.get("token") or body.get("access_token") or "")

    def _fail(self, response: requests.Response, what: str) -> SigningError:
        detail = response.text[:300].strip().replace("\n", " ")
        return SigningError(
            f"registry {self.host}: {what} failed (HTTP {response.status_code}): {detail}"
        )

    # -- manifests and blobs --------------------------------------------------------------

    def get_manifest(self, repository: str, reference: str) -> Manifest | None:
        """The manifest at a tag or digest, or None when the registry has none there."""
        url = f"{self.base}{repository}/manifests/{reference}"
        response = self._request(
            "GET", url, repository, headers={"Accept": ", ".join(MANIFEST_TYPES)}
        )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._fail(response, f"reading manifest {repository}:{reference}")
        body = response.content
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        if not media_type:
            media_type = json.loads(body).get("mediaType", OCI_MANIFEST)
        return Manifest(body=body, media_type=media_type, digest=digest_of(body))

    def put_manifest(self, repository: str, tag: str, manifest: dict[str, Any]) -> str:
        body = json.dumps(manifest, separators=(",", ":")).encode()
        url = f"{self.base}{repository}/manifests/{tag}"
        response = self._request(
            "PUT",
            url,
            repository,
            push=True,
            data=body,
            headers={"Content-Type": manifest.get("mediaType", OCI_MANIFEST)},
        )
        if response.status_code not in (200, 201):
            raise self._fail(response, f"writing manifest {repository}:{tag}")
        return digest_of(body)

    def get_blob(self, repository: str, digest: str, max_bytes: int = 64 * 2**20) -> bytes:
        url = f"{self.base}{repository}/blobs/{digest}"
        response = self._request("GET", url, repository)
        if response.status_code != 200:
            raise self._fail(response, f"reading blob {digest}")
        data = response.content[: max_bytes + 1]
        if len(data) > max_bytes or digest_of(data) != digest:
            raise SigningError(f"registry {self.host}: blob {digest} does not match its digest")
        return data

    def put_blob(self, repository: str, data: bytes) -> str:
        """Upload `data` (monolithic POST then PUT) unless the registry has it; its digest."""
        digest = digest_of(data)
        head = self._request(
            "HEAD", f"{self.base}{repository}/blobs/{digest}", repository, push=True
        )
        if head.status_code == 200:
            return digest
        start = self._request(
            "POST", f"{self.base}{repository}/blobs/uploads/", repository, push=True
        )
        if start.status_code != 202 or "Location" not in start.headers:
            raise self._fail(start, "starting a blob upload")
        location = start.headers["Location"]
        if location.startswith("/"):
            location = self.base[: -len("/v2/")] + location
        separator = "&" if "?" in location else "?"
        done = self._request(
            "PUT",
            f"{location}{separator}digest={digest}",
            repository,
            push=True,
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        if done.status_code not in (201, 204):
            raise self._fail(done, f"uploading blob {digest}")
        return digest

    def resolve(self, image: ImageReference) -> ImageReference:
        """`image` with its manifest digest (by tag when it has no digest); SigningError when
        the registry does not have it."""
        reference = image.digest or image.tag or "latest"
        manifest = self.get_manifest(image.repository, reference)
        if manifest is None:
            raise SigningError(f"registry {self.host} has no image {image}")
        if image.digest and manifest.digest != image.digest:
            raise SigningError(f"registry {self.host} served {image} with another digest")
        return image.with_digest(manifest.digest)


def _path(url: str) -> str:
    return url.split("/v2/", 1)[-1].split("?", 1)[0]


@dataclass(frozen=True)
class Layer:
    """One layer of an attachment manifest: its blob, media type and annotations."""

    data: bytes
    media_type: str
    annotations: dict[str, str]

    def descriptor(self) -> dict[str, Any]:
        return {
            "mediaType": self.media_type,
            "size": len(self.data),
            "digest": digest_of(self.data),
            "annotations": self.annotations,
        }


def read_attachment(
    client: RegistryClient, image: ImageReference, suffix: str
) -> list[dict[str, Any]]:
    """The layer descriptors of the `sha256-<hex>.<suffix>` manifest ([] when there is none)."""
    assert image.digest, "resolve the image first"
    manifest = client.get_manifest(image.repository, attachment_tag(image.digest, suffix))
    if manifest is None:
        return []
    return list(manifest.json().get("layers") or [])


def write_attachment(
    client: RegistryClient,
    image: ImageReference,
    suffix: str,
    layers: list[Layer],
    keep: list[dict[str, Any]],
) -> str:
    """Write the `sha256-<hex>.<suffix>` manifest: the `keep` descriptors (already in the
    registry) followed by `layers` (uploaded here). The config blob is the one cosign writes
    (an empty image config whose rootfs lists the layers), so cosign reads it back unchanged.
    """
    assert image.digest, "resolve the image first"
    descriptors = list(keep)
    for layer in layers:
        client.put_blob(image.repository, layer.data)
        descriptors.append(layer.descriptor())
    config = {
        "architecture": "",
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in descriptors]},
        "config": {},
    }
    config_blob = json.dumps(config, separators=(",", ":")).encode()
    client.put_blob(image.repository, config_blob)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "size": len(config_blob),
            "digest": digest_of(config_blob),
        },
        "layers": descriptors,
    }
    return client.put_manifest(image.repository, attachment_tag(image.digest, suffix), manifest)
