"""`kubernetes` runtime: one Helm release of `helm/ztml-inference` per deployment.

How a deploy goes (each step is the only place that does it):
1. `values_for(spec)` computes the chart values: the environment's preset, the deployment's
   replicas/resources/GPU/batching, the environment's `kubernetes.values`, then the identity
   (model, version, image by digest, fingerprint) that nothing may override.
2. `render(spec)` renders the chart offline with the real Helm engine and returns the objects.
3. The objects go through the `ztml.deployment` Rego package. A deny raises
   `DeploymentPolicyError` (the pipeline's `rejected`) and nothing is applied.
4. Idempotence: a release that is `deployed` with the same fingerprint and values hash
   (release labels) is a no-op.
5. `helm install` / `helm upgrade` with wait and rollback-on-failure (Helm 4's `--atomic`):
   pods that never become ready are rolled back by Helm itself.
6. `helm test` runs the chart's test hook inside the cluster (POST /predict with the model's
   input example), then `verify` is called with an endpoint this process can reach: the
   Service DNS name when ztml runs in the cluster, else a local port-forward to one of the new
   pods through the API server (a ClusterIP is not reachable from outside the cluster).
7. When the test or verify fails, the release is rolled back to the revision that served
   before (or uninstalled when there was none) and the error propagates.

`get`/`list`/`delete` read Helm releases (labelled `ztml.io/managed=true`); the verbatim model
facts come from the Deployment's annotations in the release manifest.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import re
import select
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import yaml

from mlflow_ztml.config import KubernetesConfig, deep_merge
from mlflow_ztml.errors import ConfigError, DeployError, DeploymentPolicyError, PolicyError
from mlflow_ztml.runtimes.base import DeploymentSpec, DeploymentStatus, State, Verifier

if TYPE_CHECKING:
    from mlflow_ztml.config import Settings
    from mlflow_ztml.policy.engine import Decision, PolicyEngine

CHART_NAME = "ztml-inference"
POLICY_PACKAGE = "ztml.deployment"
MANAGED_LABEL = "ztml.io/managed"
PRESETS = ("dev", "staging", "production")
_RELEASE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
# Release labels that together say "this exact deployment is what runs" (a no-op deploy).
_SAME_DEPLOYMENT = ("ztml.io/fingerprint", "ztml.io/values-hash")
_HELM_STATES: dict[str, State] = {
    "deployed": "running",
    "pending-install": "starting",
    "pending-upgrade": "starting",
    "pending-rollback": "starting",
    "failed": "failed",
    "superseded": "stopped",
    "uninstalling": "stopped",
    "uninstalled": "stopped",
}


# --- Helm engines --------------------------------------------------------------------------


class HelmBackend(Protocol):
    """The Helm actions the runtime needs, for one namespace of one cluster.

    Release summaries are dicts with at least `name`, `namespace`, `revision` (int),
    `status` (Helm's status string), `labels` (release labels) and, from `status`, `manifest`.
    Every method raises DeployError with Helm's message when Helm fails.
    """

    namespace: str

    def render(self, chart: Path, release: str, values: dict[str, Any]) -> dict[str, str]: ...

    def status(self, release: str) -> dict[str, Any] | None: ...

    def list(self) -> list[dict[str, Any]]: ...

    def history(self, release: str) -> list[dict[str, Any]]: ...

    def install(
        self, chart: Path, release: str, values: dict[str, Any], labels: dict[str, str]
    ) -> dict[str, Any]:
        return self._apply(
            "install",
            chart,
            release,
            values,
            labels,
            create_namespace=self._settings.create_namespace,
        )

    def upgrade(
        self, chart: Path, release: str, values: dict[str, Any], labels: dict[str, str]
    ) -> dict[str, Any]:
        return self._apply(
            "upgrade",
            chart,
            release,
            values,
            labels,
            cleanup_on_fail=True,
            reset_values=True,
            max_history=self._settings.max_history,
        )

    def _apply(
        self,
        action: str,
        chart: Path,
        release: str,
        values: dict[str, Any],
        labels: dict[str, str],
        **extra: Any,
    ) -> dict[str, Any]:
        """install/upgrade share waiting, rollback-on-failure (Helm 4's --atomic) and labels."""
        summary: dict[str, Any] = self._call(
            action,
            getattr(self._cfg(), action),
            str(chart),
            release,
            values,
            namespace=self.namespace,
            timeout=self._timeout,
            wait="watcher",
            rollback_on_failure=True,
            labels=labels,
            description=_description(labels),
            **extra,
        )
        return summary

    def rollback(self, release: str, revision: int) -> None: ...

    def uninstall(self, release: str) -> None: ...

    def test(self, release: str) -> str: ...


class SdkHelm:
    """Helm v4 through helm-python-sdk (the Go SDK as a shared library; no binary needed)."""

    def __init__(self, config: KubernetesConfig) -> None:
        import helm_python

        self._helm = helm_python
        self.namespace = config.namespace
        self._settings = config
        self._config: Any = None
        self._lock = threading.Lock()

    def _cfg(self) -> Any:
        with self._lock:
            if self._config is None:
                self._config = self._helm.Config(
                    kubeconfig_path=self._settings.kubeconfig,
                    kube_context=self._settings.context,
                    namespace=self.namespace,
                )
            return self._config

    @property
    def _timeout(self) -> int:
        return int(self._settings.timeout_seconds)

    def _call(self, what: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except self._helm.HelmNotFoundError:
            raise
        except self._helm.HelmError as exc:
            raise DeployError(f"helm {what} failed in namespace {self.namespace}: {exc}") from None

    def render(self, chart: Path, release: str, values: dict[str, Any]) -> dict[str, str]:
        try:
            with self._helm.Chart.load(chart) as loaded:
                rendered: dict[str, str] = loaded.render(
                    values, name=release, namespace=self.namespace, is_install=True
                )
                return rendered
        except self._helm.HelmError as exc:
            raise DeployError(f"cannot render chart {chart} for {release}: {exc}") from None

    def status(self, release: str) -> dict[str, Any] | None:
        try:
            summary: dict[str, Any] = self._call("status", self._cfg().status, release)
        except self._helm.HelmNotFoundError:
            return None
        return summary

    def list(self) -> list[dict[str, Any]]:
        releases: list[dict[str, Any]] = self._call("list", self._cfg().list, all_states=True)
        return releases

    def history(self, release: str) -> list[dict[str, Any]]:
        try:
            revisions: list[dict[str, Any]] = self._call("history", self._cfg().history, release)
        except self._helm.HelmNotFoundError:
            return []
        return revisions

    def install(
        self, chart: Path, release: str, values: dict[str, Any], labels: dict[str, str]
    ) -> dict[str, Any]:
        summary: dict[str, Any] = self._call(
            "install",
            self._cfg().install,
            str(chart),
            release,
            values,
            namespace=self.namespace,
            timeout=self._timeout,
            wait="watcher",
            rollback_on_failure=True,
            create_namespace=self._settings.create_namespace,
            labels=labels,
            description=_description(labels),
        )
        return summary

    def upgrade(
        self, chart: Path, release: str, values: dict[str, Any], labels: dict[str, str]
    ) -> dict[str, Any]:
        summary: dict[str, Any] = self._call(
            "upgrade",
            self._cfg().upgrade,
            str(chart),
            release,
            values,
            namespace=self.namespace,
            timeout=self._timeout,
            wait="watcher",
            rollback_on_failure=True,
            cleanup_on_fail=True,
            reset_values=True,
            max_history=self._settings.max_history,
            labels=labels,
            description=_description(labels),
        )
        return summary

    def rollback(self, release: str, revision: int) -> None:
        self._call(
            "rollback",
            self._cfg().rollback,
            release,
            version=revision,
            timeout=self._timeout,
            wait="watcher",
        )

    def uninstall(self, release: str) -> None:
        self._call(
            "uninstall",
            self._cfg().uninstall,
            release,
            timeout=self._timeout,
            wait="watcher",
            ignore_not_found=True,
        )

    def test(self, release: str) -> str:
        result = self._call("test", self._cfg().test, release, timeout=self._timeout, logs=True)
        return str(result.get("logs") or "") if isinstance(result, dict) else ""


class BinaryHelm:
    """Helm v4 through the `helm` binary (flags as in Helm 4: `--rollback-on-failure`,
    `--wait=watcher`). Used when helm-python-sdk is not installed."""

    def __init__(self, config: KubernetesConfig, binary: str) -> None:
        self.namespace = config.namespace
        self._settings = config
        self._binary = binary

    def _base(self) -> list[str]:
        command = [self._binary, "--namespace", self.namespace]
        if self._settings.kubeconfig:
            command += ["--kubeconfig", str(self._settings.kubeconfig)]
        if self._settings.context:
            command += ["--kube-context", self._settings.context]
        return command

    def _run(self, what: str, args: list[str], *, missing_ok: bool = False) -> str | None:
        timeout = self._settings.timeout_seconds + 60
        try:
            done = subprocess.run(
                self._base() + args, capture_output=True, text=True, timeout=timeout, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DeployError(f"helm {what} could not run: {exc}") from None
        if done.returncode != 0:
            if missing_ok and "not found" in done.stderr:
                return None
            raise DeployError(
                f"helm {what} failed in namespace {self.namespace}: {done.stderr.strip()[-2000:]}"
            )
        return done.stdout

    def _timeout_flag(self) -> str:
        return f"--timeout={int(self._settings.timeout_seconds)}s"

    @contextlib.contextmanager
    def _values_file(self, values: dict[str, Any]) -> Iterator[str]:
        with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="ztml-values-") as handle:
            json.dump(values, handle)
            handle.flush()
            yield handle.name

    def render(self, chart: Path, release: str, values: dict[str, Any]) -> dict[str, str]:
        with self._values_file(values) as path:
            out = self._run("template", ["template", release, str(chart), "-f", path]) or ""
        return {"manifest.yaml": out}

    def status(self, release: str) -> dict[str, Any] | None:
        out = self._run("status", ["status", release, "-o", "json"], missing_ok=True)
        if out is None:
            return None
        raw = json.loads(out)
        return {
            "name": raw.get("name", release),
            "namespace": raw.get("namespace", self.namespace),
            "revision": int(raw.get("version") or 0),
            "status": (raw.get("info") or {}).get("status", ""),
            "labels": raw.get("labels") or {},
            "manifest": raw.get("manifest", ""),
        }

    def list(self) -> list[dict[str, Any]]:
        out = self._run("list", ["list", "--all", "-o", "json", f"--selector={MANAGED_LABEL}=true"])
        return [
            {
                "name": r["name"],
                "namespace": r.get("namespace", self.namespace),
                "revision": int(r.get("revision") or 0),
                "status": r.get("status", ""),
                "labels": {MANAGED_LABEL: "true"},
            }
            for r in json.loads(out or "[]")
        ]

    def history(self, release: str) -> list[dict[str, Any]]:
        out = self._run("history", ["history", release, "-o", "json"], missing_ok=True)
        return [
            {"revision": int(r.get("revision") or 0), "status": r.get("status", "")}
            for r in json.loads(out or "[]")
        ]

    def _apply(
        self, verb: list[str], release: str, chart: Path, values: dict[str, Any], labels: dict
    ) -> dict[str, Any]:
        label_flag = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        with self._values_file(values) as path:
            self._run(
                verb[0],
                [
                    *verb,
                    release,
                    str(chart),
                    "-f",
                    path,
                    "--wait=watcher",
                    "--rollback-on-failure",
                    self._timeout_flag(),
                    f"--labels={label_flag}",
                ],
            )
        return self.status(release) or {}

    def install(
        self, chart: Path, release: str, values: dict[str, Any], labels: dict[str, str]
    ) -> dict[str, Any]:
        verb = ["install"] + (["--create-namespace"] if self._settings.create_namespace else [])
        return self._apply(verb, release, chart, values, labels)

    def upgrade(
        self, chart: Path, release: str, values: dict[str, Any], labels: dict[str, str]
    ) -> dict[str, Any]:
        verb = ["upgrade", "--cleanup-on-fail", "--reset-values"]
        verb += [f"--history-max={self._settings.max_history}"]
        return self._apply(verb, release, chart, values, labels)

    def rollback(self, release: str, revision: int) -> None:
        self._run(
            "rollback",
            ["rollback", release, str(revision), "--wait=watcher", self._timeout_flag()],
        )

    def uninstall(self, release: str) -> None:
        self._run(
            "uninstall",
            ["uninstall", release, "--ignore-not-found", "--wait=watcher", self._timeout_flag()],
        )

    def test(self, release: str) -> str:
        return self._run("test", ["test", release, "--logs", self._timeout_flag()]) or ""


def _description(labels: dict[str, str]) -> str:
    return f"ztml: {labels.get('ztml.io/model', '')} v{labels.get('ztml.io/model-version', '')}"


def make_backend(config: KubernetesConfig) -> HelmBackend:
    """The Helm engine `config.helm` asks for; a ConfigError when none is available."""
    if config.helm in ("auto", "sdk"):
        try:
            return SdkHelm(config)
        except ImportError:
            if config.helm == "sdk":
                raise ConfigError(
                    "kubernetes.helm is 'sdk' but helm-python-sdk is not installed "
                    "(pip install 'mlflow-ztml[kubernetes]')"
                ) from None
    binary = shutil.which("helm")
    if binary is None:
        raise ConfigError(
            "the kubernetes runtime needs Helm: install helm-python-sdk "
            "(pip install 'mlflow-ztml[kubernetes]') or put a Helm 4 `helm` binary on PATH"
        )
    return BinaryHelm(config, binary)


# --- the runtime ---------------------------------------------------------------------------


def default_chart_dir() -> Path:
    """The ztml-inference chart: shipped inside the package, else the source checkout's."""
    with contextlib.suppress(ModuleNotFoundError):
        located = Path(str(resources.files("mlflow_ztml.charts"))) / CHART_NAME
        if (located / "Chart.yaml").is_file():
            return located
    return Path(__file__).resolve().parents[2] / "helm" / CHART_NAME


def split_image(image: str) -> tuple[str, str, str]:
    """`repo[:tag][@sha256:...]` -> (repository, tag, digest); a registry port is no tag."""
    reference, _, digest = image.partition("@")
    slash = reference.rfind("/")
    colon = reference.rfind(":")
    if colon > slash:
        repository, tag = reference[:colon], reference[colon + 1 :]
    else:
        repository, tag = reference, ""
    if digest and not _DIGEST.match(digest):
        raise DeployError(f"image {image!r} has a malformed digest (expected sha256:<64 hex>)")
    if (
        not repository
        or reference.startswith("sha256:")
        or re.fullmatch(r"[a-f0-9]{64}", reference)
    ):
        raise DeployError(
            f"image {image!r} is not in a registry; the kubernetes runtime needs the build stage "
            "to push the image (set build.registry in ztml.yaml)"
        )
    return repository, tag, digest


def objects_from_manifests(rendered: dict[str, str]) -> list[dict[str, Any]]:
    """Every Kubernetes object of a rendered chart (NOTES.txt and empty documents skipped)."""
    objects: list[dict[str, Any]] = []
    for path in sorted(rendered):
        if not path.endswith((".yaml", ".yml")):
            continue
        for document in yaml.safe_load_all(rendered[path]):
            if isinstance(document, dict) and document.get("kind"):
                objects.append(document)
    return objects


def _hash(material: Any) -> str:
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]


def _label_value(value: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", value)[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", cleaned) or "unknown"


class KubernetesRuntime:
    """Deploys each spec as one Helm release in its environment's namespace.

    `backend_factory` builds the Helm engine for a KubernetesConfig (tests inject a fake);
    `engine` is the policy engine (default: built from settings, with each environment's
    `kubernetes.approved_registries` and the build registry added to the policy data).
    """

    name = "kubernetes"

    def __init__(
        self,
        settings: Settings,
        *,
        engine: PolicyEngine | None = None,
        backend_factory: Any = None,
    ) -> None:
        self.settings = settings
        self._engine = engine
        self._backend_factory = backend_factory or make_backend
        self._backends: dict[tuple[str, str, str], HelmBackend] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    # --- configuration ---

    def config_for(self, environment: str) -> KubernetesConfig:
        """The environment's `kubernetes:` section (defaults when it has none)."""
        return self.settings.environment(environment).kubernetes or KubernetesConfig()

    def chart_dir(self, config: KubernetesConfig) -> Path:
        chart = Path(config.chart) if config.chart else default_chart_dir()
        if not (chart / "Chart.yaml").is_file():
            raise ConfigError(f"kubernetes.chart {chart} is not a Helm chart (no Chart.yaml)")
        return chart

    def preset_for(self, environment: str) -> str:
        config = self.config_for(environment)
        if config.preset:
            return config.preset
        profile = self.settings.policy_profile(environment)
        if profile == "local":
            return "dev"
        return profile if profile in PRESETS else "production"

    def backend(self, config: KubernetesConfig) -> HelmBackend:
        key = (str(config.kubeconfig or ""), config.context or "", config.namespace)
        with self._guard:
            if key not in self._backends:
                self._backends[key] = self._backend_factory(config)
            return self._backends[key]

    def _targets(self) -> list[KubernetesConfig]:
        """Every distinct cluster/namespace an environment deploys to with this runtime."""
        seen: dict[tuple[str, str, str], KubernetesConfig] = {}
        for env in self.settings.environments.values():
            if env.runtime != "kubernetes" and env.kubernetes is None:
                continue
            config = env.kubernetes or KubernetesConfig()
            key = (str(config.kubeconfig or ""), config.context or "", config.namespace)
            seen.setdefault(key, config)
        return list(seen.values()) or [KubernetesConfig()]

    # --- values, rendering, policy ---

    def values_for(self, spec: DeploymentSpec) -> dict[str, Any]:
        """The chart values for `spec`: sizing from the spec over the preset, the
        environment's `kubernetes.values` over that, and the identity over everything."""
        if not spec.image:
            raise DeployError(
                f"{spec.name}: the kubernetes runtime needs an image; the build stage provides "
                "it (set build.registry so the image is pushed where the cluster can pull it)"
            )
        repository, tag, digest = split_image(spec.image)
        config = self.config_for(spec.environment)
        sized: dict[str, Any] = {
            "preset": self.preset_for(spec.environment),
            "replicaCount": spec.replicas,
            "resources": {
                "requests": {"cpu": spec.cpu, "memory": spec.memory},
                "limits": {"cpu": spec.cpu, "memory": spec.memory},
            },
            "gpu": {"enabled": spec.gpu > 0, "count": max(spec.gpu, 1)},
            "serving": {
                "maxBatchSize": spec.max_batch_size,
                "maxBatchDelayMs": spec.max_batch_delay_ms,
            },
            "env": dict(spec.env),
        }
        if spec.response_format != "ztml":  # the chart's default; releases made before stay same
            sized["serving"]["responseFormat"] = spec.response_format
        if spec.tracking_uri:
            sized["mlflow"] = {"trackingUri": spec.tracking_uri}
        merged = deep_merge(sized, copy.deepcopy(config.values))
        identity = {
            "environment": spec.environment,
            "model": {
                "name": spec.model_name,
                "version": spec.model_version,
                "registryUri": spec.model_uri,
                "fingerprint": spec.fingerprint(),
            },
            "image": {"repository": repository, "tag": tag, "digest": digest},
        }
        return deep_merge(merged, identity)

    def release_labels(self, spec: DeploymentSpec, values: dict[str, Any]) -> dict[str, str]:
        """Release labels: how `list` finds ztml releases and how deploy spots a no-op."""
        chart = self.chart_dir(self.config_for(spec.environment))
        return {
            MANAGED_LABEL: "true",
            "ztml.io/model": _label_value(spec.model_name),
            "ztml.io/model-version": _label_value(spec.model_version),
            "ztml.io/environment": _label_value(spec.environment),
            "ztml.io/fingerprint": spec.fingerprint(),
            "ztml.io/values-hash": _hash([values, _chart_version(chart)]),
        }

    def render(self, spec: DeploymentSpec, values: dict[str, Any] | None = None) -> list[dict]:
        """The Kubernetes objects the release would apply (hooks included), rendered offline
        with the real Helm engine. The pipeline records these in the audit run."""
        _check_release_name(spec.name)
        config = self.config_for(spec.environment)
        values = self.values_for(spec) if values is None else values
        rendered = self.backend(config).render(self.chart_dir(config), spec.name, values)
        return objects_from_manifests(rendered)

    @property
    def engine(self) -> PolicyEngine:
        if self._engine is None:
            self._engine = _deployment_engine(self.settings)
        return self._engine

    def check(self, spec: DeploymentSpec, objects: list[dict[str, Any]]) -> Decision:
        """The `ztml.deployment` decision on `objects`; raises DeploymentPolicyError on deny."""
        decision = self.engine.decide(
            POLICY_PACKAGE, {"environment": spec.environment, "objects": objects}
        )
        if not decision.allow:
            reasons = "; ".join(decision.deny) or "denied"
            raise DeploymentPolicyError(
                f"deployment policy denied {spec.name} in {spec.environment}: {reasons}",
                decision,
                objects,
            )
        return decision

    def verify_image(self, spec: DeploymentSpec) -> str | None:
        """The image's signature and decision attestation for `spec.environment`, judged by
        the `ztml.signature` policy; raises ImageVerificationDenied (nothing is applied).
        Returns the verified digest: the release runs that, never a tag that may move."""
        from mlflow_ztml.supply_chain.verification import verify_before_start

        if spec.image:
            facts, _ = verify_before_start(
                self.settings,
                self.engine,
                spec.image,
                spec.environment,
                spec.model_name,
                spec.model_version,
            )
            return facts.digest
        return None

    # --- the Runtime protocol ---

    def deploy(self, spec: DeploymentSpec, verify: Verifier) -> tuple[DeploymentStatus, bool]:
        config = self.config_for(spec.environment)
        values = self.values_for(spec)
        objects = self.render(spec, values)
        self.check(spec, objects)  # before anything touches the cluster
        digest = self.verify_image(spec)
        if digest and not values["image"]["digest"]:  # a tag: run the digest that was verified
            values["image"]["digest"] = digest
            objects = self.render(spec, values)
            self.check(spec, objects)
        labels = self.release_labels(spec, values)
        backend = self.backend(config)
        chart = self.chart_dir(config)
        with self._lock(spec.name):
            current = backend.status(spec.name)
            if current is not None and current.get("status") == "deployed":
                have = current.get("labels") or {}
                if all(have.get(k) == labels[k] for k in _SAME_DEPLOYMENT):
                    return self._status(current, config), False
            if current is not None and str(current.get("status", "")).startswith("pending-"):
                raise DeployError(
                    f"release {spec.name} in {config.namespace} is {current['status']}: another "
                    "Helm operation is in progress (or was interrupted; `helm rollback` it)"
                )
            previous = self._last_deployed_revision(backend, spec.name, current)
            if current is not None and previous is None:
                backend.uninstall(spec.name)  # never served: start clean
                current = None
            if current is None:
                summary = backend.install(chart, spec.name, values, labels)
            else:
                summary = backend.upgrade(chart, spec.name, values, labels)
            try:
                if config.helm_test:
                    backend.test(spec.name)
                release = backend.status(spec.name) or summary
                with self._reachable(release, config) as endpoint:
                    candidate = self._status(release, config)
                    verify(candidate.model_copy(update={"endpoint": endpoint}))
            except BaseException as exc:
                self._undo(backend, spec.name, previous, exc)
                raise
            return self._status(backend.status(spec.name) or summary, config), True

    def get(self, name: str) -> DeploymentStatus | None:
        for config in self._targets():
            summary = self.backend(config).status(name)
            if summary is None:
                continue
            # Helm versions that do not report release labels: the manifest's annotations.
            managed = (summary.get("labels") or {}).get(MANAGED_LABEL) == "true"
            if managed or _identity(summary).get("model_name"):
                return self._status(summary, config)
        return None

    def list(self) -> list[DeploymentStatus]:
        found: list[DeploymentStatus] = []
        for config in self._targets():
            backend = self.backend(config)
            for summary in backend.list():
                if (summary.get("labels") or {}).get(MANAGED_LABEL) != "true":
                    continue
                full = backend.status(summary["name"])
                if full is not None:
                    found.append(self._status(full, config))
        return sorted(found, key=lambda s: s.name)

    def delete(self, name: str) -> None:
        for config in self._targets():
            backend = self.backend(config)
            if backend.status(name) is not None:
                with self._lock(name):
                    backend.uninstall(name)
                return
        raise DeployError(f"no kubernetes deployment named {name!r}")

    def endpoint(self, name: str) -> str | None:
        status = self.get(name)
        return status.endpoint if status else None

    # --- helpers ---

    def _lock(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

    @staticmethod
    def _last_deployed_revision(
        backend: HelmBackend, name: str, current: dict[str, Any] | None
    ) -> int | None:
        """The revision that serves now (what a failed deploy returns to), if any."""
        if current is None:
            return None
        if current.get("status") == "deployed":
            return int(current["revision"])
        for revision in reversed(backend.history(name)):
            if revision.get("status") in ("deployed", "superseded"):
                return int(revision["revision"])
        return None

    @staticmethod
    def _undo(backend: HelmBackend, name: str, previous: int | None, cause: BaseException) -> None:
        try:
            if previous is None:
                backend.uninstall(name)
            else:
                backend.rollback(name, previous)
        except DeployError as undo_error:
            raise DeployError(
                f"{name}: {cause}; and undoing it failed too: {undo_error}"
            ) from cause

    def _status(self, summary: dict[str, Any], config: KubernetesConfig) -> DeploymentStatus:
        labels = summary.get("labels") or {}
        facts = _identity(summary)
        helm_status = str(summary.get("status", ""))
        state = _HELM_STATES.get(helm_status, "failed")
        return DeploymentStatus(
            name=summary["name"],
            runtime=self.name,
            state=state,
            environment=facts.get("environment") or labels.get("ztml.io/environment", ""),
            model_name=facts.get("model_name") or labels.get("ztml.io/model", ""),
            model_version=facts.get("model_version") or labels.get("ztml.io/model-version", ""),
            model_uri=facts.get("model_uri", ""),
            endpoint=facts.get("endpoint") or _endpoint(summary["name"], config.namespace, {}),
            fingerprint=facts.get("fingerprint") or labels.get("ztml.io/fingerprint"),
            started_at=_timestamp(summary.get("deployed_at")),
            detail=None
            if state == "running"
            else f"helm release {summary['name']} (revision {summary.get('revision')}) "
            f"is {helm_status}",
        )

    @contextlib.contextmanager
    def _reachable(self, release: dict[str, Any], config: KubernetesConfig) -> Iterator[str]:
        """An endpoint this process can call for verify (see the module docstring)."""
        service = _endpoint(release["name"], config.namespace, {})
        mode = config.verify_via
        if mode == "auto":
            mode = "service" if os.environ.get("KUBERNETES_SERVICE_HOST") else "port-forward"
        if mode == "service":
            yield service
            return
        with port_forward(config, release["name"]) as local:
            yield local


# --- module helpers ------------------------------------------------------------------------


def _check_release_name(name: str) -> None:
    if len(name) > 53 or not _RELEASE_NAME.match(name):
        raise DeployError(
            f"deployment name {name!r} is not a valid Helm release name (lowercase letters, "
            "digits and '-', at most 53 characters)"
        )


def _chart_version(chart: Path) -> str:
    try:
        meta = yaml.safe_load((chart / "Chart.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {chart / 'Chart.yaml'}: {exc}") from None
    return str(meta.get("version", ""))


def _identity(summary: dict[str, Any]) -> dict[str, Any]:
    """Verbatim facts from the Deployment's annotations in the release manifest."""
    manifest = summary.get("manifest")
    if not manifest:
        return {}
    try:
        objects = objects_from_manifests({"manifest.yaml": manifest})
    except yaml.YAMLError:
        return {}
    facts: dict[str, Any] = {}
    for obj in objects:
        meta = obj.get("metadata") or {}
        if obj.get("kind") == "Deployment":
            annotations = meta.get("annotations") or {}
            labels = meta.get("labels") or {}
            facts.update(
                model_name=annotations.get("ztml.io/model-name", ""),
                model_version=annotations.get("ztml.io/model-version", ""),
                model_uri=annotations.get("ztml.io/model-uri", ""),
                fingerprint=annotations.get("ztml.io/fingerprint"),
                environment=labels.get("ztml.io/environment", ""),
            )
        elif obj.get("kind") == "Service":
            facts.setdefault("service", meta.get("name"))
        elif obj.get("kind") == "Ingress":
            rules = (obj.get("spec") or {}).get("rules") or []
            tls = (obj.get("spec") or {}).get("tls")
            if rules and rules[0].get("host"):
                facts["endpoint"] = f"{'https' if tls else 'http'}://{rules[0]['host']}"
    if "service" in facts and "endpoint" not in facts:
        namespace = summary.get("namespace", "")
        facts["endpoint"] = f"http://{facts['service']}.{namespace}.svc.cluster.local"
    return facts


def _endpoint(release: str, namespace: str, values: dict[str, Any]) -> str:
    ingress = values.get("ingress") or {}
    if ingress.get("enabled") and ingress.get("host"):
        scheme = "https" if ingress.get("tlsSecretName") else "http"
        return f"{scheme}://{ingress['host']}"
    service = values.get("fullnameOverride") or release
    return f"http://{service}.{namespace}.svc.cluster.local"


def _timestamp(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    from datetime import datetime

    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return None


def _deployment_engine(settings: Settings) -> PolicyEngine:
    """A policy engine whose data adds, per environment, `kubernetes.approved_registries` and
    the build registry to `deployment.approved_registries` (the registry ztml itself pushes to
    is approved by the same ztml.yaml that names it). An OPA server in `query` mode serves its
    own data: configure the registries there."""
    from mlflow_ztml.policy.bundle import load_bundle
    from mlflow_ztml.policy.engine import UnavailableEngine, make_engine
    from mlflow_ztml.policy.opa_server import OpaServerEngine
    from mlflow_ztml.policy.regorus import RegorusEngine

    config = settings.policy
    if config.engine == "opa" and config.opa_mode == "query":
        return make_engine(settings)
    try:
        bundle = load_bundle(settings)
    except PolicyError as exc:
        return UnavailableEngine("opa" if config.engine == "opa" else "regorus", str(exc))
    environments = bundle.data.get("ztml", {}).get("environments", {})
    for name, env in settings.environments.items():
        extra = list(env.kubernetes.approved_registries) if env.kubernetes else []
        if settings.build.registry:
            extra.append(settings.build.registry)
        deployment = environments.get(name, {}).get("deployment")
        if extra and isinstance(deployment, dict):
            current = deployment.get("approved_registries") or []
            deployment["approved_registries"] = sorted({*current, *extra})
    if config.engine == "opa":
        return OpaServerEngine(
            config.opa_url or "", mode="load", timeout=config.opa_timeout_seconds, bundle=bundle
        )
    return RegorusEngine.from_bundle(bundle)


# --- verify from outside the cluster: a port-forward through the API server ---------------


@contextlib.contextmanager
def port_forward(config: KubernetesConfig, release: str, port: int = 8080) -> Iterator[str]:
    """`http://127.0.0.1:<port>` forwarded to a ready pod of `release` (like
    `kubectl port-forward`), for as long as the context is open."""
    try:
        from kubernetes import client
        from kubernetes import config as kube_config
        from kubernetes.stream import portforward
    except ImportError:
        raise ConfigError(
            "verifying from outside the cluster needs the kubernetes package "
            "(pip install 'mlflow-ztml[kubernetes]'), or set kubernetes.verify_via: service"
        ) from None
    try:
        api_client = kube_config.new_client_from_config(
            config_file=str(config.kubeconfig) if config.kubeconfig else None,
            context=config.context,
        )
    except Exception:  # no usable kubeconfig: the in-cluster service account
        kube_config.load_incluster_config()
        api_client = client.ApiClient()
    core = client.CoreV1Api(api_client)
    selector = f"app.kubernetes.io/instance={release},app.kubernetes.io/component=inference"
    pods = core.list_namespaced_pod(config.namespace, label_selector=selector).items
    ready = [
        p.metadata.name
        for p in pods
        if p.status
        and p.status.phase == "Running"
        and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    ]
    if not ready:
        raise DeployError(f"no ready pod of {release} in {config.namespace} to verify through")
    pod = sorted(ready)[-1]

    def open_remote() -> Any:
        forward = portforward(
            core.connect_get_namespaced_pod_portforward, pod, config.namespace, ports=str(port)
        )
        return forward.socket(port)

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            ready_sockets, _, _ = select.select([listener], [], [], 0.2)
            if not ready_sockets:
                continue
            local, _ = listener.accept()
            threading.Thread(target=_pipe, args=(local, open_remote, stop), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True, name=f"port-forward-{release}")
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=2)
        listener.close()


def _pipe(local: socket.socket, open_remote: Any, stop: threading.Event) -> None:
    """Copy bytes both ways between a local connection and a fresh port-forward stream."""
    remote = None
    try:
        remote = open_remote()
        sockets = [local, remote]
        while not stop.is_set():
            readable, _, _ = select.select(sockets, [], [], 0.2)
            for source in readable:
                data = source.recv(65536)
                if not data:
                    return
                (remote if source is local else local).sendall(data)
    except OSError:
        return
    finally:
        local.close()
        if remote is not None:
            with contextlib.suppress(OSError):
                remote.close()
