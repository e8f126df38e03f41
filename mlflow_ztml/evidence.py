"""Registry facts -> `ModelDeployment`. The mapping of MLflow names comes from settings.

Sources, most specific first: the logged model's metrics (MLflow 3), the run's metrics, then
numeric tags of the model version and of the run (for fairness and drift, which evaluation
tools often record as tags). Fairness and drift metadata (`fairness.evaluation_date`,
`drift.monitored_features`, ...) come from tags of the same names. The training sample count is
the row count MLflow profiled for the logged training dataset; resources and monitoring come
from the target environment. A value that no source has stays missing.
"""

from __future__ import annotations

import contextlib
import json
import typing
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from packaging.requirements import InvalidRequirement

from mlflow_ztml import names
from mlflow_ztml.config import EnvironmentConfig, EvidenceMapping, Settings
from mlflow_ztml.manifest import (
    Alerting,
    DataSource,
    Dependency,
    Drift,
    Fairness,
    Inference,
    Metadata,
    ModelDeployment,
    ModelRef,
    Monitoring,
    ResourceQuantities,
    Resources,
    ServingVersion,
    Spec,
    Training,
    parse_requirement,
)
from mlflow_ztml.registry import Registry, VersionFacts

_FLAVOR_PREFERENCE = (
    "pytorch",
    "sklearn",
    "xgboost",
    "lightgbm",
    "catboost",
    "tensorflow",
    "keras",
    "onnx",
    "transformers",
    "sentence_transformers",
    "statsmodels",
    "prophet",
    "spark",
)
Section = TypeVar("Section", Fairness, Drift)
_KEPT_RUN_TAG_PREFIXES = ("mlflow.source.", "mlflow.user", "mlflow.runName")


def build(
    registry: Registry,
    settings: Settings,
    model_uri: str,
    environment: str,
    serving_version: str | None = None,
) -> ModelDeployment:
    """Read `model_uri` from MLflow and return the manifest a gate judges.

    `serving_version` names the version now serving in `environment` (for regression rules);
    when None, the version tagged `ztml.<env>.status=deployed` in the registry is used, if any.
    """
    return from_facts(registry, settings, registry.resolve(model_uri), environment, serving_version)


def from_facts(
    registry: Registry,
    settings: Settings,
    facts: VersionFacts,
    environment: str,
    serving_version: str | None = None,
) -> ModelDeployment:
    """`build()` for a version already resolved (the pipeline resolves it once, up front)."""
    env = settings.environment(environment)
    mapping = settings.evidence
    # Three independent MLflow reads (MLmodel, requirements.txt, the serving version's
    # evidence): in parallel, so the stage costs the slowest one, not their sum.
    with ThreadPoolExecutor(max_workers=3) as pool:
        info_read = pool.submit(registry.model_info, facts.uri)
        requirements_read = pool.submit(registry.requirements, facts.uri)
        serving_read = pool.submit(_serving, registry, mapping, facts, environment, serving_version)
        info, requirements, serving = (
            info_read.result(),
            requirements_read.result(),
            serving_read.result(),
        )
    return ModelDeployment(
        metadata=Metadata(
            name=deployment_name(facts.name),
            labels={
                "mlifecycle.io/model": facts.name,
                "mlifecycle.io/version": facts.version,
                "mlifecycle.io/environment": environment,
            },
        ),
        spec=Spec(
            environment=environment,
            model=_model_ref(facts, info),
            metrics=metrics_of(facts, mapping),
            training=training_of(facts, mapping),
            fairness=scores_section(
                Fairness, facts, mapping.fairness_prefixes, mapping.fairness_aliases
            ),
            drift=scores_section(Drift, facts, mapping.drift_prefixes, {}),
            dependencies=parse_requirements(requirements) if requirements is not None else None,
            data_sources=[_data_source(d) for d in facts.datasets] or None,
            serving=serving,
            inference=inference_defaults(env),
            monitoring=monitoring_of(env),
        ),
    )


def deployment_name(model_name: str) -> str:
    """A DNS-1123 label derived from the model name (what runtimes and Helm releases use)."""
    return names.model_label(model_name)


def inference_defaults(env: EnvironmentConfig) -> Inference:
    """The environment's sizing. Requests equal limits: that is what every runtime applies
    (the kubernetes runtime sets both, docker enforces the limit)."""
    defaults = env.inference
    quantities = ResourceQuantities(cpu=defaults.resources.cpu, memory=defaults.resources.memory)
    return Inference(
        replicas=defaults.replicas,
        resources=Resources(requests=quantities, limits=quantities.model_copy()),
        gpu=defaults.gpu,
        max_batch_size=defaults.max_batch_size,
        max_batch_delay_ms=defaults.max_batch_delay_ms,
        runtime=env.runtime,
    )


def monitoring_of(env: EnvironmentConfig) -> Monitoring:
    """The environment's declared monitoring; `enabled` unless it says otherwise (the serving
    runtime always exports metrics), its notification kinds as alerting channels unless it
    declares alerting itself."""
    monitoring = env.monitoring.model_copy(deep=True)
    if monitoring.enabled is None:
        monitoring.enabled = True
    if monitoring.alerting is None and env.notifications:
        channels = list(dict.fromkeys(target.kind for target in env.notifications))
        monitoring.alerting = Alerting(enabled=True, channels=channels)
    return monitoring


def training_of(facts: VersionFacts, mapping: EvidenceMapping) -> Training | None:
    """The training sample count: rows of the largest dataset logged as training data.

    MLflow profiles a pandas (or numpy, Spark, ...) dataset when it is logged; the profile's
    `num_rows` is the count. No training dataset, or none with a profile: None (missing).
    """
    counts = [
        rows
        for dataset in facts.datasets
        if dataset.get("context") in mapping.training_contexts
        and (rows := _profiled_rows(dataset.get("profile"))) is not None
    ]
    return Training(samples=max(counts)) if counts else None


def _profiled_rows(profile: Any) -> int | None:
    try:
        parsed = json.loads(profile) if isinstance(profile, str) else profile
    except json.JSONDecodeError:
        return None
    rows = parsed.get("num_rows") if isinstance(parsed, dict) else None
    return rows if isinstance(rows, int) and not isinstance(rows, bool) else None


def _model_ref(facts: VersionFacts, info: Any) -> ModelRef:
    flavors = sorted((info.flavors or {}).keys()) if info is not None else []
    signature = info.signature.to_dict() if info is not None and info.signature else None
    return ModelRef(
        name=facts.name,
        version=facts.version,
        uri=facts.uri,
        source=facts.source,
        run_id=facts.run_id,
        experiment_id=facts.experiment_id,
        model_id=facts.model_id,
        aliases=facts.aliases,
        flavors=flavors,
        framework=framework_of(flavors),
        signature=_decoded_signature(signature),
        has_input_example=bool(info is not None and info.saved_input_example_info),
        tags={k: v for k, v in facts.version_tags.items() if not k.startswith("ztml.")},
        run_tags={
            k: v
            for k, v in facts.run_tags.items()
            if not k.startswith("mlflow.") or k.startswith(_KEPT_RUN_TAG_PREFIXES)
        },
    )


def _decoded_signature(signature: dict[str, Any] | None) -> dict[str, Any] | None:
    """MLflow stores the schema parts as JSON strings; policies want structure."""
    if signature is None:
        return None
    decoded: dict[str, Any] = {}
    for key, value in signature.items():
        if isinstance(value, str):
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(value)
        if value is not None:
            decoded[key] = value
    return decoded


def framework_of(flavors: list[str]) -> str | None:
    """The ML framework a model was saved with: its most specific flavor."""
    for flavor in _FLAVOR_PREFERENCE:
        if flavor in flavors:
            return flavor
    others = [f for f in flavors if f != "python_function"]
    if others:
        return others[0]
    return "pyfunc" if flavors else None


def metrics_of(facts: VersionFacts, mapping: EvidenceMapping) -> dict[str, float]:
    """Canonical metric names from the mapping, plus any other metric under its own name."""
    observed = {**facts.run_metrics, **facts.model_metrics}
    prefixes = (*mapping.fairness_prefixes, *mapping.drift_prefixes)
    metrics: dict[str, float] = {}
    consumed: set[str] = set()
    for canonical, spellings in mapping.metrics.items():
        for spelling in spellings:
            if spelling in observed:
                metrics[canonical] = float(observed[spelling])
                consumed.update(s for s in spellings if s in observed)
                break
    for key, value in observed.items():
        if key not in consumed and not key.startswith(prefixes) and key not in metrics:
            metrics[key] = float(value)
    return metrics


def scores_section(
    section: type[Section], facts: VersionFacts, prefixes: list[str], aliases: dict[str, str]
) -> Section | None:
    """A fairness or drift section: numeric scores plus its metadata fields from tags.

    A tag `<prefix><field>` for a declared field of the section (`fairness.evaluation_date`,
    `drift.monitored_features`) fills that field; a list field takes a JSON list or a
    comma-separated string. None when MLflow has neither scores nor metadata.
    """
    declared = set(section.model_fields)
    scores = {
        k: v
        for k, v in (prefixed_values(facts, prefixes, aliases) or {}).items()
        if k not in declared
    }
    metadata: dict[str, Any] = {}
    for tags in (facts.run_tags, facts.version_tags):
        for key, raw in tags.items():
            prefix = next((p for p in prefixes if key.startswith(p)), None)
            name = key[len(prefix) :] if prefix is not None else None
            if name in declared:
                metadata[name] = _metadata_value(section, name, raw)
    if not scores and not metadata:
        return None
    return section.model_validate({**metadata, **scores})


def _metadata_value(section: type[Fairness] | type[Drift], name: str, raw: str) -> Any:
    annotation = section.model_fields[name].annotation
    if not any(typing.get_origin(arg) is list for arg in typing.get_args(annotation)):
        return raw
    with contextlib.suppress(json.JSONDecodeError):
        parsed = json.loads(raw)
        if isinstance(parsed, list):
            return [str(item) for item in parsed]
    return [item.strip() for item in raw.split(",") if item.strip()]


def prefixed_values(
    facts: VersionFacts, prefixes: list[str], aliases: dict[str, str]
) -> dict[str, float] | None:
    """Values named `<prefix><key>` among metrics and numeric tags; None when there are none."""
    found: dict[str, float] = {}
    sources: list[dict[str, Any]] = [
        facts.run_tags,
        facts.version_tags,
        facts.run_metrics,
        facts.model_metrics,
    ]
    for source in sources:
        for key, raw in source.items():
            prefix = next((p for p in prefixes if key.startswith(p)), None)
            if prefix is None:
                continue
            value = _as_float(raw)
            if value is None:
                continue
            name = key[len(prefix) :]
            found[aliases.get(name, name)] = value
    return found or None


def _as_float(raw: Any) -> float | None:
    try:
        return float(raw)
    except (TypeError, ValueError):
        return None


def parse_requirements(text: str) -> list[Dependency]:
    """requirements.txt -> dependencies; a line pip could not parse is kept, unpinned."""
    dependencies: list[Dependency] = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        try:
            dependencies.append(parse_requirement(line))
        except InvalidRequirement:
            dependencies.append(Dependency(name=line, requirement=line))
    return dependencies


def _data_source(dataset: dict[str, Any]) -> DataSource:
    return DataSource(
        name=dataset.get("name"),
        digest=dataset.get("digest"),
        source=_source_location(dataset.get("source")),
        source_type=dataset.get("source_type"),
        context=dataset.get("context"),
    )


def _source_location(source: Any) -> str | None:
    """MLflow stores a dataset source as JSON (`{"uri": ...}`, `{"url": ...}`, ...)."""
    if source is None:
        return None
    try:
        parsed = json.loads(source)
    except (TypeError, json.JSONDecodeError):
        return str(source)
    if isinstance(parsed, dict):
        for key in ("uri", "url", "path", "table_name", "source", "repo_id"):
            if parsed.get(key):
                return str(parsed[key])
    return str(source)


def _serving(
    registry: Registry,
    mapping: EvidenceMapping,
    facts: VersionFacts,
    environment: str,
    serving_version: str | None,
) -> ServingVersion | None:
    if serving_version is None:
        deployed = [
            v
            for v in registry.versions_tagged(facts.name, f"ztml.{environment}.status", "deployed")
            if v != facts.version
        ]
        serving_version = deployed[-1] if deployed else None
    if serving_version is None or serving_version == facts.version:
        return None
    current = registry.resolve(f"models:/{facts.name}/{serving_version}")
    return ServingVersion(version=current.version, metrics=metrics_of(current, mapping))
