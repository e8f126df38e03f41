"""Reconcile decisions against in-memory stand-ins for the registry, runtime and pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from mlflow_ztml.config import load_settings
from mlflow_ztml.controller.desired import Key, ModelSnapshot
from mlflow_ztml.controller.reconcile import ReconcileFailed, Reconciler
from mlflow_ztml.errors import DeployError, RegistryUnavailableError
from mlflow_ztml.pipeline import Outcome
from mlflow_ztml.registry import VersionFacts
from mlflow_ztml.runtimes.base import DeploymentStatus

KEY = Key("m", "staging")


def _facts(version: str, **changes) -> VersionFacts:
    facts = VersionFacts(
        name="m",
        version=version,
        uri=f"models:/m/{version}",
        source=None,
        run_id="r",
        experiment_id="0",
        model_id=None,
        aliases=[],
        current_stage=None,
        version_tags={},
        run_metrics={"accuracy": 0.9},
    )
    for key, value in changes.items():
        setattr(facts, key, value)
    return facts


class FakeRuntime:
    name = "process"

    def __init__(self) -> None:
        self.deployments: dict[str, DeploymentStatus] = {}

    def get(self, name: str) -> DeploymentStatus | None:
        return self.deployments.get(name)

    def list(self) -> list[DeploymentStatus]:
        return list(self.deployments.values())

    def run(self, model: str, env: str, version: str) -> None:
        self.deployments[f"{model}-{env}"] = DeploymentStatus(
            name=f"{model}-{env}",
            runtime="process",
            state="running",
            environment=env,
            model_name=model,
            model_version=version,
            model_uri=f"models:/{model}/{version}",
        )


@dataclass
class FakeRegistry:
    facts: dict[str, VersionFacts] = field(default_factory=dict)
    tags_written: list[tuple[str, str, dict]] = field(default_factory=list)
    tags_deleted: list[tuple[str, str, list]] = field(default_factory=list)
    down: bool = False

    def resolve(self, uri: str) -> VersionFacts:
        if self.down:
            raise RegistryUnavailableError("MLflow is down")
        return self.facts[uri.rsplit("/", 1)[1]]

    def set_version_tags(self, name: str, version: str, tags: dict) -> None:
        self.tags_written.append((name, version, tags))
        self.facts[version].version_tags.update(tags)

    def delete_version_tags(self, name: str, version: str, keys: list) -> None:
        self.tags_deleted.append((name, version, list(keys)))
        for key in keys:
            self.facts[version].version_tags.pop(key, None)


class FakePipeline:
    def __init__(self, runtime: FakeRuntime, registry: FakeRegistry) -> None:
        self.runtime = runtime
        self.registry = registry
        self.next_status = "deployed"
        self.runs: list[str] = []
        self.deleted: list[str] = []

    def runtime_for(self, environment, options) -> FakeRuntime:
        return self.runtime

    def run(self, uri: str, environment: str, options) -> Outcome:
        self.runs.append(uri)
        version = uri.rsplit("/", 1)[1]
        if self.next_status == "deployed":
            self.runtime.run("m", environment, version)
        return Outcome(
            status=self.next_status,
            model_name="m",
            model_version=version,
            environment=environment,
            deployment=options.name,
            runtime="process",
        )

    def delete(self, name: str, environment: str) -> None:
        self.deleted.append(name)
        self.runtime.deployments.pop(name)


class FakeView:
    def __init__(self, registry: FakeRegistry) -> None:
        self.registry = registry
        self.models: dict[str, ModelSnapshot] = {}

    def snapshot(self, name: str) -> ModelSnapshot | None:
        if self.registry.down:
            raise RegistryUnavailableError("MLflow is down")
        snapshot = self.models.get(name)
        if snapshot is not None:  # like RegistryView: every version's tags, read now
            snapshot.version_tags = {
                v: dict(f.version_tags) for v, f in self.registry.facts.items()
            }
        return snapshot

    def snapshots(self, full: bool = True):
        return iter(self.models.values())

    def versions_with_tag(self, tag: str) -> list:
        """The bulk check of rejected versions is tested against a real MLflow
        (test_poll_cost.py); here the poll queues rejected keys and the worker decides."""
        return []


@pytest.fixture
def world(tmp_path, monkeypatch):
    monkeypatch.setenv("ZTML_HOME", str(tmp_path))
    monkeypatch.delenv("ZTML_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    settings.controller.prune = {"staging": True}
    runtime, registry = FakeRuntime(), FakeRegistry()
    view = FakeView(registry)
    pipeline = FakePipeline(runtime, registry)

    def reconciler() -> Reconciler:
        return Reconciler(settings, pipeline, view=view)  # type: ignore[arg-type]

    return reconciler, runtime, registry, view, pipeline


def test_deploys_then_is_in_sync(world) -> None:
    make, _runtime, registry, view, pipeline = world
    registry.facts["1"] = _facts("1")
    view.models["m"] = ModelSnapshot("m", aliases={"staging": "1"})
    reconciler = make()
    assert reconciler.reconcile(KEY).action == "deploy"
    assert reconciler.reconcile(KEY).action == "in_sync"
    assert pipeline.runs == ["models:/m/1"]
    assert reconciler.differences() == []


def test_alias_moved_deploys_the_new_version(world) -> None:
    make, runtime, registry, view, _pipeline = world
    registry.facts.update({"1": _facts("1"), "2": _facts("2")})
    runtime.run("m", "staging", "1")
    view.models["m"] = ModelSnapshot("m", aliases={"staging": "2"})
    reconciler = make()
    assert reconciler.differences() == [KEY]
    report = reconciler.reconcile(KEY)
    assert (report.action, report.actual_version, report.desired_version) == ("deploy", "1", "2")
    assert runtime.get("m-staging").model_version == "2"


def test_rejected_version_waits_for_new_evidence_even_across_restarts(world) -> None:
    make, _runtime, registry, view, pipeline = world
    registry.facts["1"] = _facts("1")
    view.models["m"] = ModelSnapshot("m", aliases={"staging": "1"})
    pipeline.next_status = "rejected"
    reconciler = make()
    assert reconciler.reconcile(KEY).outcome == "rejected"
    assert reconciler.reconcile(KEY).action == "rejected_unchanged"
    assert make().reconcile(KEY).action == "rejected_unchanged"  # restart: the tag remembers
    assert len(pipeline.runs) == 1
    assert "ztml.staging.rejected_fingerprint" in registry.tags_written[0][2]

    registry.facts["1"].run_metrics = {"accuracy": 0.97}  # re-evaluated: new evidence
    pipeline.next_status = "deployed"
    assert reconciler.reconcile(KEY).outcome == "deployed"
    assert len(pipeline.runs) == 2
    # the rejection is history: its memory is deleted, never left as an empty value
    assert registry.tags_deleted[-1] == ("m", "1", ["ztml.staging.rejected_fingerprint"])
    assert all("" not in tags.values() for _, _, tags in registry.tags_written)


def test_failed_or_rolled_back_raise_for_a_retry(world) -> None:
    make, _runtime, registry, view, pipeline = world
    registry.facts["1"] = _facts("1")
    view.models["m"] = ModelSnapshot("m", aliases={"staging": "1"})
    reconciler = make()
    for status in ("failed", "rolled_back"):
        pipeline.next_status = status
        with pytest.raises(ReconcileFailed, match=status):
            reconciler.reconcile(KEY)
    registry.down = True
    with pytest.raises(ReconcileFailed, match="MLflow is down"):
        reconciler.reconcile(KEY)
    assert len(pipeline.runs) == 2


def test_prune_only_where_configured(world) -> None:
    make, runtime, _registry, view, pipeline = world
    view.models["m"] = ModelSnapshot("m")
    runtime.run("m", "staging", "1")
    runtime.run("m", "production", "1")
    reconciler = make()
    assert reconciler.differences() == [KEY]
    assert reconciler.reconcile(Key("m", "production")).action == "in_sync"
    assert reconciler.reconcile(KEY).action == "undeploy"
    assert pipeline.deleted == ["m-staging"]


def test_unmanaged_models_are_left_alone(world) -> None:
    make, _runtime, _registry, view, pipeline = world
    settings_view = make()
    settings_view.config.models = "tagged"
    view.models["m"] = ModelSnapshot("m", aliases={"staging": "1"})
    assert settings_view.reconcile(KEY).action == "not_managed"
    assert pipeline.runs == []


def test_an_unreachable_runtime_does_not_stop_the_others(world) -> None:
    make, runtime, _registry, view, _pipeline = world
    view.models["m"] = ModelSnapshot("m", aliases={"staging": "1", "champion": "1"})
    runtime.run("m", "staging", "1")
    reconciler = make()

    class Broken(FakeRuntime):
        def list(self):
            raise DeployError("cluster unreachable")

    reconciler._runtimes["production"] = Broken()
    assert reconciler.differences() == [Key("m", "production")]


def test_a_rejection_or_failure_says_what_the_controller_waits_for(world) -> None:
    make, _runtime, registry, view, pipeline = world
    registry.facts["1"] = _facts("1")
    view.models["m"] = ModelSnapshot("m", aliases={"staging": "1"})
    pipeline.next_status = "rejected"
    make().reconcile(KEY)
    waiting = registry.facts["1"].version_tags["ztml.staging.waiting"]
    assert waiting.startswith("rejected on this evidence; re-checked at every poll (every 30 s)")
    pipeline.next_status = "failed"
    registry.facts["1"].run_metrics = {"accuracy": 0.99}  # new evidence: a new attempt
    with pytest.raises(ReconcileFailed):
        make().reconcile(KEY)
    assert (
        registry.facts["1"]
        .version_tags["ztml.staging.waiting"]
        .startswith("retried with backoff (at most 300 s between attempts)")
    )


def test_alias_stage_conflicts_are_tags_on_the_versions_and_go_away(world) -> None:
    make, runtime, registry, view, pipeline = world
    registry.facts.update({"1": _facts("1"), "2": _facts("2")})
    runtime.run("m", "staging", "1")
    view.models["m"] = ModelSnapshot("m", aliases={"staging": "1"}, stages={"Staging": "2"})
    reconciler = make()
    # the poll queues the key although v1 already serves: the conflict is news
    assert reconciler.differences() == [KEY]
    assert reconciler.reconcile(KEY).action == "in_sync"
    tag = "ztml.staging.conflict"
    assert registry.facts["1"].version_tags[tag] == (
        "deploys to staging (alias staging) over v2 (stage Staging)"
    )
    assert registry.facts["2"].version_tags[tag] == (
        "not deployed to staging (stage Staging): v1 (alias staging) takes precedence"
    )
    written = len(registry.tags_written)
    assert reconciler.differences() == []  # shown already: nothing to queue, nothing to write
    assert reconciler.reconcile(KEY).action == "in_sync" and len(registry.tags_written) == written

    view.models["m"] = ModelSnapshot("m", aliases={"staging": "1"})  # v2 left the stage
    assert reconciler.differences() == [KEY]
    reconciler.reconcile(KEY)
    assert all(tag not in f.version_tags for f in registry.facts.values())
    assert reconciler.differences() == [] and pipeline.runs == []
