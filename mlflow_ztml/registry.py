"""Everything that talks to MLflow: resolve a model URI, read a version's evidence, write tags.

MLflow's client retries a dead server for minutes by default; ztml bounds that with
`mlflow.request_max_retries` / `request_timeout_seconds` from the settings (a user's own
`MLFLOW_HTTP_REQUEST_*` environment variables still win), so "MLflow is down" becomes a
`RegistryUnavailableError` in seconds, not a hang.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException, RestException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)

from mlflow_ztml.config import Settings
from mlflow_ztml.errors import ModelNotFoundError, RegistryUnavailableError, ZtmlError
from mlflow_ztml.redact import safe

_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<ref>[^/]+)|@(?P<alias>[^/]+))$")
_LOGGED_MODEL_SOURCE = re.compile(r"^models:/(?P<model_id>m-[0-9a-f]+)$")
_VERSIONED_URI = re.compile(r"^models:/[^/@]+/[0-9]+$")
_CACHE_ENTRIES = 256
_CACHE_SECONDS = 60.0
_STATUS_SUFFIX = ".status"
_PARALLEL_WRITES = 8
_NOT_FOUND = {ErrorCode.Name(RESOURCE_DOES_NOT_EXIST), ErrorCode.Name(INVALID_PARAMETER_VALUE)}


@dataclass(frozen=True)
class ModelUri:
    """A parsed `models:/NAME/VERSION`, `models:/NAME/STAGE`, `models:/NAME/latest` or `@ALIAS`."""

    name: str
    version: str | None = None
    alias: str | None = None
    stage: str | None = None

    @classmethod
    def parse(cls, uri: str) -> ModelUri:
        match = _MODEL_URI.match(uri.strip())
        if not match:
            raise ModelNotFoundError(
                f"{uri!r} is not a registered-model URI; use models:/NAME/VERSION or "
                "models:/NAME@ALIAS"
            )
        name, ref, alias = match["name"], match["ref"], match["alias"]
        if alias:
            return cls(name=name, alias=alias)
        if ref and ref.isdigit():
            return cls(name=name, version=ref)
        return cls(name=name, stage=ref)


@dataclass
class VersionFacts:
    """One registered model version and the run behind it, as read from MLflow."""

    name: str
    version: str
    uri: str
    source: str | None
    run_id: str | None
    experiment_id: str | None
    model_id: str | None
    aliases: list[str]
    current_stage: str | None
    version_tags: dict[str, str]
    run_metrics: dict[str, float] = field(default_factory=dict)
    run_tags: dict[str, str] = field(default_factory=dict)
    model_metrics: dict[str, float] = field(default_factory=dict)
    datasets: list[dict[str, Any]] = field(default_factory=list)


def _bound_http_retries(settings: Settings) -> None:
    os.environ.setdefault(
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(settings.mlflow.request_max_retries)
    )
    os.environ.setdefault(
        "MLFLOW_HTTP_REQUEST_TIMEOUT", str(settings.mlflow.request_timeout_seconds)
    )
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    # Audit runs are ztml's bookkeeping: no "View run at ..." lines on the user's stdout.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


@contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Turn MLflow's exceptions into ztml's typed errors with a message a user can act on."""
    try:
        yield
    except ZtmlError:
        raise
    except RestException as exc:
        if exc.error_code in _NOT_FOUND:
            raise ModelNotFoundError(f"{what}: {exc.message}") from None
        raise RegistryUnavailableError(
            f"{what}: MLflow answered {exc.error_code}: {exc.message}"
        ) from None
    except MlflowException as exc:
        message = str(exc.message if hasattr(exc, "message") else exc)
        if exc.error_code in _NOT_FOUND and "API request" not in message:
            raise ModelNotFoundError(f"{what}: {message}") from None
        raise RegistryUnavailableError(
            f"{what}: cannot reach MLflow ({safe((message.splitlines() or [''])[0], 300)}); "
            "check that the tracking server is up and MLFLOW_TRACKING_URI / "
            "mlflow.tracking_uri points at it"
        ) from None
    except OSError as exc:
        raise RegistryUnavailableError(f"{what}: cannot reach MLflow: {exc}") from None


class Registry:
    """A thin, typed view of the MLflow tracking server and model registry."""

    def __init__(self, settings: Settings, client: MlflowClient | None = None) -> None:
        _bound_http_retries(settings)
        self.settings = settings
        self.tracking_uri = settings.tracking_uri()
        self.client = client or MlflowClient(
            tracking_uri=self.tracking_uri, registry_uri=settings.mlflow.registry_uri
        )
        self._cache: OrderedDict[tuple[str, str], tuple[float, Any]] = OrderedDict()
        self._cache_lock = threading.Lock()

    def resolve(self, model_uri: str) -> VersionFacts:
        """Read the version a URI names, with its run, logged model and datasets."""
        ref = ModelUri.parse(model_uri)
        with translate_errors(f"resolving {model_uri}"):
            facts = facts_of_version(self._version(ref))
            # The run and the logged model are independent reads: in parallel, one round trip.
            if facts.run_id and facts.model_id:
                with ThreadPoolExecutor(max_workers=2) as pool:
                    run = pool.submit(self._get_run, facts.run_id)
                    logged = pool.submit(self._get_logged_model_metrics, facts.model_id)
                    add_run(facts, run.result())
                    facts.model_metrics = logged.result()
            elif facts.run_id:
                add_run(facts, self._get_run(facts.run_id))
            elif facts.model_id:
                facts.model_metrics = self._get_logged_model_metrics(facts.model_id)
        return facts

    def runs(self, run_ids: list[str]) -> dict[str, Any]:
        """The runs with these ids, in a few requests whatever their number (the controller's
        poll re-checks the evidence of every rejected version with this): one experiment
        listing, then `run_id IN (...)` searches of `_RUN_CHUNK` ids each. A deleted run is
        found too (as `get_run` finds it); a run that no longer exists is simply absent."""
        from mlflow.entities import ViewType

        wanted = sorted(set(run_ids))
        if not wanted:
            return {}
        found: dict[str, Any] = {}
        with translate_errors("reading runs in bulk"):
            experiments = [
                e.experiment_id
                for e in _all_pages(
                    lambda token: self.client.search_experiments(
                        view_type=ViewType.ALL, max_results=1000, page_token=token
                    )
                )
            ]
            for start in range(0, len(wanted), _RUN_CHUNK):
                chunk = wanted[start : start + _RUN_CHUNK]
                ids = ", ".join(f"'{_quote(run_id)}'" for run_id in chunk)
                for run in _all_pages(
                    lambda token, ids=ids: self.client.search_runs(
                        experiments,
                        filter_string=f"attributes.run_id IN ({ids})",
                        run_view_type=ViewType.ALL,
                        max_results=1000,
                        page_token=token,
                    )
                ):
                    found[run.info.run_id] = run
        return found

    def _version(self, ref: ModelUri) -> Any:
        if ref.alias:
            return self.client.get_model_version_by_alias(ref.name, ref.alias)
        if ref.version:
            return self.client.get_model_version(ref.name, ref.version)
        stages = None if ref.stage in (None, "latest") else [ref.stage]
        versions = self.client.get_latest_versions(ref.name, stages=stages)
        if not versions:
            raise ModelNotFoundError(f"models:/{ref.name}/{ref.stage}: no version in that stage")
        return max(versions, key=lambda v: int(v.version))

    def _get_run(self, run_id: str) -> Any | None:
        """The run, or None when it was deleted for good (its evidence is simply missing)."""
        try:
            return self.client.get_run(run_id)
        except RestException as exc:
            if exc.error_code in _NOT_FOUND:
                return None
            raise

    def _get_logged_model_metrics(self, model_id: str) -> dict[str, float]:
        try:
            logged = self.client.get_logged_model(model_id)
        except MlflowException:
            return {}  # older servers have no logged models; run metrics remain the evidence
        return {m.key: m.value for m in (logged.metrics or [])}

    def model_info(self, model_uri: str) -> Any:
        """`mlflow.models.get_model_info` (flavors, signature) without downloading the model.
        A version's files never change, so `models:/NAME/VERSION` is read once per process (the
        evidence and the gate's requirements check both ask)."""
        return self._immutable(("info", model_uri), lambda: self._model_info(model_uri))

    def _model_info(self, model_uri: str) -> Any:
        import mlflow.models

        with translate_errors(f"reading MLmodel of {model_uri}"), _tracking(self.tracking_uri):
            return mlflow.models.get_model_info(model_uri)

    def _immutable(self, key: tuple[str, str], read: Callable[[], Any]) -> Any:
        """`read()`, remembered for `_CACHE_SECONDS` for a numbered version's URI (bounded,
        least recently used): long enough for one pipeline attempt to read it once, short
        enough that a model deleted and registered again under its name is soon read afresh."""
        if not _VERSIONED_URI.match(key[1]):
            return read()
        now = time.monotonic()
        with self._cache_lock:
            cached = self._cache.get(key)
            if cached is not None and now - cached[0] < _CACHE_SECONDS:
                self._cache.move_to_end(key)
                return cached[1]
        value = read()
        with self._cache_lock:
            self._cache[key] = (now, value)
            self._cache.move_to_end(key)
            while len(self._cache) > _CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return value

    def requirements(self, model_uri: str) -> str | None:
        """The model's requirements.txt, or None when the model was logged without one
        (remembered per numbered version, like `model_info`)."""
        return self._immutable(("requirements", model_uri), lambda: self._requirements(model_uri))

    def _requirements(self, model_uri: str) -> str | None:
        import mlflow.artifacts

        with (
            translate_errors(f"reading requirements.txt of {model_uri}"),
            _tracking(self.tracking_uri),
        ):
            try:
                path = mlflow.artifacts.download_artifacts(
                    artifact_uri=f"{model_uri}/requirements.txt"
                )
            except (MlflowException, OSError) as exc:
                if "API request" in str(exc):
                    raise
                return None
        with open(path, encoding="utf-8") as handle:
            return handle.read()

    def versions_tagged(self, name: str, key: str, value: str) -> list[str]:
        """Versions of `name` whose tag `key` equals `value` (e.g. what serves in an env)."""
        with translate_errors(f"searching versions of {name}"):
            found = self.client.search_model_versions(
                f"name = '{_quote(name)}' and tag.`{key}` = '{_quote(value)}'"
            )
        return sorted((str(v.version) for v in found), key=int)

    def set_version_tags(self, name: str, version: str, tags: dict[str, str]) -> None:
        """Write `tags`: all at once, then the `*.status` ones (the status is what watchers act
        on: whoever sees `deployed` finds the endpoint already there). Two writers creating the
        same tag at once (concurrent deploys of one model) make MLflow's SQL store fail one
        insert with a unique-constraint error; that write is retried with a short, bounded
        backoff instead of failing the deploy."""
        first = {k: v for k, v in tags.items() if not k.endswith(_STATUS_SUFFIX)}
        last = {k: v for k, v in tags.items() if k.endswith(_STATUS_SUFFIX)}
        with translate_errors(f"writing tags on {name} v{version}"):
            for batch in (first, last):
                self._in_parallel(
                    [
                        lambda k=key, v=value: _retry_insert_race(
                            lambda: self.client.set_model_version_tag(name, version, k, v)
                        )
                        for key, value in batch.items()
                    ]
                )

    def _in_parallel(self, calls: list[Callable[[], object]]) -> None:
        """Run independent MLflow writes at once (MLflow has no batch call for version tags):
        a stage's tags cost one round trip, not one per tag. The first error is raised after
        all have finished."""
        if len(calls) <= 1:
            for call in calls:
                call()
            return
        with ThreadPoolExecutor(max_workers=min(len(calls), _PARALLEL_WRITES)) as pool:
            futures = [pool.submit(call) for call in calls]
        for future in futures:
            future.result()

    def delete_version_tags(self, name: str, version: str, keys: list[str]) -> None:
        """Remove tags that no longer hold (a superseded version's endpoint); a tag that is
        already gone is fine."""

        def delete(key: str) -> None:
            try:
                self.client.delete_model_version_tag(name, version, key)
            except RestException as exc:
                if exc.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
                    raise

        with translate_errors(f"removing tags from {name} v{version}"):
            self._in_parallel([lambda k=key: delete(k) for key in keys])

    def version_tags(self, name: str, version: str) -> dict[str, str]:
        """The tags of one model version (what the MLflow UI shows next to it)."""
        with translate_errors(f"reading tags of {name} v{version}"):
            return dict(self.client.get_model_version(name, version).tags or {})

    def download_model(self, model_uri: str, dst: Path) -> Path:
        """Download the model files of `model_uri` into `dst` (with this control plane's
        credentials) and return the directory holding `MLmodel`."""
        return download_model(model_uri, dst, self.tracking_uri, self.settings.mlflow.registry_uri)


def download_model(
    model_uri: str, dst: Path, tracking_uri: str | None, registry_uri: str | None = None
) -> Path:
    """Download `model_uri` (models:/NAME/VERSION, runs:/..., a local directory) into `dst`.

    The control plane, which holds the registry credentials, calls this; the serving process then
    loads the local copy and needs no credentials at all."""
    import mlflow.artifacts

    dst.mkdir(parents=True, exist_ok=True)
    with translate_errors(f"downloading {model_uri}"), _tracking(tracking_uri, registry_uri):
        path = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst)))
    if not (path / "MLmodel").is_file():
        raise ModelNotFoundError(f"{model_uri} is not an MLflow model (no MLmodel file)")
    return path


_RUN_CHUNK = 100


def facts_of_version(version: Any) -> VersionFacts:
    """The version's own facts (no run, no logged model yet) from a `ModelVersion` entity, as
    `get_model_version` or `search_model_versions` return it."""
    return VersionFacts(
        name=version.name,
        version=str(version.version),
        uri=f"models:/{version.name}/{version.version}",
        source=version.source,
        run_id=version.run_id or None,
        experiment_id=None,
        model_id=getattr(version, "model_id", None) or _model_id(version.source),
        aliases=list(getattr(version, "aliases", []) or []),
        current_stage=version.current_stage,
        version_tags=dict(version.tags or {}),
    )


def add_run(facts: VersionFacts, run: Any | None) -> None:
    """Add the run's evidence (metrics, tags, datasets) to `facts`; None: the run is gone."""
    if run is None:
        facts.run_id = None
        return
    facts.experiment_id = run.info.experiment_id
    facts.run_metrics = dict(run.data.metrics)
    facts.run_tags = dict(run.data.tags)
    for dataset_input in run.inputs.dataset_inputs if run.inputs else []:
        dataset = dataset_input.dataset
        facts.datasets.append(
            {
                "name": dataset.name,
                "digest": dataset.digest,
                "source_type": dataset.source_type,
                "source": dataset.source,
                "profile": dataset.profile,  # JSON text, e.g. {"num_rows": 60, ...}
                "context": next(
                    (t.value for t in dataset_input.tags if t.key == "mlflow.data.context"),
                    None,
                ),
            }
        )


def _all_pages(search: Callable[[str | None], Any]) -> Iterator[Any]:
    """Every item of a paged MLflow search (`search(page_token)` returns a PagedList)."""
    token = None
    while True:
        page = search(token)
        yield from page
        token = page.token
        if not token:
            return


_TRACKING_LOCK = threading.RLock()
_RACE_MARKERS = ("unique constraint", "integrityerror", "already exists", "duplicate")
_RACE_ATTEMPTS = 6
_RACE_BACKOFF_SECONDS = 0.05


def _is_insert_race(exc: MlflowException) -> bool:
    message = str(getattr(exc, "message", exc)).lower()
    return any(marker in message for marker in _RACE_MARKERS)


def _retry_insert_race(write: Callable[[], object]) -> None:
    """Run `write`, retrying MLflow's insert race (unique constraint / already exists) up to
    `_RACE_ATTEMPTS` times with a jittered exponential backoff (at most ~2 s in all)."""
    for attempt in range(_RACE_ATTEMPTS):
        try:
            write()
            return
        except MlflowException as exc:
            if not _is_insert_race(exc) or attempt == _RACE_ATTEMPTS - 1:
                raise
            jitter = 0.5 + random.random()  # noqa: S311 - spreads retries, not a secret
            time.sleep(_RACE_BACKOFF_SECONDS * 2**attempt * jitter)


def _quote(value: str) -> str:
    return value.replace("'", "\\'")


def _model_id(source: str | None) -> str | None:
    match = _LOGGED_MODEL_SOURCE.match(source or "")
    return match["model_id"] if match else None


@contextmanager
def _tracking(uri: str | None, registry_uri: str | None = None) -> Iterator[None]:
    """Point MLflow's fluent APIs at `uri` (and the registry at `registry_uri`, when given) for
    the duration, then restore the previous values."""
    import mlflow

    # The URIs are process-wide: a thread that changes them holds the lock until it restores
    # them, so parallel reads (evidence, the controller's workers) never see another's URI.
    # When they already point there (the usual case), nothing is changed and nothing is held.
    with _TRACKING_LOCK:
        same = (uri is None or mlflow.get_tracking_uri() == uri) and (
            registry_uri is None or mlflow.get_registry_uri() == registry_uri
        )
        if not same:
            previous = mlflow.get_tracking_uri() if uri is not None else None
            previous_registry = mlflow.get_registry_uri() if registry_uri is not None else None
            if uri is not None:
                mlflow.set_tracking_uri(uri)
            if registry_uri is not None:
                mlflow.set_registry_uri(registry_uri)
            try:
                yield
            finally:
                if previous is not None:
                    mlflow.set_tracking_uri(previous)
                if previous_registry is not None:
                    mlflow.set_registry_uri(previous_registry)
            return
    yield
