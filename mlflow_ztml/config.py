"""Settings: one `ztml.yaml` plus `ZTML_*` environment variables, read with pydantic-settings.

Where the file comes from: `ZTML_CONFIG`, else `./ztml.yaml`, else built-in defaults only.
Environment variables win over the file (`ZTML_MLFLOW__TRACKING_URI`, `ZTML_POLICY__OPA_URL`,
`ZTML_DEFAULT_ENVIRONMENT`, ...; nested keys use `__`).

Environments are declared by name. `local`, `staging` and `production` always exist; whatever a
file says about them is merged over the built-in definition, so a user only writes what differs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from mlflow_ztml.errors import ConfigError
from mlflow_ztml.manifest import Monitoring

BUILTIN_ENVIRONMENTS = ("local", "staging", "production")
RuntimeName = Literal["process", "docker", "kubernetes"]


class Resources(BaseModel):
    """Kubernetes-style resource quantities for one replica."""

    model_config = ConfigDict(extra="forbid")
    cpu: str = "500m"
    memory: str = "512Mi"


class InferenceDefaults(BaseModel):
    """How a model runs in an environment unless the manifest or `-C` options say otherwise."""

    model_config = ConfigDict(extra="forbid")
    replicas: int = Field(default=1, ge=1)
    resources: Resources = Field(default_factory=Resources)
    gpu: int = Field(default=0, ge=0)
    max_batch_size: int = Field(default=32, ge=1)
    max_batch_delay_ms: float = Field(default=2.0, ge=0)


class EnvironmentConfig(BaseModel):
    """One target environment: where models run and which policy data judges them.

    `policy_profile` names the built-in threshold set this environment starts from; an
    environment that is not built in defaults to `production`, the strictest (fail closed).
    `policy` holds overrides deep-merged over that profile, e.g.
    `{"governance": {"min_accuracy": 0.9}}`.
    """

    model_config = ConfigDict(extra="forbid")
    runtime: RuntimeName = "process"
    policy_profile: str | None = None
    policy: dict[str, Any] = Field(default_factory=dict)
    inference: InferenceDefaults = Field(default_factory=InferenceDefaults)
    notifications: list[NotificationTarget] = Field(default_factory=list)
    kubernetes: KubernetesConfig | None = None
    # How deployments here are watched, in the manifest's own shape (spec.monitoring); evidence
    # copies it into every manifest for this environment. `enabled`, unless set, is true (the
    # serving runtime always exports Prometheus metrics); `alerting`, unless declared, lists
    # the kinds of `notifications` as channels.
    monitoring: Monitoring = Field(default_factory=Monitoring)
    # Whether only signed model files may run here (OpenSSF model-signing: signed when the gate
    # allows a version, verified by serving before loading). Unset: true exactly when the
    # policy profile is `production`.
    require_signed_models: bool | None = None


class PolicyConfig(BaseModel):
    """Which Rego engine decides, and where policies and data come from.

    `engine: regorus` evaluates in-process. `engine: opa` asks an OPA server at `opa_url`;
    with `opa_mode: load` ztml pushes its policies and data there first, with `opa_mode: query`
    it trusts what the server already serves (policies managed by a bundle server, say).
    """

    model_config = ConfigDict(extra="forbid")
    engine: Literal["regorus", "opa"] = "regorus"
    opa_url: str | None = None
    opa_mode: Literal["load", "query"] = "load"
    opa_timeout_seconds: float = Field(default=5.0, gt=0)
    policy_dir: Path | None = None
    data_files: list[Path] = Field(default_factory=list)
    # regorus: how many decisions to remember by their input (0: evaluate every time).
    # A decision is a function of the policies, the data and the input, all fixed per engine.
    decision_cache_size: int = Field(default=1024, ge=0)


class EvidenceMapping(BaseModel):
    """How MLflow names map onto manifest fields.

    `metrics`: manifest metric name -> MLflow metric (or tag) names tried in order.
    `fairness_prefixes` / `drift_prefixes`: metrics or tags whose names start with one of these
    are fairness / drift values (the rest of the name is the key). `fairness_aliases` maps
    common spellings onto the names the policies know.
    """

    model_config = ConfigDict(extra="forbid")
    metrics: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "accuracy": ["accuracy", "accuracy_score", "acc", "val_accuracy", "test_accuracy"],
            "f1_score": ["f1_score", "f1", "f1-score", "val_f1", "test_f1"],
            "precision": ["precision", "precision_score"],
            "recall": ["recall", "recall_score"],
            "roc_auc": ["roc_auc", "auc", "roc_auc_score"],
            "log_loss": ["log_loss", "logloss"],
            "rmse": ["rmse", "root_mean_squared_error"],
            "mae": ["mae", "mean_absolute_error"],
            "r2": ["r2", "r2_score"],
        }
    )
    fairness_prefixes: list[str] = Field(default_factory=lambda: ["fairness.", "fairness_"])
    drift_prefixes: list[str] = Field(default_factory=lambda: ["drift.", "drift_"])
    # Datasets logged with one of these `mlflow.log_input` contexts are training data: the
    # largest one's row count (its profile's num_rows) is `spec.training.samples`.
    training_contexts: list[str] = Field(default_factory=lambda: ["training", "train"])
    fairness_aliases: dict[str, str] = Field(
        default_factory=lambda: {
            "demographic_parity": "demographic_parity_difference",
            "dp": "demographic_parity_difference",
            "equalized_odds": "equalized_odds_difference",
            "eo": "equalized_odds_difference",
        }
    )


class MlflowConfig(BaseModel):
    """How ztml talks to MLflow. `tracking_uri` falls back to `MLFLOW_TRACKING_URI`."""

    model_config = ConfigDict(extra="forbid")
    tracking_uri: str | None = None
    registry_uri: str | None = None
    request_timeout_seconds: int = Field(default=10, ge=1)
    request_max_retries: int = Field(default=2, ge=0)
    audit_experiment: str = "ztml-deployments"
    ui_url: str | None = Field(
        default=None,
        description="MLflow UI base for links in notifications (default: tracking URI)",
    )


class FlavorPackage(BaseModel):
    """A package a model flavor loads with: MLflow writes the flavor (and its config) to MLmodel.

    The rule applies when the model has `flavor` and every `when` key of that flavor's MLmodel
    config fully matches its regular expression (e.g. sklearn `serialization_format: skops`).
    `package` is the distribution pip installs (any of `alternatives` counts as well, e.g.
    `tensorflow-cpu`); `module` is what the `process` runtime must be able to import.
    """

    model_config = ConfigDict(extra="forbid")
    flavor: str
    package: str
    module: str
    when: dict[str, str] = Field(default_factory=dict)
    alternatives: list[str] = Field(default_factory=list)


def _default_flavor_packages() -> list[FlavorPackage]:
    rows: list[tuple[str, str, str, dict[str, str], list[str]]] = [
        ("sklearn", "scikit-learn", "sklearn", {}, []),
        ("sklearn", "skops", "skops", {"serialization_format": "skops"}, []),
        ("sklearn", "cloudpickle", "cloudpickle", {"serialization_format": "cloudpickle"}, []),
        ("pytorch", "torch", "torch", {}, []),
        (
            "python_function",
            "cloudpickle",
            "cloudpickle",
            {"pickle_module_name": r"mlflow\.pytorch\.pickle_module"},
            [],
        ),
        ("python_function", "cloudpickle", "cloudpickle", {"python_model": r".*\.pkl"}, []),
        ("xgboost", "xgboost", "xgboost", {}, ["xgboost-cpu"]),
        ("lightgbm", "lightgbm", "lightgbm", {}, []),
        ("catboost", "catboost", "catboost", {}, []),
        ("tensorflow", "tensorflow", "tensorflow", {}, ["tensorflow-cpu", "tf-nightly"]),
        ("keras", "keras", "keras", {}, []),
        ("onnx", "onnx", "onnx", {}, []),
        ("onnx", "onnxruntime", "onnxruntime", {}, ["onnxruntime-gpu"]),
        ("transformers", "transformers", "transformers", {}, []),
        ("sentence_transformers", "sentence-transformers", "sentence_transformers", {}, []),
        ("statsmodels", "statsmodels", "statsmodels", {}, []),
        ("prophet", "prophet", "prophet", {}, []),
        ("spark", "pyspark", "pyspark", {}, []),
    ]
    return [
        FlavorPackage(flavor=f, package=p, module=m, when=w, alternatives=a)
        for f, p, m, w, a in rows
    ]


class RequirementsCheckConfig(BaseModel):
    """The check, before any build, that a model's requirements can be installed and loaded.

    Image runtimes: every requirement is looked up on the indexes the build uses
    (`pip_index_url` or `default_index_url`, `pip_extra_index_url`, `pip_find_links`, and
    index options inside the model's requirements.txt) through the simple API (PEP 691 JSON or
    PEP 503 HTML), `request_timeout_seconds` per request and `timeout_seconds` for the whole
    check, cached for one run. `default_index_url`: the index pip uses when `pip_index_url`
    is unset (default: pip's own default). `flavor_packages`: what each MLflow flavor loads
    with; a requirement list without it is a finding (`process` runtime: not importable).
    `enabled: false` skips it; the policy input then says so and the policy decides.
    """

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    default_index_url: str | None = None
    timeout_seconds: float = Field(default=20, gt=0)
    request_timeout_seconds: float = Field(default=5, gt=0)
    max_parallel_requests: int = Field(default=8, ge=1)
    flavor_packages: list[FlavorPackage] = Field(default_factory=_default_flavor_packages)


class BuildConfig(BaseModel):
    """How serving images are built and pushed (docker runtime, kubernetes runtime).

    The image is `REGISTRY/REPOSITORY/<model>:v<version>-<env>`, deployed by digest. With no
    `registry` (or `push: false`) the image stays in the local engine and is deployed by its
    image id. Credentials never live here: ECR registries log in through boto3; any other
    registry reads the password from the environment variable named by
    `registry_password_env`, else from Docker's own credential store (`docker login`).
    `no_cache: true` rebuilds every layer (to pick up patched packages behind unchanged pins).
    `requirements_check`: before any build, whether these indexes can serve the model's
    requirements and whether they include what its flavor loads with (docs/images.md).
    """

    model_config = ConfigDict(extra="forbid")
    base_image: str = "python:3.11-slim"
    registry: str | None = None
    repository: str = "ztml-models"
    extra_ca_certificates: list[Path] = Field(default_factory=list)
    pip_index_url: str | None = None
    pip_extra_index_url: str | None = None
    pip_find_links: str | None = None
    build_args: dict[str, str] = Field(default_factory=dict)
    push: bool = True
    registry_username: str | None = None
    registry_password_env: str | None = None
    ecr_region: str | None = None
    network_mode: str | None = None
    timeout_seconds: float = Field(default=1800, gt=0)
    no_cache: bool = False
    requirements_check: RequirementsCheckConfig = Field(default_factory=RequirementsCheckConfig)


class ScanConfig(BaseModel):
    """How images are scanned (trivy) before they may run.

    `trivy_binary` defaults to the `trivy` next to the running Python (the `[scan]` extra),
    else on PATH. The vulnerability database is downloaded into `cache_dir` (default
    `$ZTML_HOME/trivy`) unless `offline` is set; `db_repository` points at a mirror. A scan
    that cannot run a scanner says so in its report and the `ztml.scan` policy decides.
    `enabled: false` skips scanning; the report then says every scanner was disabled, which
    the policy judges like any other gap (production denies by default).
    """

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    trivy_binary: str | None = None
    timeout_seconds: float = Field(default=600, gt=0)
    cache_dir: Path | None = None
    offline: bool = False
    db_repository: str | None = None
    scan_secrets: bool = True
    scan_misconfigurations: bool = True
    sbom: bool = True


class SigningConfig(BaseModel):
    """How ztml signs what passed its gates and verifies it before it runs (docs/images.md).

    Key references (`key`, `public_key`):
    - a PEM file path (`~/.ztml/keys/ztml.key`, made by `ztml keys generate`);
    - `env://VAR`: the PEM itself in environment variable VAR (the embedded default for CI);
    - `awskms://[ENDPOINT]/KEY-ID-or-ARN-or-alias/NAME` (cosign's form): an AWS KMS key of spec
      ECC_NIST_P256 that never leaves KMS; the endpoint (e.g. `localhost:4566`) is optional.
    `key` signs (the pipeline), `public_key` verifies (runtimes, `ztml verify`); with only `key`
    set, verification uses its public half. An encrypted private PEM reads its passphrase from
    the environment variable named by `passphrase_env`; never from this file.
    `kms_region` overrides the region (default: the key ARN's region, else the AWS chain).
    Whether an unsigned image may run is policy data per environment
    (`data.ztml.environments[ENV].signature`), not a setting here.
    """

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    key: str | None = None
    public_key: str | None = None
    passphrase_env: str | None = None
    kms_region: str | None = None
    attest: bool = True
    timeout_seconds: float = Field(default=30, gt=0)


class LeaderElectionConfig(BaseModel):
    """Several controller replicas in Kubernetes: only the holder of a coordination.k8s.io
    Lease reconciles. Off by default (one process needs no election).

    `namespace` defaults to the pod's own namespace (the service account's namespace file),
    `identity` to the pod name (POD_NAME or the hostname) plus a random suffix. As in
    client-go, a leader that cannot renew for `renew_deadline_seconds` stops leading before
    another replica may take over after `lease_duration_seconds`.
    """

    model_config = ConfigDict(extra="forbid")
    enabled: bool = False
    lease_name: str = "ztml-controller"
    namespace: str | None = None
    identity: str | None = None
    kubeconfig: Path | None = None
    lease_duration_seconds: float = Field(default=15, gt=0)
    renew_deadline_seconds: float = Field(default=10, gt=0)
    retry_period_seconds: float = Field(default=2, gt=0)


class ControllerConfig(BaseModel):
    """The registry controller: which registry facts mean "this version should run where".

    Desired state per (model, environment) comes from `aliases` (alias -> environment),
    legacy `stages` (stage -> environment) and an explicit `deploy_tag` on a version
    (value: one environment or a comma-separated list). When sources disagree for one
    environment: explicit tag > alias > stage; within one source the newest version wins.
    `models`: "all", "tagged" (registered models tagged `managed_tag=true`) or a list of names.
    `prune[env]`: undeploy when nothing asks for a version in `env` any more.
    The webhook secret is never read from this file: `ZTML_WEBHOOK_SECRET` (and
    `ZTML_WEBHOOK_PREVIOUS_SECRET` during rotation, or `*_FILE` variants).
    """

    model_config = ConfigDict(extra="forbid")
    aliases: dict[str, str] = Field(
        default_factory=lambda: {"staging": "staging", "champion": "production"}
    )
    stages: dict[str, str] = Field(
        default_factory=lambda: {"Staging": "staging", "Production": "production"}
    )
    poll_interval_seconds: float = Field(default=30, gt=0)
    resync_interval_seconds: float = Field(
        default=300,
        gt=0,
        description="a full registry listing at least this often (with a webhook secret; "
        "without one every poll is full): catches lost webhooks and deleted models; polls in "
        "between read only models whose last_updated_timestamp moved",
    )
    watermark_margin_seconds: float = Field(
        default=30,
        ge=0,
        description="how far behind the newest last_updated_timestamp seen an incremental "
        "poll still looks (commit lag, clock skew between MLflow replicas)",
    )
    models: Literal["all", "tagged"] | list[str] = "all"
    prune: dict[str, bool] = Field(default_factory=dict)
    workers: int = Field(default=2, ge=1)
    deploy_tag: str = "ztml.deploy"
    managed_tag: str = "ztml.managed"
    signature_tolerance_seconds: float = Field(default=300, gt=0)
    dedup_max_entries: int = Field(default=100_000, ge=100)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    backoff_base_seconds: float = Field(default=2, gt=0)
    backoff_max_seconds: float = Field(default=300, gt=0)
    ready_timeout_seconds: float = Field(default=120, gt=0)
    shutdown_grace_seconds: float = Field(default=30, ge=0)
    webhook_name: str = "ztml-controller"
    status_decisions: int = Field(
        default=20, ge=1, le=1000, description="recent gate decisions kept for /status and /"
    )
    leader_election: LeaderElectionConfig = Field(default_factory=LeaderElectionConfig)


class NotificationTarget(BaseModel):
    """One place to tell people about outcomes.

    The URL (a Slack webhook URL is itself a credential) and the signing secret come from an
    environment variable (`url_env`, `secret_env`) or a file (`url_file`, `secret_file`, e.g. a
    mounted Kubernetes Secret), never from ztml.yaml itself. `outcomes` lists the outcomes that
    notify (not `on`, which YAML reads as a boolean).
    """

    model_config = ConfigDict(extra="forbid")
    kind: Literal["slack", "webhook"]
    name: str | None = None
    url_env: str | None = None
    url_file: Path | None = None
    secret_env: str | None = None
    secret_file: Path | None = None
    outcomes: list[str] = Field(
        default_factory=lambda: ["rejected", "failed", "rolled_back", "deployed"]
    )
    timeout_seconds: float = Field(default=5.0, gt=0)
    max_attempts: int = Field(default=4, ge=1)
    backoff_seconds: float = Field(default=0.5, ge=0)

    @model_validator(mode="after")
    def _one_url_source(self) -> NotificationTarget:
        if (self.url_env is None) == (self.url_file is None):
            raise ValueError("give exactly one of url_env or url_file (never the URL itself)")
        if self.secret_env is not None and self.secret_file is not None:
            raise ValueError("give at most one of secret_env or secret_file")
        return self


class KubernetesConfig(BaseModel):
    """Where and how the kubernetes runtime installs Helm releases in one environment.

    `namespace`, `kubeconfig`, `context`: the target (no kubeconfig: `KUBECONFIG`, then
    `~/.kube/config`, then the in-cluster service account). `preset`: the chart's sizing preset
    (default: `dev` for the `local` policy profile, else the profile's name when it is a preset,
    else `production`). `values`: chart values deep-merged over what ztml computes from the
    deployment (ingress, IRSA role, network policy namespaces...); the model identity, image
    and labels always come from the deployment. `approved_registries`: image prefixes the
    `ztml.deployment` policy accepts here, added to the policy data's own list.
    `helm`: `auto` uses helm-python-sdk when installed, else the `helm` (v4) binary on PATH.
    `helm_test`: run the chart's `helm test` hook (in-cluster /predict) before verify.
    `verify_via`: how ztml's own verify reaches the pods: `service` (the cluster DNS name:
    ztml runs inside the cluster), `port-forward` (through the API server), or `auto`
    (service when running in a pod, else port-forward).
    """

    model_config = ConfigDict(extra="forbid")
    namespace: str = Field(
        default="ztml", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63
    )
    kubeconfig: Path | None = None
    context: str | None = None
    preset: Literal["dev", "staging", "production"] | None = None
    values: dict[str, Any] = Field(default_factory=dict)
    timeout_seconds: float = Field(default=600, gt=0)
    approved_registries: list[str] = Field(default_factory=list)
    chart: Path | None = None
    helm: Literal["auto", "sdk", "binary"] = "auto"
    helm_test: bool = True
    verify_via: Literal["auto", "service", "port-forward"] = "auto"
    max_history: int = Field(default=10, ge=1)
    create_namespace: bool = False


def _builtin_environments() -> dict[str, dict[str, Any]]:
    return {
        "local": {"runtime": "process", "policy_profile": "local"},
        "staging": {
            "runtime": "process",
            "policy_profile": "staging",
            "inference": {"replicas": 2, "resources": {"cpu": "1000m", "memory": "1Gi"}},
        },
        "production": {
            "runtime": "process",
            "policy_profile": "production",
            "inference": {"replicas": 3, "resources": {"cpu": "2000m", "memory": "4Gi"}},
        },
    }


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Return `base` with `override` merged in; nested dicts merge, everything else replaces."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class Settings(BaseSettings):
    """Everything ztml is configured with. Build it with `load_settings()`."""

    model_config = SettingsConfigDict(
        env_prefix="ZTML_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    default_environment: str = "local"
    home: Path = Field(default_factory=lambda: Path.home() / ".ztml")
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    evidence: EvidenceMapping = Field(default_factory=EvidenceMapping)
    environments: dict[str, EnvironmentConfig] = Field(default_factory=dict)
    build: BuildConfig = Field(default_factory=BuildConfig)
    scan: ScanConfig = Field(default_factory=ScanConfig)
    signing: SigningConfig = Field(default_factory=SigningConfig)
    controller: ControllerConfig = Field(default_factory=ControllerConfig)

    @field_validator("environments", mode="before")
    @classmethod
    def _merge_builtin_environments(cls, value: Any) -> dict[str, Any]:
        declared = dict(value or {})
        merged: dict[str, Any] = _builtin_environments()
        for name, env in declared.items():
            if isinstance(env, EnvironmentConfig):
                env = env.model_dump(exclude_unset=True)
            merged[name] = deep_merge(merged.get(name, {}), env or {})
        return merged

    @model_validator(mode="after")
    def _headline_keys_are_free(self) -> Settings:
        # `ztml.<env>` is each environment's headline tag on a version: it must not be a tag
        # ztml already uses for something else (the controller's opt-in tags).
        taken = {self.controller.deploy_tag, self.controller.managed_tag, "ztml.format"}
        for name in self.environments:
            if f"ztml.{name}" in taken:
                raise ValueError(
                    f"environment {name!r} cannot be used: its headline tag 'ztml.{name}' is "
                    "already one of ztml's registry tags; rename the environment"
                )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = config_path()
        if path is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)

    def environment(self, name: str | None = None) -> EnvironmentConfig:
        """The named environment (default: `default_environment`), or a ConfigError."""
        name = name or self.default_environment
        try:
            return self.environments[name]
        except KeyError:
            known = ", ".join(sorted(self.environments))
            raise ConfigError(
                f"unknown environment {name!r}; declare it under 'environments:' in ztml.yaml "
                f"(known: {known})"
            ) from None

    def policy_profile(self, name: str) -> str:
        env = self.environment(name)
        if env.policy_profile:
            return env.policy_profile
        return name if name in BUILTIN_ENVIRONMENTS else "production"

    def tracking_uri(self) -> str | None:
        return self.mlflow.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")


def config_path() -> Path | None:
    """`ZTML_CONFIG` if set (it must exist), else `./ztml.yaml` if present, else None."""
    explicit = os.environ.get("ZTML_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"ZTML_CONFIG points at {path}, which is not a readable file")
        return path
    local = Path("ztml.yaml")
    return local if local.is_file() else None


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment and ztml.yaml; raise ConfigError with the bad field."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        )
        where = config_path() or "environment variables"
        raise ConfigError(f"invalid ztml configuration ({where}): {problems}") from None
    except Exception as exc:  # a YAML syntax error surfaces from the settings source
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"cannot read ztml configuration: {exc}") from exc
