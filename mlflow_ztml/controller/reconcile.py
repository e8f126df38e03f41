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
The poll checks every rejected key in bulk (`Reconciler._unchanged_rejections`) and queues
only those whose evidence changed, so an idle registry costs MLflow the same few requests
however many versions were rejected.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from mlflow_ztml.config import Settings
from mlflow_ztml.controller.desired import (
    Desired,
    Key,
    ModelSnapshot,
    RegistryView,
    compute_desired,
    is_managed,
)
from mlflow_ztml.controller.metrics import Metrics
from mlflow_ztml.errors import ConfigError, ZtmlError
from mlflow_ztml.pipeline import DeployOptions, Outcome, Pipeline, default_deployment_name
from mlflow_ztml.redact import safe
from mlflow_ztml.registry import VersionFacts, add_run, facts_of_version
from mlflow_ztml.runtimes.base import DeploymentStatus, Runtime

log = logging.getLogger("mlflow_ztml.controller")

Action = Literal["not_managed", "in_sync", "deploy", "rejected_unchanged", "undeploy", "error"]
REJECTED_FINGERPRINT_TAG = "rejected_fingerprint"
# What a person reads on the version (`ztml.<env>.<field>`): why an alias/stage/tag did not win,
# and what the controller waits for before it tries again.
CONFLICT_TAG = "conflict"
WAITING_TAG = "waiting"


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
    # what serves after this reconcile (the status page's row): version, endpoint, since when
    serving_version: str | None = None
    endpoint: str | None = None
    since: float | None = None


@dataclass
class DecisionReport:
    """One gate decision the controller's pipeline made (served by `/status` and `/`), so a
    person sees why a version was rejected without opening MLflow."""

    model: str
    environment: str
    version: str
    outcome: str
    decision: str | None  # "allow" | "deny"; None when the pipeline stopped before the gate
    reasons: list[str] = field(default_factory=list)  # the denies, or the error
    warnings: list[str] = field(default_factory=list)
    audit_run_id: str | None = None
    audit_experiment_id: str | None = None
    at: float = field(default_factory=time.time)

    @classmethod
    def from_outcome(cls, outcome: Outcome) -> DecisionReport:
        decision = outcome.decision
        reasons = list(decision.deny) if decision is not None else []
        if not reasons and outcome.error:
            reasons = [outcome.error]
        return cls(
            model=outcome.model_name,
            environment=outcome.environment,
            version=outcome.model_version,
            outcome=outcome.status,
            decision=None if decision is None else ("allow" if decision.allow else "deny"),
            reasons=[safe(r, 500) for r in reasons],
            warnings=[safe(w, 500) for w in (decision.warn if decision is not None else [])],
            audit_run_id=outcome.audit_run_id,
            audit_experiment_id=outcome.audit_experiment_id,
        )


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


@dataclass(frozen=True)
class Judgement:
    """What the controller remembers of a rejection, in memory and in the version tag
    `ztml.<env>.rejected_fingerprint` as `FINGERPRINT:STAMP`.

    `fingerprint` covers everything the gate reads (`evidence_fingerprint`); `stamp` is the
    same without the logged model's metrics, so the poll can check it from bulk reads (one
    version search, one run search) instead of reading every rejected version on its own. In
    MLflow 3 a logged model's metrics are logged through a run (`log_metric(run_id, ...,
    model_id=...)`), so they move the run's metrics as well; MLflow's `last_updated_timestamp`
    does not help here: neither a version tag nor a run metric changes it."""

    version: str
    fingerprint: str
    stamp: str

    def tag_value(self) -> str:
        return f"{self.fingerprint}:{self.stamp}"

    @classmethod
    def from_tag(cls, version: str, value: str | None) -> Judgement | None:
        """None for an absent or cleared tag; an older tag (fingerprint only) has no stamp."""
        fingerprint, _, stamp = (value or "").partition(":")
        return cls(version, fingerprint, stamp) if fingerprint else None


def judge(facts: VersionFacts, policy_hash: str, serving: str | None) -> Judgement:
    return Judgement(
        facts.version,
        evidence_fingerprint(facts, policy_hash, serving),
        poll_stamp(facts, policy_hash, serving),
    )


def poll_stamp(facts: VersionFacts, policy_hash: str, serving: str | None) -> str:
    """`evidence_fingerprint` without the logged model's metrics (see `Judgement`)."""
    return evidence_fingerprint(replace(facts, model_metrics={}), policy_hash, serving)


def rejected_tag(environment: str) -> str:
    return f"ztml.{environment}.{REJECTED_FINGERPRINT_TAG}"


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
        self._rejected: dict[Key, Judgement] = {}
        self._reports: dict[Key, KeyReport] = {}
        self._decisions: deque[DecisionReport] = deque(maxlen=self.config.status_decisions)
        self._warned: set[str] = set()
        self._conflict_notes: dict[Key, dict[str, str]] = {}  # what the conflict tags say now
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
            self._mark_conflicts(key, snapshot, state.conflict_notes.get(key.environment, {}))
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
            if actual.state == "running":
                report.serving_version, report.endpoint = actual.model_version, actual.endpoint
                report.since = actual.started_at

        if desired is None:
            if actual is not None and self.config.prune.get(key.environment, False):
                report.action = "undeploy"
                log.info("%s: nothing asks for a version any more; undeploying %s", key, name)
                self.pipeline.delete(name, key.environment)
                report.outcome = "deleted"
                report.serving_version = report.endpoint = report.since = None
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

    def _judge(self, uri: str, serving: str | None) -> Judgement:
        return judge(self.pipeline.registry.resolve(uri), self.policy_hash, serving)

    def _deploy(
        self,
        key: Key,
        desired: Desired,
        actual: DeploymentStatus | None,
        version_tags: dict[str, str],
        report: KeyReport,
    ) -> None:
        uri = f"models:/{key.model}/{desired.version}"
        serving = _serving(actual)
        tag = rejected_tag(key.environment)
        with self._lock:
            remembered = self._rejected.get(key)
        earlier = [
            judgement
            for judgement in (
                remembered,
                Judgement.from_tag(desired.version, version_tags.get(tag)),
            )
            if judgement is not None and judgement.version == desired.version
        ]
        # Reading the evidence costs a few MLflow calls: only when this version was rejected.
        if earlier:
            current = self._judge(uri, serving)
            if any(judgement.fingerprint == current.fingerprint for judgement in earlier):
                report.action = "rejected_unchanged"
                report.outcome = "rejected"
                with self._lock:
                    self._rejected[key] = current
                if version_tags.get(tag) != current.tag_value():  # e.g. an older tag: no stamp
                    with contextlib.suppress(ZtmlError):
                        self.pipeline.registry.set_version_tags(
                            key.model, desired.version, {tag: current.tag_value()}
                        )
                return
        report.action = "deploy"
        with self._lock:  # a deploy takes a while: /status and / show it in progress
            self._reports[key] = replace(report, conflicts=list(report.conflicts))
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
        with self._lock:
            self._decisions.append(DecisionReport.from_outcome(outcome))
        if outcome.status in ("deployed", "unchanged"):
            report.serving_version, report.endpoint = desired.version, outcome.endpoint
            if outcome.status == "deployed":
                report.since = time.time()
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
                judgement = self._judge(uri, serving)
                with self._lock:
                    self._rejected[key] = judgement
                self.pipeline.registry.set_version_tags(
                    key.model,
                    desired.version,
                    {tag: judgement.tag_value(), self._tag(key, WAITING_TAG): self._waits_for()},
                )
            if outcome.decision is not None:
                report.error = safe("; ".join(outcome.decision.deny), 2000)
            return
        with self._lock:
            self._rejected.pop(key, None)
        if version_tags.get(tag) and outcome.status in ("deployed", "unchanged"):
            with contextlib.suppress(ZtmlError):  # the rejection is history now
                self.pipeline.registry.delete_version_tags(key.model, desired.version, [tag])
        if outcome.status in ("failed", "rolled_back"):
            with contextlib.suppress(ZtmlError):  # the retry happens whether or not this lands
                self.pipeline.registry.set_version_tags(
                    key.model, desired.version, {self._tag(key, WAITING_TAG): self._retries()}
                )
            raise ReconcileFailed(
                f"v{desired.version} {outcome.status}: {outcome.error or 'no detail'}"
            )

    # ---- all keys (the poll) ---------------------------------------------------------------

    def differences(self, full: bool = True) -> list[Key]:
        """Keys whose actual state differs from the desired one, or may (rejected versions are
        included: their evidence can change without any webhook, e.g. a run metric). `full`
        re-lists the whole registry; otherwise only models changed since the last listing are
        read (`RegistryView.snapshots`), and every key is still compared."""
        desired: dict[Key, Desired] = {}
        managed: set[str] = set()
        conflicted: set[Key] = set()  # a conflict appeared, changed or went: its tags follow
        for snapshot in self.view.snapshots(full=full):
            managed.add(snapshot.name)
            state = compute_desired(snapshot, self.config, self.environments)
            for env, wanted in state.wanted.items():
                desired[Key(snapshot.name, env)] = wanted
            conflicted |= self._conflicts_changed(snapshot.name, state.conflict_notes)
        self.metrics.registry_up.set(1)
        actual, unreachable = self._actual(managed)
        keys: set[Key] = set()
        for key, wanted in desired.items():
            # An environment whose runtime cannot be listed: queue what it should run, and
            # the worker's own attempt retries with backoff and says why in /status.
            if key.environment in unreachable or not _serves(actual.get(key), wanted.version):
                keys.add(key)
        keys -= self._unchanged_rejections(
            {k: desired[k].version for k in keys if k.environment not in unreachable}, actual
        )
        for key in actual:
            if key not in desired and self.config.prune.get(key.environment, False):
                keys.add(key)
        return sorted(keys | conflicted)

    # ---- what a person reads on the version ------------------------------------------------

    @staticmethod
    def _tag(key: Key, field: str) -> str:
        return f"ztml.{key.environment}.{field}"

    def _waits_for(self) -> str:
        every = f"{self.config.poll_interval_seconds:g} s"
        return (
            f"rejected on this evidence; re-checked at every poll (every {every}): a new "
            "metric, tag or policy starts a new attempt"
        )

    def _retries(self) -> str:
        return (
            f"retried with backoff (at most {self.config.backoff_max_seconds:g} s between "
            "attempts); any change to this model retries at once"
        )

    def _mark_conflicts(self, key: Key, snapshot: ModelSnapshot, notes: dict[str, str]) -> None:
        """`ztml.<env>.conflict` on every version an alias/stage/tag conflict involves (why it
        does or does not deploy), removed once the conflict is gone; only changes are written.
        Best effort: a lost note must not stop the deploy."""
        tag = self._tag(key, CONFLICT_TAG)
        registry = self.pipeline.registry
        with contextlib.suppress(ZtmlError):
            for version, tags in sorted(snapshot.version_tags.items()):
                note, shown = notes.get(version), tags.get(tag)
                if note and note != shown:
                    registry.set_version_tags(key.model, version, {tag: note})
                elif not note and shown is not None:
                    registry.delete_version_tags(key.model, version, [tag])
            with self._lock:
                self._conflict_notes[key] = notes

    def _conflicts_changed(self, model: str, notes: dict[str, dict[str, str]]) -> set[Key]:
        """Keys of `model` whose conflict notes differ from what the tags say (a stage that
        lost to an alias queues no deploy, yet its version must say why it does not run)."""
        with self._lock:
            shown = {k: v for k, v in self._conflict_notes.items() if k.model == model}
        envs = set(notes) | {key.environment for key in shown}
        return {
            Key(model, env) for env in envs if notes.get(env, {}) != shown.get(Key(model, env), {})
        }

    def _unchanged_rejections(
        self, wanted: dict[Key, str], actual: dict[Key, DeploymentStatus]
    ) -> set[Key]:
        """The keys among `wanted` (key -> the version it should run) whose version was
        rejected on evidence that has not changed since: not queued, so an idle registry costs
        MLflow one version search per environment with differences plus one run search per
        100 rejected versions, however many there are, and a restart re-judges nothing (the
        judgement is read back from the version tags)."""
        judged: dict[Key, tuple[Judgement, Any]] = {}
        for env in sorted({key.environment for key in wanted}):
            tag = rejected_tag(env)
            for version in self.view.versions_with_tag(tag):
                key = Key(version.name, env)
                judgement = Judgement.from_tag(str(version.version), version.tags.get(tag))
                if judgement and judgement.stamp and wanted.get(key) == judgement.version:
                    judged[key] = (judgement, version)
        if not judged:
            return set()
        runs = self.pipeline.registry.runs([v.run_id for _, v in judged.values() if v.run_id])
        unchanged: set[Key] = set()
        for key, (judgement, version) in judged.items():
            facts = facts_of_version(version)
            if facts.run_id:
                add_run(facts, runs.get(facts.run_id))
            if poll_stamp(facts, self.policy_hash, _serving(actual.get(key))) == judgement.stamp:
                unchanged.add(key)
        return unchanged

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

    def decisions(self) -> list[dict[str, Any]]:
        """The most recent gate decisions, newest first (`controller.status_decisions`)."""
        with self._lock:
            return [asdict(decision) for decision in reversed(self._decisions)]


def _serving(actual: DeploymentStatus | None) -> str | None:
    """The version that serves (what the gate compares a candidate with), if any."""
    return actual.model_version if actual is not None and actual.state == "running" else None


def _serves(actual: DeploymentStatus | None, version: str) -> bool:
    return actual is not None and actual.state == "running" and actual.model_version == version
