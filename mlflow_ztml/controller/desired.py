"""Desired state: which version of which model should run in which environment.

Read from the registry only (never from the runtimes), from three sources:

- aliases: `controller.aliases` maps an alias to an environment (`champion -> production`);
- legacy stages: `controller.stages` maps a stage to an environment; the newest version in
  that stage counts (MLflow fires no webhook for stage transitions: only the poll sees them);
- an explicit request: the version tag `controller.deploy_tag` (default `ztml.deploy`) whose
  value names one environment or a comma-separated list.

Precedence when sources name different versions for one environment: explicit tag > alias >
stage, and within one source the newest (highest) version wins. A tag is the most deliberate
act (someone typed the environment's name on that version); an alias is a pointer moved in the
UI; stages are the legacy mechanism. The losers are reported as `conflicts` so `/status` and the
logs say why a version was not picked.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from mlflow_ztml.config import ControllerConfig
from mlflow_ztml.registry import Registry, translate_errors

Source = Literal["tag", "alias", "stage"]
_RANK: dict[Source, int] = {"tag": 0, "alias": 1, "stage": 2}
_PAGE = 200


@dataclass(frozen=True, order=True)
class Key:
    """One unit of reconcile work: a model in an environment (deployment `<model>-<env>`)."""

    model: str
    environment: str

    def __str__(self) -> str:
        return f"{self.model}/{self.environment}"


@dataclass(frozen=True)
class Desired:
    version: str
    source: Source
    detail: str  # e.g. "alias champion", "stage Production", "tag ztml.deploy=staging"


@dataclass
class ModelSnapshot:
    """The registry facts about one registered model that desired state depends on."""

    name: str
    tags: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> version
    stages: dict[str, str] = field(default_factory=dict)  # stage -> newest version in it
    explicit: dict[str, str] = field(default_factory=dict)  # version -> deploy tag value
    # version -> its tags; filled by `RegistryView.snapshot` (one model), not by the poll
    version_tags: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass
class DesiredState:
    wanted: dict[str, Desired] = field(default_factory=dict)  # environment -> version
    conflicts: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def is_managed(snapshot: ModelSnapshot, config: ControllerConfig) -> bool:
    """Whether the controller acts on this model at all (`controller.models`)."""
    if config.models == "all":
        return True
    if config.models == "tagged":
        return snapshot.tags.get(config.managed_tag, "").strip().lower() == "true"
    return snapshot.name in config.models


def compute_desired(
    snapshot: ModelSnapshot, config: ControllerConfig, environments: Iterable[str]
) -> DesiredState:
    """A pure function of the snapshot and the configuration (unit-tested on its own)."""
    known = set(environments)
    candidates: dict[str, list[Desired]] = {}
    state = DesiredState()

    def offer(env: str, desired: Desired) -> None:
        if env not in known:
            state.problems.append(
                f"{snapshot.name} v{desired.version}: {desired.detail} names environment "
                f"{env!r}, which ztml.yaml does not declare"
            )
            return
        candidates.setdefault(env, []).append(desired)

    for version, value in snapshot.explicit.items():
        for env in (part.strip() for part in value.split(",")):
            if env:
                offer(env, Desired(version, "tag", f"tag {config.deploy_tag}={env}"))
    for alias, version in snapshot.aliases.items():
        if alias in config.aliases:
            offer(config.aliases[alias], Desired(version, "alias", f"alias {alias}"))
    for stage, version in snapshot.stages.items():
        if stage in config.stages:
            offer(config.stages[stage], Desired(version, "stage", f"stage {stage}"))

    for env, offered in sorted(candidates.items()):
        ranked = sorted(offered, key=lambda d: (_RANK[d.source], -_version_number(d.version)))
        winner = ranked[0]
        state.wanted[env] = winner
        losers = [d for d in ranked[1:] if d.version != winner.version]
        if losers:
            state.conflicts.append(
                f"{snapshot.name} in {env}: v{winner.version} ({winner.detail}) wins over "
                + ", ".join(f"v{d.version} ({d.detail})" for d in losers)
            )
    return state


def _version_number(version: str) -> int:
    try:
        return int(version)
    except ValueError:
        return -1


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


class RegistryView:
    """Reads `ModelSnapshot`s from MLflow: one model (a worker) or all managed ones (the poll).

    The poll costs a few paged calls however many models there are: registered-model search
    carries aliases, tags and the newest version per stage; one version search finds every
    explicit deploy tag.
    """

    def __init__(self, registry: Registry, config: ControllerConfig) -> None:
        self.registry = registry
        self.client = registry.client
        self.config = config

    def snapshot(self, name: str) -> ModelSnapshot | None:
        """The model's snapshot, or None when the registered model does not exist."""
        with translate_errors(f"reading registered model {name}"):
            try:
                model = self.client.get_registered_model(name)
            except Exception as exc:
                if _not_found(exc):
                    return None
                raise
            snapshot = _from_registered_model(model)
            # Every version with its tags, in one paged call: explicit requests and the
            # controller's own memory (`ztml.<env>.rejected_fingerprint`) both live there.
            for version in self._search_versions(f"name = '{_quote(name)}'"):
                tags = dict(version.tags or {})
                snapshot.version_tags[str(version.version)] = tags
                if self.config.deploy_tag in tags:
                    snapshot.explicit[str(version.version)] = tags[self.config.deploy_tag]
        return snapshot

    def snapshots(self) -> Iterator[ModelSnapshot]:
        """Every managed model's snapshot."""
        config = self.config
        if isinstance(config.models, list):
            for name in config.models:
                snapshot = self.snapshot(name)
                if snapshot is not None:
                    yield snapshot
            return
        with translate_errors("listing registered models"):
            explicit: dict[str, dict[str, str]] = {}
            for version in self._search_versions(f"tags.`{config.deploy_tag}` LIKE '%'"):
                explicit.setdefault(version.name, {})[str(version.version)] = version.tags[
                    config.deploy_tag
                ]
            filter_string = (
                f"tags.`{config.managed_tag}` = 'true'" if config.models == "tagged" else None
            )
            models: list[Any] = []
            token = None
            while True:
                page = self.client.search_registered_models(
                    filter_string=filter_string, max_results=_PAGE, page_token=token
                )
                models.extend(page)
                token = page.token
                if not token:
                    break
        for model in models:
            snapshot = _from_registered_model(model)
            snapshot.explicit = explicit.get(snapshot.name, {})
            if is_managed(snapshot, config):
                yield snapshot

    def _search_versions(self, filter_string: str) -> list[Any]:
        found: list[Any] = []
        token = None
        while True:
            page = self.client.search_model_versions(
                filter_string, max_results=_PAGE, page_token=token
            )
            found.extend(page)
            token = page.token
            if not token:
                return found


def _from_registered_model(model: Any) -> ModelSnapshot:
    stages: dict[str, str] = {}
    for version in model.latest_versions or []:
        stage = version.current_stage
        if stage and stage != "None":
            current = stages.get(stage)
            if current is None or _version_number(str(version.version)) > _version_number(current):
                stages[stage] = str(version.version)
    aliases = model.aliases or {}
    if not isinstance(aliases, dict):  # older entities: a list of RegisteredModelAlias
        aliases = {a.alias: str(a.version) for a in aliases}
    return ModelSnapshot(
        name=model.name,
        tags=dict(model.tags or {}),
        aliases={alias: str(version) for alias, version in aliases.items()},
        stages=stages,
    )


def _not_found(exc: Exception) -> bool:
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException) and exc.error_code == "RESOURCE_DOES_NOT_EXIST"
