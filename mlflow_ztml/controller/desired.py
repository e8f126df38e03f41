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

import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from mlflow_ztml.config import ControllerConfig
from mlflow_ztml.registry import Registry, translate_errors

Source = Literal["tag", "alias", "stage"]
_RANK: dict[Source, int] = {"tag": 0, "alias": 1, "stage": 2}
# MLflow's largest page for a registered-model search (SEARCH_REGISTERED_MODEL_MAX_RESULTS_
# THRESHOLD): 20 requests list 20,000 models. Version searches use the same size.
_PAGE = 1000
# The incremental poll's first page: an idle registry answers it with the few models changed
# since the watermark plus one older model (the stop sign); later pages grow to `_PAGE`.
_FIRST_PAGE = 25
_NEWEST_FIRST = ["last_updated_timestamp DESC", "name ASC"]


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
    # environment -> version -> one sentence for that version's `ztml.<env>.conflict` tag
    conflict_notes: dict[str, dict[str, str]] = field(default_factory=dict)


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
            state.conflict_notes[env] = _conflict_notes(env, winner, losers)
    return state


def _conflict_notes(env: str, winner: Desired, losers: list[Desired]) -> dict[str, str]:
    """What each version of a conflict says in the MLflow UI: why it (does not) deploy."""
    lost: dict[str, list[str]] = {}
    for loser in losers:
        lost.setdefault(loser.version, []).append(loser.detail)
    notes = {
        winner.version: f"deploys to {env} ({winner.detail}) over "
        + ", ".join(f"v{version} ({' and '.join(details)})" for version, details in lost.items())
    }
    for version, details in lost.items():
        notes[version] = (
            f"not deployed to {env} ({' and '.join(details)}): "
            f"v{winner.version} ({winner.detail}) takes precedence"
        )
    return notes


def _version_number(version: str) -> int:
    try:
        return int(version)
    except ValueError:
        return -1


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


@dataclass
class _Cached:
    """A listed model's snapshot (without version tags), MLflow's `last_updated_timestamp` for
    it, and when (monotonic) its read began, so an older listing never overwrites a newer read
    by a worker."""

    snapshot: ModelSnapshot
    updated: int
    fetched: float


class RegistryView:
    """Reads `ModelSnapshot`s from MLflow: one model (a worker) or all managed ones (the poll).

    The poll works like a Kubernetes informer: a full listing (registered-model search with
    aliases, tags and the newest version per stage, plus one version search for explicit deploy
    tags) fills a cache at the first poll and at every resync; in between, `snapshots(full=
    False)` lists registered models newest first by MLflow's `last_updated_timestamp` and stops
    at the first one older than the watermark, so an idle registry costs one small request
    however many models there are. A stage transition, a new or deleted version and a model
    update move that timestamp; an alias or a tag does not (those arrive by webhook, and the
    worker's `snapshot` refreshes the cache), and a deleted model vanishes only from a full
    listing: hence the resync. The watermark is MLflow's own timestamps, never this clock:
    the newest timestamp a listing saw, taken `watermark_margin_seconds` back until that much
    time has passed since it was seen (a commit that lags its timestamp, or a replica whose
    clock is behind, lands inside the margin).
    """

    def __init__(self, registry: Registry, config: ControllerConfig) -> None:
        self.registry = registry
        self.client = registry.client
        self.config = config
        self._lock = threading.Lock()
        self._cache: dict[str, _Cached] = {}
        self._listed = False  # a full listing filled the cache
        # (monotonic time a listing returned, newest `last_updated_timestamp` it saw), oldest first
        self._marks: deque[tuple[float, int]] = deque()

    def snapshot(self, name: str) -> ModelSnapshot | None:
        """The model's snapshot, or None when the registered model does not exist. Also
        refreshes the poll's cache: this read is newer than any listing that began before it."""
        fetched = time.monotonic()
        with translate_errors(f"reading registered model {name}"):
            try:
                model = self.client.get_registered_model(name)
            except Exception as exc:
                if _not_found(exc):
                    self._forget(name, fetched)
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
        self._remember({name: (replace(snapshot, version_tags={}), _updated(model))}, fetched)
        return snapshot

    def snapshots(self, full: bool = True) -> Iterator[ModelSnapshot]:
        """Every managed model's snapshot: read afresh (`full`, and always before the first
        full listing), or the cache refreshed with what changed since the watermark."""
        config = self.config
        if isinstance(config.models, list):
            for name in config.models:
                snapshot = self.snapshot(name)
                if snapshot is not None:
                    yield snapshot
            return
        if full or not self._listed:
            self._list_all()
        else:
            self._list_changed()
        with self._lock:
            cached = [entry.snapshot for entry in self._cache.values()]
        for snapshot in cached:
            if is_managed(snapshot, config):
                yield snapshot

    def _filter(self) -> str | None:
        if self.config.models == "tagged":
            return f"tags.`{self.config.managed_tag}` = 'true'"
        return None

    def _explicit(self) -> dict[str, dict[str, str]]:
        """model -> version -> deploy tag value, for every version carrying the deploy tag."""
        tag = self.config.deploy_tag
        explicit: dict[str, dict[str, str]] = {}
        for version in self._search_versions(f"tags.`{tag}` LIKE '%'"):
            explicit.setdefault(version.name, {})[str(version.version)] = version.tags[tag]
        return explicit

    def _list_all(self) -> None:
        """The full listing: replaces the cache (models gone from MLflow leave it)."""
        fetched = time.monotonic()
        with translate_errors("listing registered models"):
            explicit = self._explicit()
            found: dict[str, tuple[ModelSnapshot, int]] = {}
            token = None
            while True:
                page = self.client.search_registered_models(
                    filter_string=self._filter(), max_results=_PAGE, page_token=token
                )
                for model in page:
                    snapshot = _from_registered_model(model)
                    snapshot.explicit = explicit.get(snapshot.name, {})
                    found[snapshot.name] = (snapshot, _updated(model))
                token = page.token
                if not token:
                    break
        with self._lock:
            for name in [n for n, e in self._cache.items() if n not in found]:
                if self._cache[name].fetched <= fetched:  # not read by a worker since
                    del self._cache[name]
        self._remember(found, fetched)
        self._mark(max((updated for _, updated in found.values()), default=0))
        self._listed = True

    def _list_changed(self) -> None:
        """Models whose `last_updated_timestamp` is at or after the watermark, newest first;
        only those whose timestamp moved since they were cached are taken in."""
        fetched = time.monotonic()
        cutoff = self._watermark(fetched)
        changed: dict[str, tuple[ModelSnapshot, int]] = {}
        newest = 0
        with translate_errors("listing changed registered models"):
            token, size = None, _FIRST_PAGE
            while True:
                page = self.client.search_registered_models(
                    filter_string=self._filter(),
                    max_results=size,
                    order_by=_NEWEST_FIRST,
                    page_token=token,
                )
                older = False
                for model in page:
                    updated = _updated(model)
                    if updated < cutoff:
                        older = True
                        break
                    newest = max(newest, updated)
                    with self._lock:
                        entry = self._cache.get(model.name)
                    if entry is None or entry.updated != updated:
                        changed[model.name] = (_from_registered_model(model), updated)
                token = page.token
                if older or not token:
                    break
                size = min(_PAGE, size * 4)
            if changed:  # a new version may carry a deploy tag: read them all, once
                explicit = self._explicit()
                for name, (snapshot, _) in changed.items():
                    snapshot.explicit = explicit.get(name, {})
        self._remember(changed, fetched)
        self._mark(newest)

    def _watermark(self, now: float) -> int:
        """The oldest `last_updated_timestamp` the incremental listing must still look at: the
        newest one seen, less `watermark_margin_seconds`; or, once a listing saw it that long
        ago, that timestamp itself (whatever was stamped before it has committed since)."""
        margin = self.config.watermark_margin_seconds
        with self._lock:
            while len(self._marks) > 1 and self._marks[1][0] <= now - margin:
                self._marks.popleft()  # a newer settled mark makes the oldest one moot
            marks = list(self._marks)
        if not marks:
            return 0
        cutoff = max(mark for _, mark in marks) - int(margin * 1000)
        settled = [mark for at, mark in marks if at <= now - margin]
        return max([cutoff, *settled])

    def _mark(self, newest: int) -> None:
        if newest:
            with self._lock:
                self._marks.append((time.monotonic(), newest))

    def _remember(self, found: dict[str, tuple[ModelSnapshot, int]], fetched: float) -> None:
        with self._lock:
            for name, (snapshot, updated) in found.items():
                entry = self._cache.get(name)
                if entry is None or entry.fetched <= fetched:
                    self._cache[name] = _Cached(snapshot, updated, fetched)

    def _forget(self, name: str, fetched: float) -> None:
        with self._lock:
            entry = self._cache.get(name)
            if entry is not None and entry.fetched <= fetched:
                del self._cache[name]

    def versions_with_tag(self, tag: str) -> list[Any]:
        """Every version carrying a non-empty `tag` (with all its tags), in one paged search:
        how the poll finds what the controller already judged (`ztml.<env>.rejected_
        fingerprint`) without reading any version on its own."""
        with translate_errors(f"searching versions tagged {tag}"):
            found = self._search_versions(f"tags.`{tag}` LIKE '%'")
        return [version for version in found if (version.tags or {}).get(tag)]

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


def _updated(model: Any) -> int:
    return int(getattr(model, "last_updated_timestamp", None) or 0)


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
