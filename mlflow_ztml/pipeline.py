"""The one place that sequences the stages.

resolve -> evidence -> gate -> (build -> scan) -> deploy -> verify -> record.

`run()` is what the MLflow plugin, the CLI and the controller call. Each stage is a plain
function in its own module; this module decides the order, the status transitions written to
MLflow and what happens on failure:

- a deny stops before anything is started (`rejected`), reasons in the tags and the audit run;
- a deploy or verify failure removes the candidate and leaves the previous version serving
  (`rolled_back`), or `failed` when nothing served before;
- the same version with the same settings again is a no-op (`unchanged`).

Build and scan are stages of the image-based runtimes (docker, kubernetes); the `process` runtime
needs no image, so they are skipped and say so in the plan.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, Field

from mlflow_ztml import evidence, gate, links, names, verify
from mlflow_ztml import report as decision_report
from mlflow_ztml import requirements as model_requirements
from mlflow_ztml import status as deployment_status
from mlflow_ztml.config import Settings
from mlflow_ztml.errors import (
    DeployError,
    DeploymentConflictError,
    DeploymentPolicyError,
    ZtmlError,
)
from mlflow_ztml.manifest import ModelDeployment
from mlflow_ztml.notify import Notifier, event_from_outcome
from mlflow_ztml.options import DeployOptions  # its home; re-exported here for callers
from mlflow_ztml.policy.engine import Decision, PolicyEngine, make_engine
from mlflow_ztml.record import AuditRun, VersionRecorder
from mlflow_ztml.redact import redact, safe
from mlflow_ztml.registry import Registry, VersionFacts
from mlflow_ztml.runtimes import get_runtime
from mlflow_ztml.runtimes.base import DeploymentSpec, DeploymentStatus, Runtime

if TYPE_CHECKING:
    from mlflow_ztml.supply_chain.model_files import ModelSignature

log = logging.getLogger(__name__)
OutcomeStatus = Literal["deployed", "unchanged", "rejected", "failed", "rolled_back", "planned"]
IMAGE_RUNTIMES = ("docker", "kubernetes")
Progress = Callable[[str], None]


class Outcome(BaseModel):
    status: OutcomeStatus
    model_name: str
    model_version: str
    environment: str
    deployment: str
    runtime: str
    decision: Decision | None = None
    endpoint: str | None = None
    previous_version: str | None = None
    audit_run_id: str | None = None
    audit_experiment_id: str | None = None
    image: str | None = None
    error: str | None = None
    warnings: list[str] = Field(default_factory=list)
    stage_seconds: dict[str, float] = Field(default_factory=dict)
    manifest: dict[str, Any] | None = None
    stages_skipped: list[str] = Field(default_factory=list)
    # MLflow UI addresses ("model version", "audit run", "report"); empty without a UI.
    links: dict[str, str] = Field(default_factory=dict)


def default_deployment_name(model_name: str, environment: str) -> str:
    """`MODEL-ENV` as a valid deployment name (see names.default_name)."""
    return names.default_name(model_name, environment)


def _deployment_name(options: DeployOptions, model_name: str, environment: str) -> str:
    """The name asked for (checked: InvalidNameError, exit 2) or the default one."""
    if options.name is not None:
        return names.validate(options.name)
    return default_deployment_name(model_name, environment)


def _check_owner(runtime: Runtime, name: str, model_name: str, environment: str) -> None:
    """A deploy never replaces a deployment of another model (or of another environment):
    two model names can normalise to one deployment name (`credit_risk`, `credit.risk`), and a
    `--name` can be reused by mistake. Checked before anything is written to MLflow."""
    current = runtime.get(name)
    if current is None:
        return
    if current.state == "unknown":
        raise DeployError(
            f"deployment {name!r} exists but its state cannot be read ({current.detail}); "
            "nothing was changed"
        )
    if current.model_name != model_name or current.environment != environment:
        raise DeploymentConflictError(
            f"deployment {name!r} belongs to model {current.model_name!r} "
            f"(v{current.model_version} in {current.environment}); a deploy of {model_name!r} "
            f"to {environment} never replaces it: choose another deployment name with --name "
            f"(e.g. --name {_alternative_name(model_name, environment)}), or delete {name!r} "
            "first"
        )


def _alternative_name(model_name: str, environment: str) -> str:
    """A default-like name that carries a short hash of the exact model name."""
    digest = hashlib.sha256(model_name.encode("utf-8")).hexdigest()[:6]
    return names.default_name(f"{model_name}-{digest}", environment)


class _WriteBehind:
    """One MLflow write run in a thread while the caller goes on. `settle` waits for it;
    `join` waits and raises its error as if it had been written inline (once)."""

    def __init__(self, write: Callable[[], None]) -> None:
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(write,), daemon=True)
        self._thread.start()

    def _run(self, write: Callable[[], None]) -> None:
        try:
            write()
        except BaseException as exc:  # handed to `join`
            self._error = exc

    def settle(self) -> None:
        self._thread.join()

    def join(self) -> None:
        self._thread.join()
        error, self._error = self._error, None
        if error is not None:
            raise error


class _Clock:
    """Times the stages for the outcome, the audit run and the benchmark."""

    def __init__(self, audit: AuditRun | None, progress: Progress) -> None:
        self.audit = audit
        self.progress = progress
        self.seconds: dict[str, float] = {}
        self._current: tuple[str, float] | None = None

    def stage(self, name: str) -> None:
        self.end()
        self.progress(name)
        self._current = (name, time.monotonic())
        if self.audit:
            self.audit.stage(name)

    def end(self) -> None:
        if self._current:
            name, started = self._current
            self.seconds[name] = round(time.monotonic() - started, 4)
            self._current = None


def _spec(
    document: ModelDeployment,
    environment: str,
    name: str,
    runtime: str,
    options: DeployOptions,
    tracking_uri: str | None,
) -> DeploymentSpec:
    inference = document.spec.inference

    def pick(option: Any, default: Any) -> Any:
        return default if option is None else option

    def requested(resource: Literal["cpu", "memory"]) -> str:
        # The manifest's request (else its limit), else the runtime's default size.
        return inference.requested(resource) or DeploymentSpec.model_fields[resource].default

    return DeploymentSpec(
        name=name,
        environment=environment,
        model_name=document.spec.model.name,
        model_version=document.spec.model.version or "",
        model_uri=document.spec.model.uri,
        tracking_uri=tracking_uri,
        replicas=pick(options.replicas, inference.replicas),
        cpu=pick(options.cpu, requested("cpu")),
        memory=pick(options.memory, requested("memory")),
        gpu=pick(options.gpu, inference.gpu),
        max_batch_size=pick(options.max_batch_size, inference.max_batch_size),
        max_batch_delay_ms=pick(options.max_batch_delay_ms, inference.max_batch_delay_ms),
        response_format=pick(options.response_format, "ztml"),
        port=options.port,
        ready_timeout_seconds=options.ready_timeout_seconds,
    )


class Pipeline:
    """Holds the collaborators (settings, registry, policy engine); `run` does one attempt."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry | None = None,
        engine: PolicyEngine | None = None,
        progress: Progress | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.settings = settings
        self.notifier = notifier
        self.registry = registry or Registry(settings)
        self._engine = engine
        self._engine_lock = threading.Lock()
        self.progress = progress or (lambda _stage: None)

    @property
    def engine(self) -> PolicyEngine:
        """Built on first use: status and delete need no policies."""
        with self._engine_lock:  # the controller's workers share one pipeline
            if self._engine is None:
                self._engine = make_engine(self.settings)
        return self._engine

    def runtime_for(self, environment: str, options: DeployOptions) -> Runtime:
        return get_runtime(
            options.runtime or self.settings.environment(environment).runtime, self.settings
        )

    def plan(self, model_uri: str, environment: str, options: DeployOptions) -> Outcome:
        """Everything up to deploy with no side effects: manifest, decision, what would run."""
        self.settings.environment(environment)
        if options.name is not None:
            names.validate(options.name)
        runtime = self.runtime_for(environment, options)
        facts = self.registry.resolve(model_uri)
        name = _deployment_name(options, facts.name, environment)
        _check_owner(runtime, name, facts.name, environment)
        current = runtime.get(name)
        document = self._manifest(facts, environment, current)
        report = model_requirements.for_model(self.registry, self.settings, facts.uri, runtime.name)
        decision = gate.evaluate(document, environment, self.engine, report)
        spec = _spec(document, environment, name, runtime.name, options, None)
        from mlflow_ztml.supply_chain import model_files

        spec.env.update(model_files.planned_settings(self.settings, environment))
        unchanged = bool(
            current and current.state == "running" and current.fingerprint == spec.fingerprint()
        )
        return Outcome(
            status="planned",
            model_name=facts.name,
            model_version=facts.version,
            environment=environment,
            deployment=name,
            runtime=runtime.name,
            decision=decision,
            endpoint=current.endpoint if unchanged and current else None,
            previous_version=current.model_version if current else None,
            manifest=document.to_dict(),
            warnings=["already deployed with these settings: deploy would be a no-op"]
            if unchanged
            else [],
            stages_skipped=[] if runtime.name in IMAGE_RUNTIMES else ["build", "scan"],
        )

    def run(self, model_uri: str, environment: str, options: DeployOptions) -> Outcome:
        """Take one model version to a verified deployment in `environment` (or say why not)."""
        self.settings.environment(environment)
        if options.name is not None:
            names.validate(options.name)  # a bad name is a usage error before anything else
        runtime = self.runtime_for(environment, options)
        facts = self.registry.resolve(model_uri)
        name = _deployment_name(options, facts.name, environment)
        _check_owner(runtime, name, facts.name, environment)
        # The model files download while evidence, gate and signing run (files only: nothing
        # loads before the gate allows); started inside the try below, whose `finally`
        # discards a copy no deploy took.
        prefetch = getattr(runtime, "prefetch", None)
        tags = VersionRecorder(self.registry, facts.name, facts.version, environment)
        audit = AuditRun(self.registry, self.settings.mlflow.audit_experiment)
        audit_id = audit.start(
            {
                "model": facts.name,
                "version": facts.version,
                "env": environment,
                "runtime": runtime.name,
                "deployment": name,
            },
            run_name=f"{facts.name}-v{facts.version}-{environment}",
        )
        clock = _Clock(audit, self.progress)
        outcome = Outcome(
            status="failed",
            model_name=facts.name,
            model_version=facts.version,
            environment=environment,
            deployment=name,
            runtime=runtime.name,
            audit_run_id=audit_id,
            audit_experiment_id=audit.experiment_id,
            stages_skipped=[] if runtime.name in IMAGE_RUNTIMES else ["build", "scan"],
        )
        outcome.links = decision_report.attempt_links(outcome, links.ui_base(self.settings)).shown()
        # The first status of the attempt (the previous attempt's verdict goes first), written
        # beside evidence and gate; joined before the verdict's write, its error fails the run.
        gating = _WriteBehind(
            lambda: tags.set(
                "gating",
                deployment=name,
                audit_run=audit_id,
                audit_url=outcome.links.get("audit run", ""),
            )
        )
        try:
            if prefetch is not None:
                prefetch(
                    name, facts.uri, self.registry.tracking_uri, self.settings.mlflow.registry_uri
                )
            self._attempt(
                facts, environment, name, runtime, options, tags, audit, clock, outcome, gating
            )
        except ZtmlError as exc:
            gating.settle()
            outcome.error = redact(str(exc))
            if outcome.status not in ("rolled_back", "failed"):
                outcome.status = "failed"
            self._record_failure(tags, outcome)
        finally:
            if prefetch is not None:
                runtime.discard(name, facts.uri)  # type: ignore[attr-defined]
            clock.end()
            outcome.stage_seconds = clock.seconds
            _close_audit(audit, outcome)
            self._notify(outcome)
        return outcome

    def _notify(self, outcome: Outcome) -> None:
        """Queue notifications; delivery happens in the background and never fails a run."""
        if self.notifier is None:
            return
        try:
            self.notifier.publish(event_from_outcome(outcome, self.settings))
        except Exception as exc:  # a notification problem must never change the outcome
            outcome.warnings.append(f"notification not sent: {safe(exc, 300)}")

    def _attempt(
        self,
        facts: VersionFacts,
        environment: str,
        name: str,
        runtime: Runtime,
        options: DeployOptions,
        tags: VersionRecorder,
        audit: AuditRun,
        clock: _Clock,
        outcome: Outcome,
        gating: _WriteBehind,
    ) -> None:
        clock.stage("evidence")
        current = runtime.get(name)
        previous = current if current and current.state == "running" else None
        outcome.previous_version = previous.model_version if previous else None
        document = self._manifest(facts, environment, previous)
        outcome.manifest = document.to_dict()
        audit.text("manifest.yaml", document.to_yaml())

        clock.stage("gate")
        # Can the runtime install and load this model? Asked now, not minutes into a build.
        report = model_requirements.for_model(self.registry, self.settings, facts.uri, runtime.name)
        audit.json("requirements.json", report.policy_input())
        decision = gate.evaluate(document, environment, self.engine, report, explain=True)
        outcome.decision = decision
        outcome.warnings.extend(decision.warn)
        audit.json("decision.json", decision.model_dump())
        audit.metric("policy_denies", len(decision.deny))
        audit.metric("policy_warnings", len(decision.warn))
        verdict = "allow" if decision.allow else "deny"
        gating.join()
        if not decision.allow:
            outcome.status = "rejected"
            tags.set("rejected", decision=verdict, violations=decision.deny, warnings=decision.warn)
            return
        tags.note(decision=verdict, warnings=decision.warn)  # shown with the next status
        from mlflow_ztml.supply_chain import model_files  # cryptography: only once allowed

        # The allowed version's files, signed (OpenSSF model-signing): what serving loads must
        # be what the gate judged. Recorded in the audit run; None without a signing key.
        signature = model_files.sign_allowed(
            self.settings, self.registry, facts.uri, environment, audit
        )

        spec = _spec(document, environment, name, runtime.name, options, self.registry.tracking_uri)
        spec.registry_uri = self.settings.mlflow.registry_uri
        if runtime.name in IMAGE_RUNTIMES:
            image = self._build_and_scan(
                document, environment, tags, audit, clock, outcome, signature
            )
            if image is None:
                return  # the scan policy denied: rejected, nothing started
            spec.image = image
            outcome.image = image
        # Unsigned where signed models are required: refused here, before anything starts.
        spec.env.update(model_files.deployment_settings(self.settings, environment, signature))
        if signature is not None:
            spec.model_signature = signature.bundle
            spec.model_public_key = signature.public_key_pem
        render = getattr(runtime, "render", None)
        if render is not None:  # image runtimes that apply manifests (kubernetes)
            audit.text("manifests.yaml", yaml.safe_dump_all(render(spec), sort_keys=False))
        clock.stage("deploy")
        # Status writes run beside the work, not before it (alias -> serving in seconds):
        # `deploying` while the runtime starts the candidate, `verifying` while it is verified;
        # each is joined before the next write, and its error fails the attempt as before.
        deploying = _WriteBehind(lambda: tags.set("deploying"))

        def verify_candidate(candidate: DeploymentStatus) -> None:
            deploying.join()
            clock.stage("verify")
            verifying = _WriteBehind(lambda: tags.set("verifying"))
            try:
                outcome.warnings.extend(verify.verify(candidate))
            finally:
                verifying.settle()
            verifying.join()

        try:
            try:
                status, changed = runtime.deploy(spec, verify_candidate)
            finally:
                deploying.settle()
            deploying.join()
        except DeploymentPolicyError as exc:
            denied: Decision = exc.decision  # type: ignore[assignment]
            outcome.status = "rejected"
            outcome.decision = denied
            audit.json("deployment-decision.json", denied.model_dump())
            tags.set("rejected", decision="deny", violations=denied.deny, warnings=denied.warn)
            return
        except DeployError:
            outcome.status = "rolled_back" if previous else "failed"
            raise
        clock.stage("record")
        outcome.status = "deployed" if changed else "unchanged"
        outcome.endpoint = status.endpoint
        try:
            self._record_deployed(tags, status, name, spec, previous, changed, environment)
        except ZtmlError as exc:  # the new version serves: losing a tag must not say otherwise
            outcome.warnings.append(f"deployed, but MLflow tags not written: {redact(str(exc))}")

    def _record_deployed(
        self,
        tags: VersionRecorder,
        status: DeploymentStatus,
        name: str,
        spec: DeploymentSpec,
        previous: DeploymentStatus | None,
        changed: bool,
        environment: str,
    ) -> None:
        tags.set("deployed", endpoint=status.endpoint, deployment=name)
        if (
            changed
            and previous
            and previous.model_name == spec.model_name
            and previous.model_version != spec.model_version
        ):
            old = VersionRecorder(
                self.registry, previous.model_name, previous.model_version, environment
            )
            old.set("superseded", superseded_by=spec.model_version)  # drops its endpoint

    def _build_and_scan(
        self,
        document: ModelDeployment,
        environment: str,
        tags: VersionRecorder,
        audit: AuditRun,
        clock: _Clock,
        outcome: Outcome,
        signature: ModelSignature | None = None,
    ) -> str | None:
        """Build, push and scan the image; return its digest reference, or None when the scan
        policy denies (the outcome is then `rejected`, with the scan's reasons). A model
        `signature` goes into the image beside the model files."""
        from mlflow_ztml import build, scan

        model = document.spec.model
        clock.stage("build")
        tags.set("building")
        built = build.ImageBuilder(
            self.settings, progress=lambda line: self.progress(f"build: {line}")
        ).build(
            build.BuildRequest(
                model_name=model.name,
                model_version=model.version or "",
                model_uri=model.uri,
                run_id=model.run_id,
                environment=environment,
                model_signature=signature.bundle if signature else None,
                model_public_key=signature.public_key_pem if signature else None,
            )
        )
        audit.json("build.json", built.model_dump(exclude={"dockerfile"}))
        audit.metric("image_size_bytes", built.size_bytes)
        tags.note(image=built.reference, digest=built.digest or built.image_id)

        clock.stage("scan")
        tags.set("scanning")
        scanner = scan.Scanner(
            self.settings.scan, self.settings.home, lambda line: self.progress(f"scan: {line}")
        )
        result = scanner.scan_image(built.image_id, dockerfile=built.dockerfile)
        report = result.report
        report.image = built.reference
        audit.json("scan-report.json", report.model_dump(mode="json"))
        if result.sbom:
            audit.text("sbom.cdx.json", result.sbom)
        for key, value in report.metrics().items():
            audit.metric(key, value)
        decision = scan.evaluate(report, environment, self.engine)
        audit.json("scan-decision.json", decision.model_dump())
        outcome.warnings.extend(decision.warn)
        verdict = "allow" if decision.allow else "deny"
        if not decision.allow:
            outcome.status = "rejected"
            outcome.decision = decision
            tags.set(
                "rejected",
                scan=report.summary(),
                scan_decision=verdict,
                decision=verdict,
                violations=decision.deny,
                warnings=outcome.warnings,
            )
            return None
        tags.note(scan=report.summary(), scan_decision=verdict, warnings=outcome.warnings)
        attached = {
            "scan_decision": decision,
            "scan_report": report.model_dump(mode="json"),
            "sbom": result.sbom,
        }
        self._sign_and_attest(
            built.reference, document, environment, tags, audit, outcome, attached
        )
        return built.reference

    def _sign_and_attest(
        self,
        image: str,
        document: ModelDeployment,
        environment: str,
        tags: VersionRecorder,
        audit: AuditRun,
        outcome: Outcome,
        attached: dict[str, Any],
    ) -> None:
        """Sign the allowed image and attach its SBOM, scan report and governance decision
        (supply_chain/publish.py); record the `signature` tag and one audit artifact per
        attestation. A configured key that cannot sign fails the run (SigningError)."""
        from mlflow_ztml.supply_chain.publish import publish

        model = document.spec.model
        governance = outcome.decision
        assert governance is not None, "the governance gate decided before the build"
        published = publish(
            self.settings,
            image,
            model=model.name,
            version=model.version or "",
            environment=environment,
            governance=governance,
            **attached,
        )
        for name, statement in published.statements.items():
            audit.json(f"attestations/{name}.intoto.json", statement)
        if published.skipped:
            outcome.warnings.append(f"image not signed: {published.skipped}")
        tags.note(signature=published.tag, warnings=outcome.warnings)

    def _manifest(
        self, facts: VersionFacts, environment: str, current: DeploymentStatus | None
    ) -> ModelDeployment:
        serving_version = None
        if current is not None and current.state == "running":
            serving_version = current.model_version
        return evidence.from_facts(
            self.registry, self.settings, facts, environment, serving_version
        )

    def _record_failure(self, tags: VersionRecorder, outcome: Outcome) -> None:
        # When MLflow itself is what failed, the caller still gets the outcome and the error.
        with contextlib.suppress(ZtmlError):
            tags.set(outcome.status, error=outcome.error)

    def delete(self, name: str, environment: str | None = None, runtime: str | None = None) -> None:
        """Remove a deployment and mark its version `deleted` in that environment."""
        names.check_lookup(name)
        env = environment or self.settings.default_environment
        target = self.runtime_for(env, DeployOptions(runtime=runtime))
        status = target.get(name)
        if status is None:
            raise DeployError(f"no deployment named {name!r} in the {target.name} runtime")
        target.delete(name)
        if status.state == "unknown":
            return  # its state was unreadable: no version to mark
        # The deployment is gone; an unreachable MLflow must not make delete look failed.
        with contextlib.suppress(ZtmlError):
            recorder = VersionRecorder(
                self.registry, status.model_name, status.model_version, status.environment
            )
            recorder.set("deleted")  # drops its endpoint first

    def statuses(
        self,
        environment: str | None = None,
        runtime: str | None = None,
        name: str | None = None,
    ) -> list[DeploymentStatus]:
        """What the runtime reports: deployment `name`, or all of them; only those of
        `environment` when one is given (a deployment whose state is `unknown` is always
        shown: it may be one of them). The runtime is `runtime`, else the environment's.

        A deployment found dead (a process or container that exited) whose version MLflow
        still shows as `deployed` is marked `failed` there, best effort: MLflow being down
        never makes this fail."""
        found = deployment_status.find(self.settings, environment, runtime, name)
        self.record_dead(found)
        return found

    def record_dead(self, statuses: list[DeploymentStatus]) -> None:
        """Mark each dead deployment of `statuses` `failed` in MLflow (best effort)."""
        for status in statuses:
            self._record_dead(status)

    def _record_dead(self, status: DeploymentStatus) -> None:
        if not deployment_status.needs_record(status):
            return
        prefix = f"ztml.{status.environment}."
        try:
            tags = self.registry.version_tags(status.model_name, status.model_version)
            if tags.get(prefix + "status") != "deployed":
                return  # already says so (or something newer happened): one write, not many
            if tags.get(prefix + "deployment", status.name) != status.name:
                return
            recorder = VersionRecorder(
                self.registry, status.model_name, status.model_version, status.environment
            )
            recorder.set("failed", error=f"{status.runtime} exited: {status.detail}", endpoint="")
        except Exception as exc:  # best effort by contract: status must still answer
            log.debug("could not mark %s failed in MLflow: %s", status.name, redact(str(exc)))


def _close_audit(audit: AuditRun, outcome: Outcome) -> None:
    """Best effort: the outcome already happened; a lost audit write must not change it."""
    try:
        audit.json("outcome.json", outcome.model_dump(exclude={"manifest"}))
        ui = links.ui_base(audit.registry.settings)
        page = decision_report.render(decision_report.for_attempt(outcome, audit.documents, ui))
        audit.text(decision_report.REPORT_FILE, page)
        audit.finish(outcome.status)
    except Exception as exc:  # MLflow down mid-attempt: say so in the outcome instead
        outcome.warnings.append(f"audit run not completed: {safe(exc, 300)}")
