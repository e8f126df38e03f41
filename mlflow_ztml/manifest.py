"""`ModelDeployment` (apiVersion mlifecycle.io/v1): everything a gate needs, in one document.

The same document is built from MLflow evidence (`evidence.py`) or written by hand as YAML.
Missing evidence stays missing: optional sections are `None` and disappear from the policy
input (`policy_input()`), so a rule can say "no fairness evaluation" instead of seeing a 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlflow_ztml.errors import ManifestError

API_VERSION = "mlifecycle.io/v1"
KIND = "ModelDeployment"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Metadata(_Strict):
    name: str = Field(min_length=1)
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class ModelRef(_Strict):
    """Which model version this is and what MLflow knows about its shape."""

    name: str = Field(min_length=1)
    version: str | None = None
    uri: str = Field(min_length=1, description="models:/NAME/VERSION or a storage URI")
    source: str | None = Field(default=None, description="where the artifacts live")
    run_id: str | None = None
    experiment_id: str | None = None
    model_id: str | None = None
    aliases: list[str] = Field(default_factory=list)
    flavors: list[str] = Field(default_factory=list)
    framework: str | None = None
    signature: dict[str, Any] | None = None
    has_input_example: bool = False
    tags: dict[str, str] = Field(default_factory=dict)
    run_tags: dict[str, str] = Field(default_factory=dict)


class Dependency(_Strict):
    """One line of the model's requirements.txt."""

    name: str
    specifier: str = ""
    pinned: bool = False
    version: str | None = None
    requirement: str


class DataSource(_Strict):
    """A dataset logged with `mlflow.log_input` (lineage)."""

    name: str | None = None
    digest: str | None = None
    source: str | None = None
    source_type: str | None = None
    context: str | None = None


class ServingVersion(_Strict):
    """The version serving in the target environment now, for regression rules."""

    version: str
    metrics: dict[str, float] = Field(default_factory=dict)


class Inference(_Strict):
    replicas: int = Field(default=1, ge=1)
    cpu: str = "500m"
    memory: str = "512Mi"
    gpu: int = Field(default=0, ge=0)
    max_batch_size: int = Field(default=32, ge=1)
    max_batch_delay_ms: float = Field(default=2.0, ge=0)
    runtime: Literal["process", "docker", "kubernetes"] | None = None


class Monitoring(_Strict):
    metrics_enabled: bool = True
    latency_p99_ms: float | None = None
    error_rate_max: float | None = None


class Spec(_Strict):
    environment: str | None = None
    model: ModelRef
    metrics: dict[str, float] = Field(default_factory=dict)
    fairness: dict[str, float] | None = None
    drift: dict[str, float] | None = None
    dependencies: list[Dependency] | None = None
    data_sources: list[DataSource] | None = None
    serving: ServingVersion | None = None
    inference: Inference = Field(default_factory=Inference)
    monitoring: Monitoring = Field(default_factory=Monitoring)


class ModelDeployment(_Strict):
    api_version: Literal["mlifecycle.io/v1"] = Field(default=API_VERSION, alias="apiVersion")
    kind: Literal["ModelDeployment"] = KIND
    metadata: Metadata
    spec: Spec

    def to_dict(self) -> dict[str, Any]:
        """The document as a person writes it: camelCase header, no empty optional sections."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def policy_input(self) -> dict[str, Any]:
        """What the governance policy sees as `input.manifest`."""
        return self.to_dict()


def _describe(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '<document>'}: {err['msg']}"
        for err in exc.errors()
    )


def from_dict(document: Any, origin: str = "manifest") -> ModelDeployment:
    """Validate a parsed document; unknown kinds and fields are errors naming the field."""
    if not isinstance(document, dict):
        raise ManifestError(
            f"{origin}: expected a mapping at the top level, got a YAML scalar/list"
        )
    kind = document.get("kind")
    api_version = document.get("apiVersion")
    if kind != KIND:
        raise ManifestError(f"{origin}: kind must be {KIND!r}, got {kind!r}")
    if api_version != API_VERSION:
        raise ManifestError(f"{origin}: apiVersion must be {API_VERSION!r}, got {api_version!r}")
    try:
        return ModelDeployment.model_validate(document)
    except ValidationError as exc:
        raise ManifestError(f"{origin}: invalid ModelDeployment: {_describe(exc)}") from None


def from_yaml(text: str, origin: str = "manifest") -> ModelDeployment:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ManifestError(f"{origin}: not valid YAML: {exc}") from None
    return from_dict(document, origin)


def load(path: Path) -> ModelDeployment:
    """Read a manifest file; an unreadable file is a ManifestError naming the path."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc.strerror}") from None
    return from_yaml(text, origin=str(path))
