"""Write where a version stands back to MLflow: `ztml.<env>.*` tags and one audit run per attempt.

Tags are what the MLflow UI shows next to the version; the audit run (experiment
`mlflow.audit_experiment`, default `ztml-deployments`) keeps the full manifest, decision and
per-stage durations, searchable with MLflow's own run search. Secrets never reach either:
values are scrubbed of URL credentials and only known, non-secret fields are written.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from mlflow_ztml.redact import clip as redact_clip
from mlflow_ztml.redact import redact
from mlflow_ztml.registry import Registry, translate_errors

TAG_VALUE_LIMIT = 5000
STATUSES = (
    "pending",
    "gating",
    "rejected",
    "building",
    "scanning",
    "deploying",
    "verifying",
    "deployed",
    "failed",
    "rolled_back",
    "deleted",
    "superseded",
)


def clip(text: str, limit: int = TAG_VALUE_LIMIT) -> str:
    """A tag value within MLflow's limit, cut at a word boundary (`redact.clip`)."""
    return redact_clip(text, limit, suffix=" ... (truncated; full text in the audit run)")


class VersionRecorder:
    """Tags on one model version, namespaced by environment."""

    def __init__(self, registry: Registry, model: str, version: str, environment: str) -> None:
        self.registry = registry
        self.model = model
        self.version = version
        self.prefix = f"ztml.{environment}."

    def set(self, status: str | None = None, **fields: Any) -> None:
        if status is not None and status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        tags: dict[str, str] = {}
        for key, value in fields.items():
            if value is None:
                continue
            if isinstance(value, list | tuple):
                value = "\n".join(str(v) for v in value)
            tags[key] = clip(redact(str(value)))
        # status goes last: whoever watches it sees `deployed` only once the endpoint is there
        if status is not None:
            tags["status"] = status
        tags["updated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        self.registry.set_version_tags(
            self.model, self.version, {self.prefix + k: v for k, v in tags.items()}
        )

    def unset(self, *fields: str) -> None:
        """Remove tags that stopped being true (the endpoint of a version that no longer
        serves): a stale value, even an empty one, would still be shown as a fact."""
        self.registry.delete_version_tags(
            self.model, self.version, [self.prefix + field for field in fields]
        )


class AuditRun:
    """One MLflow run per pipeline attempt, holding what was decided and why."""

    def __init__(self, registry: Registry, experiment: str) -> None:
        self.registry = registry
        self.experiment = experiment
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self._stage_started: dict[str, float] = {}

    def start(self, params: dict[str, str], run_name: str) -> str:
        client = self.registry.client
        with translate_errors(f"creating the audit run in experiment {self.experiment!r}"):
            experiment = client.get_experiment_by_name(self.experiment)
            experiment_id = (
                experiment.experiment_id
                if experiment is not None
                else client.create_experiment(self.experiment)
            )
            self.experiment_id = experiment_id
            run = client.create_run(experiment_id, run_name=run_name, tags={"ztml.audit": "true"})
            self.run_id = run.info.run_id
            for key, value in params.items():
                client.log_param(self.run_id, key, redact_clip(redact(str(value)), 500))
        return self.run_id

    def stage(self, name: str) -> None:
        """Mark the start of a stage; the previous stage's duration is logged as a metric."""
        now = time.monotonic()
        for previous, started in list(self._stage_started.items()):
            self.metric(f"stage_{previous}_seconds", now - started)
            del self._stage_started[previous]
        self._stage_started[name] = now

    def metric(self, key: str, value: float) -> None:
        if self.run_id is not None:
            self.registry.client.log_metric(self.run_id, key, float(value))

    def text(self, artifact_file: str, content: str) -> None:
        """Log an artifact; credentials in it (URLs with passwords, tokens) are redacted."""
        if self.run_id is not None:
            self.registry.client.log_text(self.run_id, redact(content), artifact_file)

    def json(self, artifact_file: str, content: Any) -> None:
        self.text(artifact_file, json.dumps(content, indent=2, sort_keys=True, default=str))

    def finish(self, outcome: str) -> None:
        if self.run_id is None:
            return
        self.stage("done")
        client = self.registry.client
        client.set_tag(self.run_id, "ztml.outcome", outcome)
        status = "FINISHED" if outcome in ("deployed", "unchanged", "planned") else "FAILED"
        client.set_terminated(self.run_id, status=status)
