"""Reconcile one (model, environment) key: compare desired with actual and act.

Level-triggered: every call reads the registry and the runtime afresh, whatever queued the
key, so lost, late or repeated deliveries and restarts change nothing but latency.

| desired         | actual                              | action                                |
|-----------------|-------------------------------------|---------------------------------------|
| model unmanaged | anything                            | `not_managed`: hands off              |
| version V       | running V                           | `in_sync`                             |
| version V       | none / other version / not running  | `deploy` (pipeline; update path when  |
|                 |                                     | another version serves: no downtime)  |
| version V       | V was rejected on this evidence     | `rejected_unchanged`: wait for change |
| nothing         | a deployment, `prune[env]` on       | `undeploy`                            |
| nothing         | a deployment, prune off / nothing   | `in_sync` (left alone)                |

Failures: `failed` / `rolled_back` outcomes and MLflow being unreachable raise
`ReconcileFailed`, and the worker retries with backoff. A `rejected` outcome is final for that
evidence: the key remembers a fingerprint (version, the version's non-ztml tags, run metrics and
tags, logged-model metrics, datasets, the serving version and the policy bundle's hash), both
in memory and as the version tag `ztml.<env>.rejected_fingerprint`, so a restart does not
re-run the gate either. Any change to those inputs makes a new fingerprint and a new attempt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from mlflow_ztml.config import Settings
from mlflow_ztml.controller.desired import (
    Desired,
    Key,
    RegistryView,
    compute_desired,
    is_managed,
)
from mlflow_ztml.controller.metrics import Metrics
from mlflow_ztml.errors import ConfigError, ZtmlError
from mlflow_ztml.pipeline import DeployOptions, Pipeline, default_deployment_name
from mlflow_ztml.redact import safe
from mlflow_ztml.registry import VersionFacts
from mlflow_ztml.runtimes.base import DeploymentStatus, Runtime

log = logging.getLogger("mlflow_ztml.controller")

Action = Literal["not_managed", "in_sync", "deploy", "rejected_unchanged", "undeploy", "error"]
REJECTED_FINGERPRINT_TAG = "rejected_fingerprint"


class ReconcileFailed(ZtmlError):
    """This attempt did not converge; the key is retried with backoff."""


@dataclass
class KeyReport:
    """The last thing that happened to a key (served by `/status`)."""

    key: str
    action: Action
    desired_version: str | None = None
    desired_source: str | None = None
    actual_version: str | None = None
    actual_state: str | None = None
    outcome: str | None = None
    error: str | None = None
    conflicts: list[str] = field(default_factory=list)
    seconds: float = 0.0
    at: float = field(default_factory=time.time)


def policy_fingerprint(settings: Settings) -> str:
    """Hash of what the gate judges with (Rego modules + data), computed once at start-up:
    the engine is built once per process, so a policy change means a restart anyway."""
    from mlflow_ztml.policy.bundle import load_bundle

    policy = settings.policy
    if policy.engine == "opa" and policy.opa_mode == "query":
        material: Any = {"opa_url": policy.opa_url}
    else:
        try:
            bundle = load_bundle(settings)
            material = {"modules": bundle.modules, "data": bundle.data}
        except ZtmlError as exc:
            material = {"error": str(exc)}
    blob = json.dumps(material, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def evidence_fingerprint(facts: VersionFacts, policy_hash: str, serving: str | None) -> str:
    """Changes whenever anything the gate reads for this version could have changed."""

    def without_own(tags: dict[str, str]) -> dict[str, str]:
        return {k: v for k, v in tags.items() if not k.startswith("ztml.")}

    material = {
        "model": facts.name,
        "version": facts.version,
        "version_tags": without_own(facts.version_tags),
        "run_metrics": facts.run_metrics,
        "run_tags": without_own(facts.run_tags),
        "model_metrics": facts.model_metrics,
        "datasets": facts.datasets,
        "serving": serving,
        "policy": policy_hash,
    }
    blob = json.dumps(material, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class Reconciler:
    """Decides and acts for one key at a time; safe to call from several worker threads for
    different keys (the queue guarantees one worker per key)."""

    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline,
        metrics: Metrics | None = None,
        view: RegistryView | None = None,
    ) -> None:
        self.settings = settings
        self.config = settings.controller
        self.pipeline = pipeline
        self.metrics = metrics or Metrics()
        self.view = view or RegistryView(pipeline.registry, self.config)
        self.environments = sorted(settings.environments)
        self.policy_hash = policy_fingerprint(settings)
        self._rejected: dict[Key, tuple[str, str]] = {}  # key -> (version, fingerprint)
        self._reports: dict[Key, KeyReport] = {}
        self._warned: set[str] = set()
        self._lock = threading.Lock()
        self._runtimes: dict[str, Runtime] = {}

    # ---- one key ---------------------------------------------------------------------------

    def reconcile(self, key: Key) -> KeyReport:
        started = time.monotonic()
        report = KeyReport(key=str(key), action="error")
        try:
            self._reconcile(key, report)
            result = "ok"
        except ZtmlError as exc:
            report.error = safe(exc, 2000)
            result = "error"
            raise ReconcileFailed(f"{key}: {exc}") from exc
        finally:
            report.seconds = round(time.monotonic() - started, 3)
            self.metrics.reconciles.labels(report.action, result).inc()
            self.metrics.reconcile_seconds.labels(report.action).observe(report.seconds)
            with self._lock:
                self._reports[key] = report
        return report

    def _reconcile(self, key: Key, report: KeyReport) -> None:
        snapshot = self.view.snapshot(key.model)
        self.metrics.registry_up.set(1)
        if snapshot is not None and not is_managed(snapshot, self.config):
            report.action = "not_managed"
            return
        desired: Desired | None = None
        if snapshot is not None:
            state = compute_desired(snapshot, self.config, self.environments)
            desired = state.wanted.get(key.environment)
            report.conflicts = [c for c in state.conflicts if f" in {key.environment}:" in c]
            self._warn_once(state.problems)
        if desired is not None:
            report.desired_version, report.desired_source = desired.version, desired.detail

        name = default_deployment_name(key.model, key.environment)
        runtime = self._runtime(key.environment)
        actual = runtime.get(name)
        if actual is not None and actual.model_name != key.model:
            raise ConfigError(
                f"deployment {name} runs model {actual.model_name!r}, not {key.model!r}: two "
                "model names map to one deployment name; rename one of the models"
            )
        if actual is not None:
            report.actual_version, report.actual_state = actual.model_version, actual.state

        if desired is None:
            if actual is not None and self.config.prune.get(key.environment, False):
                report.action = "undeploy"
                log.info("%s: nothing asks for a version any more; undeploying %s", key, name)
                self.pipeline.delete(name, key.environment)
                report.outcome = "deleted"
                self.metrics.deployments.labels(key.environment, "deleted").inc()
            else:
                report.action = "in_sync"
            return
        if _serves(actual, desired.version):
            report.action = "in_sync"
            return
        assert snapshot is not None
        self._deploy(key, desired, actual, snapshot.version_tags.get(desired.version, {}), report)

    def _warn_once(self, problems: list[str]) -> None:
        """Registry problems (a tag naming an unknown environment) are logged once, not on
        every reconcile of every environment of the model."""
        with self._lock:
            fresh = [p for p in problems if p not in self._warned]
            if len(self._warned) > 10_000:
                self._warned.clear()
            self._warned.update(fresh)
        for problem in fresh:
            log.warning("%s", problem)

    def _fingerprint(self, uri: str, serving: str | None) -> str:
        return evidence_fingerprint(self.pipeline.registry.resolve(uri), self.policy_hash, serving)

    def _deploy(
        self,
        key: Key,
        desired: Desired,
        actual: DeploymentStatus | None,
        version_tags: dict[str, str],
        report: KeyReport,
    ) -> None:
        uri = f"models:/{key.model}/{desired.version}"
        serving = actual.model_version if actual is not None and actual.state == "running" else None
        tag = f"ztml.{key.environment}.{REJECTED_FINGERPRINT_TAG}"
        with self._lock:
            remembered = self._rejected.get(key)
        # Reading the evidence costs a few MLflow calls: only when this version was rejected.
        if (remembered and remembered[0] == desired.version) or tag in version_tags:
            fingerprint = self._fingerprint(uri, serving)
            if remembered == (desired.version, fingerprint) or version_tags.get(tag) == fingerprint:
                report.action = "rejected_unchanged"
                report.outcome = "rejected"
                return
        report.action = "deploy"
        log.info(
            "%s: deploying v%s (%s); serving now: %s",
            key,
            desired.version,
            desired.detail,
            f"v{serving}" if serving else "nothing",
        )
        outcome = self.pipeline.run(
            uri,
            key.environment,
            DeployOptions(
                name=default_deployment_name(key.model, key.environment),
                ready_timeout_seconds=self.config.ready_timeout_seconds,
            ),
        )
        report.outcome = outcome.status
        self.metrics.deployments.labels(key.environment, outcome.status).inc()
        log.info(
            "%s: v%s %s%s [%s]",
            key,
            desired.version,
            outcome.status,
            f" ({outcome.error})" if outcome.error else "",
            ", ".join(f"{stage} {sec:.1f}s" for stage, sec in outcome.stage_seconds.items()),
        )
        if outcome.status == "rejected":
            with contextlib.suppress(ZtmlError):  # memory is an optimisation, not a must
                fingerprint = self._fingerprint(uri, serving)
                with self._lock:
                    self._rejected[key] = (desired.version, fingerprint)
                self.pipeline.registry.set_version_tags(
                    key.model, desired.version, {tag: fingerprint}
                )
            if outcome.decision is not None:
                report.error = safe("; ".join(outcome.decision.deny), 2000)
            return
        with self._lock:
            self._rejected.pop(key, None)
        if version_tags.get(tag) and outcome.status in ("deployed", "unchanged"):
            with contextlib.suppress(ZtmlError):  # the rejection is history now
                self.pipeline.registry.set_version_tags(key.model, desired.version, {tag: ""})
        if outcome.status in ("failed", "rolled_back"):
            raise ReconcileFailed(
                f"v{desired.version} {outcome.status}: {outcome.error or 'no detail'}"
            )

    # ---- all keys (the poll) ---------------------------------------------------------------

    def differences(self) -> list[Key]:
        """Keys whose actual state differs from the desired one, or may (rejected versions are
        included: their evidence can change without any webhook, e.g. a run metric)."""
        desired: dict[Key, Desired] = {}
        managed: set[str] = set()
        for snapshot in self.view.snapshots():
            managed.add(snapshot.name)
            for env, wanted in compute_desired(
                snapshot, self.config, self.environments
            ).wanted.items():
                desired[Key(snapshot.name, env)] = wanted
        self.metrics.registry_up.set(1)
        actual, unreachable = self._actual(managed)
        keys: set[Key] = set()
        for key, wanted in desired.items():
            # An environment whose runtime cannot be listed: queue what it should run, and
            # the worker's own attempt retries with backoff and says why in /status.
            if key.environment in unreachable or not _serves(actual.get(key), wanted.version):
                keys.add(key)
        for key in actual:
            if key not in desired and self.config.prune.get(key.environment, False):
                keys.add(key)
        return sorted(keys)

    def _actual(self, managed: set[str]) -> tuple[dict[Key, DeploymentStatus], set[str]]:
        """Deployments of managed models per key, and the environments whose runtime could
        not be listed (one broken cluster must not stop the others from converging)."""
        found: dict[Key, DeploymentStatus] = {}
        unreachable: set[str] = set()
        for env in self.environments:
            try:
                statuses = self._runtime(env).list()
            except ZtmlError as exc:
                unreachable.add(env)
                self._warn_once([f"environment {env}: cannot list deployments: {exc}"])
                continue
            for status in statuses:
                key = Key(status.model_name, status.environment)
                if (
                    status.environment == env
                    and status.model_name in managed
                    and status.name == default_deployment_name(key.model, key.environment)
                ):
                    found[key] = status
        return found, unreachable

    def _runtime(self, environment: str) -> Runtime:
        """One runtime object per environment (the pipeline resolves it the same way)."""
        with self._lock:
            runtime = self._runtimes.get(environment)
            if runtime is None:
                runtime = self.pipeline.runtime_for(environment, DeployOptions())
                self._runtimes[environment] = runtime
            return runtime

    def reports(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {str(key): asdict(report) for key, report in sorted(self._reports.items())}


def _serves(actual: DeploymentStatus | None, version: str) -> bool:
    return actual is not None and actual.state == "running" and actual.model_version == version
