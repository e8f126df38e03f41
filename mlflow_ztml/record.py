"""Write where a version stands back to MLflow: `ztml.<env>.*` tags and one audit run per attempt.

Tags are what the MLflow UI shows next to the version; the audit run (experiment
`mlflow.audit_experiment`, default `ztml-deployments`) keeps the full manifest, decision and
per-stage durations, searchable with MLflow's own run search. Secrets never reach either:
values are scrubbed of URL credentials and only known, non-secret fields are written.
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from typing import Any

from mlflow_ztml import status_line
from mlflow_ztml.redact import clip as redact_clip
from mlflow_ztml.redact import redact
from mlflow_ztml.registry import Registry, translate_errors

# MLflow 3.17 accepts 100,000 characters per model-version tag value; 5,000 keeps a detail tag
# readable in the UI (the full text is in the audit run).
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


# What a new attempt makes stale: the previous attempt's verdict and reasons. Removed before
# the first in-progress status is written, so `gating` never stands beside an old `deny`.
ATTEMPT_FIELDS = (
    "decision",
    "violations",
    "warnings",
    "error",
    "scan",
    "scan_decision",
    "superseded_by",
    "waiting",
)
# Facts a status makes untrue, removed before that status is written.
DROPPED_BY: dict[str, tuple[str, ...]] = {
    "deployed": ("error", "violations", "superseded_by", "waiting"),
    "superseded": ("endpoint",),
    "deleted": ("endpoint",),
}
# The verdict of a stage: written right after the status it belongs to (`rejected`,
# `deploying`, `building`), never before it.
VERDICT_FIELDS = ("decision", "scan_decision")
# Statuses that end an attempt: `updated_at` records when (in-progress ones show it in the
# headline: `gating v8 · since 04:01Z`).
FINAL_STATUSES = tuple(s for s in STATUSES if s not in status_line.IN_PROGRESS)


def headline_key(environment: str) -> str:
    """`ztml.<env>`: sorts before every `ztml.<env>.*` detail in the MLflow UI."""
    return f"ztml.{environment}"


class VersionRecorder:
    """The deployment state of one model version in one environment, as MLflow shows it.

    One small state machine whose writes are ordered and few:

    - per change, the order is: removals of what stopped being true, detail tags, `status`,
      then the headline `ztml.<env>` last, so the headline is always a consistent sentence and
      a reader never sees a new verdict beside an older status;
    - a tag whose value would not change is not written (the version's tags are read once, on
      first use), an empty value deletes the tag (never `""`), and a new attempt removes the
      previous attempt's verdict (`ATTEMPT_FIELDS`) before its first status;
    - `note(**fields)` holds details until the next status, so e.g. `decision=allow` appears
      together with `deploying`, not beside `gating`.

    MLflow has no batch call for model-version tags: each write is one request and one webhook
    delivery (`registry.set_version_tags` loops), which is why unchanged values are skipped.
    The read-once cache assumes one writer per (version, environment) at a time, which the
    controller's one-worker-per-key queue guarantees.
    """

    def __init__(self, registry: Registry, model: str, version: str, environment: str) -> None:
        self.registry = registry
        self.model = model
        self.version = version
        self.environment = environment
        self.prefix = f"ztml.{environment}."
        self.headline_key = headline_key(environment)
        self._known: dict[str, str] | None = None  # full key -> value, read on first use
        self._notes: dict[str, Any] = {}
        self._lists: dict[str, list[str]] = {}  # list-valued fields as given (for counting)
        self._since: datetime | None = None
        self._attempt_started = False

    def note(self, **fields: Any) -> None:
        """Details written with the next `set` (before its status), not on their own."""
        self._notes.update(fields)

    def set(self, status: str | None = None, **fields: Any) -> None:
        """Move to `status` (None: keep it) with `fields`: a value of None leaves a tag alone,
        an empty one (``""``, ``[]``) removes it, lists become numbered (`violations`) or
        one-per-line text. Callers may pass any field name; values are redacted and clipped."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        changes: dict[str, Any] = {**self._notes, **fields}
        self._notes = {}
        if status in status_line.IN_PROGRESS and not self._attempt_started:
            self._attempt_started = True
            changes = {**dict.fromkeys(ATTEMPT_FIELDS, ""), **changes}
        if status is not None:
            changes = {**dict.fromkeys(DROPPED_BY.get(status, ()), ""), **changes}
        updates: dict[str, str] = {}
        for key, value in changes.items():
            if value is not None:
                updates[self.prefix + key] = self._text(key, value)
        known = self._tags()
        if status is not None:
            if status != known.get(self.prefix + "status") or self._since is None:
                self._since = datetime.now(UTC)  # a new status, or the same one in a new attempt
            if status in FINAL_STATUSES:
                updates[self.prefix + "updated_at"] = self._since.isoformat(timespec="seconds")
            updates[self.prefix + "status"] = status
        self._apply(updates)

    def unset(self, *fields: str) -> None:
        """Remove tags that stopped being true (the endpoint of a version that no longer
        serves): a stale value, even an empty one, would still be shown as a fact."""
        self._apply({self.prefix + field: "" for field in fields})

    def _text(self, key: str, value: Any) -> str:
        if isinstance(value, list | tuple):
            items = [str(v) for v in value]
            self._lists[key] = items
            value = status_line.numbered(items) if key == "violations" else "\n".join(items)
        else:
            self._lists.pop(key, None)
        text = str(value)
        return clip(redact(text)) if text.strip() else ""

    def _tags(self) -> dict[str, str]:
        if self._known is None:
            tags = self.registry.version_tags(self.model, self.version)
            self._known = {
                k: v for k, v in tags.items() if k.startswith(self.prefix) or k == self.headline_key
            }
        return self._known

    def _apply(self, updates: dict[str, str]) -> None:
        """Removals, changed details, `status`, the verdict (`VERDICT_FIELDS`), the headline;
        nothing that already holds is written again. A verdict follows its status, so a
        `deny` never stands beside `gating`; `endpoint` precedes `deployed`, so whoever waits
        for `deployed` finds it."""
        known = self._tags()
        status_key = self.prefix + "status"
        verdict_keys = {self.prefix + field for field in VERDICT_FIELDS}
        removals = [k for k, v in updates.items() if v == "" and k in known]
        changed = {k: v for k, v in updates.items() if v and known.get(k) != v}
        # one registry call per step: it may write the tags of one call concurrently
        steps = (
            {k: v for k, v in changed.items() if k != status_key and k not in verdict_keys},
            {k: v for k, v in changed.items() if k == status_key},
            {k: v for k, v in changed.items() if k in verdict_keys},
        )
        try:
            if removals:
                self.registry.delete_version_tags(self.model, self.version, removals)
                for key in removals:
                    known.pop(key, None)
            for step in steps:
                if step:
                    self.registry.set_version_tags(self.model, self.version, step)
                    known.update(step)
            line = self._headline(known)
            if line is not None and known.get(self.headline_key) != line:
                self.registry.set_version_tags(self.model, self.version, {self.headline_key: line})
                known[self.headline_key] = line
        except Exception:
            self._known = None  # a write may or may not have landed: read afresh next time
            raise

    def _headline(self, known: dict[str, str]) -> str | None:
        status = known.get(self.prefix + "status")
        if status is None:
            return None

        def items(field: str) -> list[str]:
            if field in self._lists:
                return self._lists[field]
            text = known.get(self.prefix + field, "")
            lines = [line for line in text.splitlines() if line.strip()]
            return [_NUMBER.sub("", line) for line in lines]

        since = self._since or _parse_time(known.get(self.prefix + "updated_at"))
        return status_line.headline(
            status,
            self.version,
            since or datetime.now(UTC),
            decision=known.get(self.prefix + "decision"),
            warnings=items("warnings"),
            violations=items("violations"),
            endpoint=known.get(self.prefix + "endpoint"),
            error=known.get(self.prefix + "error"),
            superseded_by=known.get(self.prefix + "superseded_by"),
        )


_NUMBER = re.compile(r"^\d+\) ")


def _parse_time(text: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


class AuditRun:
    """One MLflow run per pipeline attempt, holding what was decided and why."""

    def __init__(self, registry: Registry, experiment: str) -> None:
        self.registry = registry
        self.experiment = experiment
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self._stage_started: dict[str, float] = {}
        # The JSON documents logged so far, by artifact name: the decision report reads them.
        self.documents: dict[str, Any] = {}

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
            from mlflow.entities import Param  # the client is already imported by now

            client.log_batch(  # one request, not one per parameter (alias -> serving latency)
                self.run_id,
                params=[
                    Param(key, redact_clip(redact(str(value)), 500))
                    for key, value in params.items()
                ],
            )
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
        self.documents[artifact_file] = content
        self.text(artifact_file, json.dumps(content, indent=2, sort_keys=True, default=str))

    def finish(self, outcome: str) -> None:
        if self.run_id is None:
            return
        self.stage("done")
        client = self.registry.client
        client.set_tag(self.run_id, "ztml.outcome", outcome)
        status = "FINISHED" if outcome in ("deployed", "unchanged", "planned") else "FAILED"
        client.set_terminated(self.run_id, status=status)
