"""Which MLflow tracking store ztml talks to, said out loud when the user named none.

With neither `MLFLOW_TRACKING_URI` nor `mlflow.tracking_uri` in ztml.yaml, MLflow falls back
to a store in the working directory (`./mlflow.db`, or `./mlruns` where one holds data) and
creates it on first use: a typo'd or forgotten variable then looks like "model not found" in a
fresh, empty database. ztml instead:

- uses that local store when it already exists, and says so (one line on stderr);
- refuses, with a message naming the variable to set, when a command needs the registry and no
  local store exists (nothing is created);
- respects a URI the caller set in-process with `mlflow.set_tracking_uri()` (plugin users).

The resolved URI is pinned in the settings (absolute), so every component (registry client,
serving processes started elsewhere) uses the same store.
"""

from __future__ import annotations

import os
import posixpath
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from mlflow_ztml.config import Settings
from mlflow_ztml.errors import ConfigError
from mlflow_ztml.redact import redact

UNSET_REASON = "MLFLOW_TRACKING_URI is not set"


@dataclass(frozen=True)
class TrackingStore:
    """The store a command will use: its URI, where that came from, whether it exists."""

    uri: str
    source: str
    exists: bool = True

    @property
    def notice(self) -> str | None:
        """The line to show the user, only when the store is MLflow's implicit local default
        and is used (a command that needs no registry uses none that does not exist)."""
        if self.source != "default" or not self.exists:
            return None
        return f"ztml: using MLflow tracking store {redact(self.uri)} ({UNSET_REASON})"

    def notice_once(self) -> str | None:
        """`notice`, the first time this process asks for it (the plugin resolves per call)."""
        notice = self.notice
        if notice is None or notice in _announced:
            return None
        _announced.add(notice)
        return notice


_announced: set[str] = set()


def find(settings: Settings) -> TrackingStore:
    """Where the tracking URI comes from: ztml.yaml, the environment, the caller, or MLflow's
    local default (and whether that default store exists yet)."""
    if settings.mlflow.tracking_uri:
        return TrackingStore(settings.mlflow.tracking_uri, "ztml.yaml")
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return TrackingStore(os.environ["MLFLOW_TRACKING_URI"], "MLFLOW_TRACKING_URI")
    if "mlflow" not in sys.modules:  # nothing in this process can have set a URI: no import
        uri = default_uri()
        return TrackingStore(uri, "default", exists=_local_store_exists(uri))
    import mlflow

    if mlflow.is_tracking_uri_set():  # mlflow.set_tracking_uri() in this process
        return TrackingStore(mlflow.get_tracking_uri(), "mlflow.set_tracking_uri")
    uri = mlflow.get_tracking_uri()  # MLflow's default, resolved to an absolute local path
    return TrackingStore(uri, "default", exists=_local_store_exists(uri))


def default_uri(cwd: Path | None = None) -> str:
    """MLflow's default tracking URI for `cwd`, as `mlflow.get_tracking_uri()` answers it
    when nothing set one, computed without importing mlflow (about 2 s of a CLI command).

    MLflow 3 keeps `./mlruns` when it holds experiment data (a numbered directory with a
    meta.yaml), else uses `sqlite:///mlflow.db`; both as absolute URIs. tests/test_store.py
    checks this against mlflow's own answer.
    """
    base = Path(os.path.abspath(cwd or os.getcwd()))
    mlruns = base / "mlruns"
    try:
        with os.scandir(mlruns) as entries:
            for entry in entries:
                if (
                    entry.is_dir()
                    and entry.name.isdigit()
                    and os.path.lexists(os.path.join(entry.path, "meta.yaml"))
                ):
                    return mlruns.as_uri()
    except OSError:
        pass
    # mlflow's path_to_local_sqlite_uri; urllib's pathname2url is quote() on POSIX
    database = posixpath.abspath(quote(str(base / "mlflow.db")))
    return "sqlite:///" + database


def use(settings: Settings, need_registry: bool = True) -> TrackingStore:
    """Resolve the store for a command and pin it in `settings.mlflow.tracking_uri`.

    Raises ConfigError when `need_registry` and the only candidate is a local default store
    that does not exist (MLflow would silently create an empty one).
    """
    store = find(settings)
    if store.exists:
        settings.mlflow.tracking_uri = store.uri
    elif need_registry:
        raise ConfigError(
            f"{UNSET_REASON} (nor mlflow.tracking_uri in ztml.yaml) and there is no local MLflow "
            f"store at {redact(store.uri)}; set MLFLOW_TRACKING_URI to your tracking server "
            "(e.g. export MLFLOW_TRACKING_URI=http://127.0.0.1:5000) or run ztml where your "
            "mlflow.db is"
        )
    return store


def _local_store_exists(uri: str) -> bool:
    parts = urlsplit(uri)
    if parts.scheme == "sqlite":
        path = unquote(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else ""
        return bool(path) and Path(path).is_file()
    if parts.scheme in ("file", ""):
        return Path(unquote(parts.path)).is_dir()
    return True  # a remote default (a Databricks profile, ...) is the user's own choice
