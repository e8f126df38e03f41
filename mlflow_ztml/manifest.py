"""`ModelDeployment` (apiVersion mlifecycle.io/v1): everything a gate needs, in one document.

The same document is built from MLflow evidence (`evidence.py`) or written by hand as YAML.
Two spellings are valid input: ztml's own (the canonical form) and the one published by the
project that defined `mlifecycle.io/v1` (requirement strings as dependencies, training facts
inside `metrics`, `demographic_parity`, flat `previous_version`, ...). `to_canonical()` rewrites
the published spellings to the canonical ones before validation, so one strict schema judges
both and what the gate sees, what `ztml manifest` prints and what the audit run stores is the
same canonical document. Nothing is dropped on the way: a value given twice with different
contents is an error, not a silent choice.

Missing evidence stays missing: optional sections are `None` and disappear from the policy
input (`policy_input()`), so a rule can say "no fairness evaluation" instead of seeing a 0.
"""

from __future__ import annotations

import copy
import datetime
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from mlflow_ztml.errors import ManifestError
from mlflow_ztml.validation import Loc, describe, describe_value, field_path

API_VERSION = "mlifecycle.io/v1"
KIND = "ModelDeployment"

# Published spellings -> canonical places (see docs/manifest.md, "Two spellings, one form").
TRAINING_IN_METRICS = {
    "training_date": "date",
    "training_duration_hours": "duration_hours",
    "training_samples": "samples",
}
TRAINING_RENAMES = {"sample_size": "samples"}
FAIRNESS_RENAMES = {
    "demographic_parity": "demographic_parity_difference",
    "equalized_odds": "equalized_odds_difference",
}
FLAT_RESOURCES = ("cpu", "memory")

_QUANTITY = re.compile(r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?$")
_DURATION = re.compile(r"^[0-9]+(\.[0-9]+)?(ms|s|m|h)$")


# --- value types: what a YAML author may write, checked with messages in words -------------


def _shape(kind: str, message: str, value: Any) -> PydanticCustomError:
    """A shape error in words; the offending value travels as context (never formatted in)."""
    return PydanticCustomError(
        kind, "{expected}, got {got}", {"expected": message, "got": describe_value(value)}
    )


def _label(value: Any) -> Any:
    """Versions and ids are text; YAML reads an unquoted `3` as a number, MLflow's are ints."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _date_text(value: Any) -> Any:
    """YAML reads an unquoted 2025-01-02 as a date; the manifest keeps the ISO text."""
    if isinstance(value, datetime.date):
        return value.isoformat()
    return value


def _quantity(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _QUANTITY.match(value):
        raise _shape("quantity", "expected a Kubernetes quantity such as 500m, 2 or 4Gi", value)
    return value


def _duration(value: Any) -> str:
    if not isinstance(value, str) or not _DURATION.match(value):
        raise _shape("duration", "expected a duration such as 500ms, 30s or 5m", value)
    return value


def _threshold(value: Any) -> float | str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and _DURATION.match(value):
        return value
    raise _shape("threshold", "expected a number or a duration such as 500ms", value)


Label = Annotated[str, BeforeValidator(_label)]
DateText = Annotated[str, BeforeValidator(_date_text)]
Quantity = Annotated[str, BeforeValidator(_quantity)]
Duration = Annotated[str, PlainValidator(_duration)]
Threshold = Annotated[float | str, PlainValidator(_threshold)]
Number = StrictFloat
Count = StrictInt


class _Strict(BaseModel):
    """Unknown fields are errors; camelCase published names are the only accepted spelling."""

    model_config = ConfigDict(
        extra="forbid", validate_by_name=False, validate_by_alias=True, serialize_by_alias=True
    )


class _Scores(BaseModel):
    """Numeric scores under free names (what rules judge) plus declared metadata fields."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, Number] = Field(init=False)

    def scores(self) -> dict[str, float]:
        """The numeric values only, by name (metadata fields excluded)."""
        return dict(self.__pydantic_extra__ or {})


# --- the document ---------------------------------------------------------------------------


class Metadata(_Strict):
    name: str = Field(min_length=1)
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class ModelRef(_Strict):
    """Which model version this is and what MLflow knows about its shape."""

    name: str = Field(min_length=1)
    version: Label | None = None
    uri: str = Field(min_length=1, description="models:/NAME/VERSION or a storage URI")
    description: str | None = None
    source: str | None = Field(default=None, description="where the artifacts live")
    run_id: str | None = None
    experiment_id: Label | None = None
    model_id: str | None = None
    aliases: list[str] = Field(default_factory=list)
    flavors: list[str] = Field(default_factory=list)
    framework: str | None = None
    signature: dict[str, Any] | None = None
    has_input_example: StrictBool = False
    tags: dict[str, str] = Field(default_factory=dict)
    run_tags: dict[str, str] = Field(default_factory=dict)


class Training(_Strict):
    """Facts about the training run; the published format keeps them inside `metrics`."""

    date: DateText | None = None
    duration_hours: Number | None = Field(default=None, ge=0)
    samples: Count | None = Field(default=None, ge=0)


class Fairness(_Scores):
    """Bias scores (`demographic_parity_difference: 0.04`, ...) and how they were measured."""

    evaluation_date: DateText | None = None
    protected_attributes: list[str] | None = None


class Drift(_Scores):
    """Drift scores (`score`, per-feature names, ...) and what they were measured against."""

    reference_dataset: str | None = None
    monitored_features: list[str] | None = None
    last_evaluated: DateText | None = None


class Dependency(_Strict):
    """One requirement of the model; written as `torch>=2.0.0` or as this mapping."""

    __shape_words__: ClassVar[str] = "requirement strings (torch>=2.0.0) or mappings"

    name: str
    specifier: str = ""
    pinned: StrictBool = False
    version: str | None = None
    requirement: str

    @model_validator(mode="before")
    @classmethod
    def _from_requirement_string(cls, data: Any) -> Any:
        if isinstance(data, str):
            try:
                return parse_requirement(data).model_dump()
            except InvalidRequirement as exc:
                raise _shape(
                    "requirement",
                    f"expected a requirement such as torch>=2.0.0 ({_first_line(exc)})",
                    data,
                ) from None
        if not isinstance(data, dict | BaseModel):
            raise _shape("requirement", "expected a requirement string or a mapping", data)
        return data


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def parse_requirement(line: str) -> Dependency:
    """`torch>=2.0.0` -> Dependency; raises InvalidRequirement for what pip could not parse.

    Pinned means exactly one `==`/`===` specifier without a wildcard and no URL: the only
    form that names one reproducible distribution.
    """
    req = Requirement(line.strip())
    specs = list(req.specifier)
    pinned = (
        len(specs) == 1
        and specs[0].operator in ("==", "===")
        and "*" not in specs[0].version
        and req.url is None
    )
    return Dependency(
        name=canonicalize_name(req.name),
        specifier=str(req.specifier),
        pinned=pinned,
        version=specs[0].version if pinned else None,
        requirement=line.strip(),
    )


class DataSource(_Strict):
    """A dataset the model was trained or evaluated on (MLflow: `mlflow.log_input`).

    `approved` is what the author claims; whether a source is approved is decided by the
    policy data in ztml.yaml, which may or may not trust the claim.
    """

    name: str | None = None
    digest: str | None = None
    source: str | None = None
    source_type: str | None = None
    context: str | None = None
    version: Label | None = None
    approved: StrictBool | None = None
    description: str | None = None


class ServingVersion(_Strict):
    """The version serving in the target environment now, for regression rules.

    Published as `spec.previous_version` with `inference.latency_p99_ms`.
    """

    version: Label | None = None
    metrics: dict[str, Number] = Field(default_factory=dict)
    latency_p99_ms: Number | None = Field(default=None, ge=0)


class ResourceQuantities(_Strict):
    cpu: Quantity | None = None
    memory: Quantity | None = None


class Resources(_Strict):
    """Kubernetes-style resources of one replica."""

    requests: ResourceQuantities | None = None
    limits: ResourceQuantities | None = None


class Autoscaling(_Strict):
    min_replicas: Count | None = Field(default=None, ge=1, alias="minReplicas")
    max_replicas: Count | None = Field(default=None, ge=1, alias="maxReplicas")
    target_cpu_utilization: Count | None = Field(default=None, ge=1, alias="targetCPUUtilization")
    target_memory_utilization: Count | None = Field(
        default=None, ge=1, alias="targetMemoryUtilization"
    )

    @model_validator(mode="after")
    def _bounds_in_order(self) -> Autoscaling:
        low, high = self.min_replicas, self.max_replicas
        if low is not None and high is not None and low > high:
            raise ValueError(f"minReplicas ({low}) is greater than maxReplicas ({high})")
        return self


class Probe(_Strict):
    path: str | None = None
    port: Count | None = Field(default=None, ge=1, le=65535)
    initial_delay_seconds: Count | None = Field(default=None, ge=0, alias="initialDelaySeconds")
    period_seconds: Count | None = Field(default=None, ge=1, alias="periodSeconds")


class Inference(_Strict):
    """How the model runs. Published flat `cpu`/`memory` become `resources.requests`."""

    replicas: Count = Field(default=1, ge=1)
    resources: Resources | None = None
    autoscaling: Autoscaling | None = None
    health_check: Probe | None = Field(default=None, alias="healthCheck")
    readiness_check: Probe | None = Field(default=None, alias="readinessCheck")
    latency_p99_ms: Number | None = Field(default=None, ge=0)
    gpu: Count = Field(default=0, ge=0)
    max_batch_size: Count = Field(default=32, ge=1)
    max_batch_delay_ms: Number = Field(default=2.0, ge=0)
    runtime: Literal["process", "docker", "kubernetes"] | None = None

    def requested(self, resource: Literal["cpu", "memory"]) -> str | None:
        """What one replica asks for: the request, else the limit (as Kubernetes defaults a
        missing request to the limit), else None (the runtime's default applies)."""
        for quantities in (
            self.resources.requests if self.resources else None,
            self.resources.limits if self.resources else None,
        ):
            value = getattr(quantities, resource, None) if quantities else None
            if value is not None:
                return value
        return None


class DriftDetection(_Strict):
    enabled: StrictBool | None = None
    schedule: str | None = None
    threshold: Number | None = None


class AlertRule(_Strict):
    name: str
    condition: str | None = None
    severity: str | None = None


class Alerting(_Strict):
    enabled: StrictBool | None = None
    channels: list[str] | None = None
    rules: list[AlertRule] | None = None


class Monitoring(_Strict):
    """How the running model is watched. `metrics_enabled`: the serving runtime exports
    Prometheus metrics (ztml's always does)."""

    enabled: StrictBool | None = None
    drift_detection: DriftDetection | None = None
    alerting: Alerting | None = None
    metrics_enabled: StrictBool = True
    latency_p99_ms: Number | None = Field(default=None, ge=0)
    error_rate_max: Number | None = Field(default=None, ge=0)


class Explainability(_Strict):
    method: str | None = None
    enabled: StrictBool | None = None
    feature_importance: list[str] | None = None


class MetricsEndpoint(_Strict):
    enabled: StrictBool | None = None
    port: Count | None = Field(default=None, ge=1, le=65535)
    path: str | None = None


class Logging(_Strict):
    level: str | None = None
    format: str | None = None


class Tracing(_Strict):
    enabled: StrictBool | None = None
    sampling_rate: Number | None = Field(default=None, ge=0, le=1, alias="samplingRate")


class Observability(_Strict):
    metrics: MetricsEndpoint | None = None
    logging: Logging | None = None
    tracing: Tracing | None = None


class RollbackTrigger(_Strict):
    type: str
    threshold: Threshold | None = None
    window: Duration | None = None


class Rollback(_Strict):
    enabled: StrictBool | None = None
    previous_version: Label | None = Field(default=None, alias="previousVersion")
    triggers: list[RollbackTrigger] | None = None


class Spec(_Strict):
    environment: str | None = None
    model: ModelRef
    metrics: dict[str, Number] = Field(default_factory=dict)
    training: Training | None = None
    fairness: Fairness | None = None
    drift: Drift | None = None
    dependencies: list[Dependency] | None = None
    data_sources: list[DataSource] | None = None
    serving: ServingVersion | None = None
    inference: Inference = Field(default_factory=Inference)
    monitoring: Monitoring | None = None
    explainability: Explainability | None = None
    observability: Observability | None = None
    rollback: Rollback | None = None


class ModelDeployment(_Strict):
    api_version: Literal["mlifecycle.io/v1"] = Field(default=API_VERSION, alias="apiVersion")
    kind: Literal["ModelDeployment"] = KIND
    metadata: Metadata
    spec: Spec

    @model_validator(mode="before")
    @classmethod
    def _accept_published(cls, data: Any) -> Any:
        """Any entry point (not only `from_dict`) accepts the published spellings."""
        if not isinstance(data, dict):
            return data
        conversion = to_canonical(data)
        if conversion.problems:
            raise ValueError("; ".join(conversion.problems))
        return conversion.document

    def to_dict(self) -> dict[str, Any]:
        """The canonical document: camelCase where published, no empty optional sections."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def policy_input(self) -> dict[str, Any]:
        """What the governance policy sees as `input.manifest`."""
        return self.to_dict()


# --- published spellings -> canonical ------------------------------------------------------


@dataclass
class Conversion:
    """A document with published spellings rewritten to canonical ones.

    `origins` maps a canonical location to where the author wrote the value, so errors name
    the author's field; `problems` are values given twice with different contents.
    """

    document: Any
    origins: dict[Loc, Loc] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def move(
        self,
        source: dict[str, Any],
        key: str,
        source_loc: Loc,
        target: dict[str, Any],
        target_key: str,
        target_loc: Loc,
    ) -> None:
        value = source.pop(key)
        if target_key in target and target[target_key] != value:
            self.problems.append(
                f"{field_path((*source_loc, key))}: {value!r} conflicts with "
                f"{field_path((*target_loc, target_key))} ({target[target_key]!r}); give one"
            )
            return
        target[target_key] = value
        if (*target_loc, target_key) != (*source_loc, key):
            self.origins[(*target_loc, target_key)] = (*source_loc, key)


def to_canonical(document: Any) -> Conversion:
    """Rewrite the published spellings of `document` (a parsed YAML mapping) to canonical ones.

    Idempotent: a canonical document comes back unchanged. Shapes are not judged here (a
    `spec` that is not a mapping is left for validation to name).
    """
    conversion = Conversion(copy.deepcopy(document))
    spec = conversion.document.get("spec") if isinstance(conversion.document, dict) else None
    if not isinstance(spec, dict):
        return conversion
    _training_from_metrics(spec, conversion)
    _rename(spec.get("training"), TRAINING_RENAMES, ("spec", "training"), conversion)
    _rename(spec.get("fairness"), FAIRNESS_RENAMES, ("spec", "fairness"), conversion)
    _flat_resources(spec.get("inference"), conversion)
    _previous_version(spec, conversion)
    return conversion


def _training_from_metrics(spec: dict[str, Any], conversion: Conversion) -> None:
    metrics = spec.get("metrics")
    if not isinstance(metrics, dict) or not any(k in metrics for k in TRAINING_IN_METRICS):
        return
    if spec.get("training") is None:
        spec["training"] = {}
    training = spec["training"]
    if not isinstance(training, dict):
        return
    for key, target in TRAINING_IN_METRICS.items():
        if key in metrics:
            conversion.move(
                metrics, key, ("spec", "metrics"), training, target, ("spec", "training")
            )


def _rename(section: Any, renames: dict[str, str], loc: Loc, conversion: Conversion) -> None:
    if not isinstance(section, dict):
        return
    for published, canonical in renames.items():
        if published in section:
            conversion.move(section, published, loc, section, canonical, loc)


def _flat_resources(inference: Any, conversion: Conversion) -> None:
    if not isinstance(inference, dict) or not any(k in inference for k in FLAT_RESOURCES):
        return
    if inference.get("resources") is None:
        inference["resources"] = {}
    resources = inference["resources"]
    if not isinstance(resources, dict):
        return
    if resources.get("requests") is None:
        resources["requests"] = {}
    requests = resources["requests"]
    if not isinstance(requests, dict):
        return
    for key in FLAT_RESOURCES:
        if key in inference:
            conversion.move(
                inference,
                key,
                ("spec", "inference"),
                requests,
                key,
                ("spec", "inference", "resources", "requests"),
            )


def _previous_version(spec: dict[str, Any], conversion: Conversion) -> None:
    if "previous_version" not in spec:
        return
    previous = spec.pop("previous_version")
    if spec.get("serving") is not None:
        conversion.problems.append(
            "spec.previous_version: give either spec.previous_version or spec.serving, not both"
        )
        return
    conversion.origins[("spec", "serving")] = ("spec", "previous_version")
    if isinstance(previous, dict) and "inference" in previous:
        inference = previous.pop("inference")
        if not isinstance(inference, dict):
            conversion.problems.append(
                f"spec.previous_version.inference: expected a mapping, got {inference!r}"
            )
        else:
            for key in inference:
                if key != "latency_p99_ms":
                    conversion.problems.append(
                        f"{field_path(('spec', 'previous_version', 'inference', key))}: "
                        "unknown field (known: latency_p99_ms)"
                    )
            if "latency_p99_ms" in inference:
                conversion.move(
                    inference,
                    "latency_p99_ms",
                    ("spec", "previous_version", "inference"),
                    previous,
                    "latency_p99_ms",
                    ("spec", "serving"),
                )
    spec["serving"] = previous


# --- reading ---------------------------------------------------------------------------------


def from_dict(document: Any, origin: str = "manifest") -> ModelDeployment:
    """Validate a parsed document in either spelling and return the canonical model.

    Unknown kinds and fields, values of the wrong shape and values given twice are one
    ManifestError listing every problem, each with the field path as the author wrote it.
    """
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
    conversion = to_canonical(document)
    problems = list(conversion.problems)
    try:
        manifest = ModelDeployment.model_validate(conversion.document)
    except ValidationError as exc:
        problems.extend(describe(exc, ModelDeployment, conversion.origins))
    else:
        if not problems:
            return manifest
    raise ManifestError(f"{origin}: invalid ModelDeployment: {'; '.join(problems)}")


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
