"""Find the model: resolve an MLflow URI (or a local directory), download it, read its metadata.

`models:/NAME/VERSION`, `models:/NAME@alias` and `models:/NAME/Stage` are resolved to a concrete
version *before* download, so the version reported in /model/info and the metrics is the one
that was downloaded. The tracking/registry server comes from `MLFLOW_TRACKING_URI` (and
`MLFLOW_REGISTRY_URI`); downloads go under `$TMPDIR` so a read-only root filesystem works.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving.errors import ModelLoadError

log = logging.getLogger("serving.loader")

_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<ref>[^/]+)|@(?P<alias>[^/]+))/?$")


@dataclass(slots=True)
class ModelSource:
    """Where the model files are on disk and what it is called."""

    path: Path
    name: str
    version: str
    run_id: str | None = None
    uri: str = ""
    registry: dict[str, Any] = field(default_factory=dict)


def _resolve_registered(name: str, ref: str | None, alias: str | None) -> tuple[str, str | None]:
    """Return (version, run_id) for a registered model reference."""
    from mlflow import MlflowClient

    client = MlflowClient()
    try:
        if alias is not None:
            mv = client.get_model_version_by_alias(name, alias)
        elif ref is not None and ref.isdigit():
            mv = client.get_model_version(name, ref)
        else:
            stages = None if ref is None or ref.lower() == "latest" else [ref]
            found = client.get_latest_versions(name, stages=stages)
            if not found:
                raise ModelLoadError(f"registered model {name!r} has no version in stage {ref!r}")
            mv = max(found, key=lambda v: int(v.version))
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(
            f"cannot resolve models:/{name} ({ref or alias}) in the registry at "
            f"{os.environ.get('MLFLOW_TRACKING_URI', '<MLFLOW_TRACKING_URI unset>')}: {exc}"
        ) from exc
    return str(mv.version), mv.run_id


def resolve(uri: str, name: str | None = None, version: str | None = None) -> ModelSource:
    """Make the model available locally. `name`/`version` override what the URI says."""
    local = uri[len("file://") :] if uri.startswith("file://") else uri
    if os.path.isdir(local):
        path = Path(local).resolve()
        if not (path / "MLmodel").is_file():
            raise ModelLoadError(f"{path} is not an MLflow model directory (no MLmodel file)")
        return ModelSource(path=path, name=name or path.name, version=version or "local", uri=uri)
    match = _MODELS_URI.match(uri)
    run_id = None
    download_uri = uri
    if match:
        reg_name = match["name"]
        resolved, run_id = _resolve_registered(reg_name, match["ref"], match["alias"])
        download_uri = f"models:/{reg_name}/{resolved}"
        name, version = name or reg_name, version or resolved
    elif "://" not in uri and ":/" not in uri:
        raise ModelLoadError(
            f"model URI {uri!r} is neither an existing directory nor an MLflow URI "
            "(models:/NAME/VERSION, models:/NAME@ALIAS, runs:/RUN_ID/PATH, s3://...)"
        )
    dst = tempfile.mkdtemp(prefix="serving-model-")
    log.info("downloading model", extra={"model_uri": download_uri, "dst": dst})
    try:
        from mlflow.artifacts import download_artifacts

        path = Path(download_artifacts(artifact_uri=download_uri, dst_path=dst))
    except Exception as exc:
        raise ModelLoadError(f"cannot download {download_uri}: {exc}") from exc
    if not (path / "MLmodel").is_file():
        raise ModelLoadError(f"{download_uri} is not an MLflow model (no MLmodel file)")
    return ModelSource(
        path=path,
        name=name or path.name,
        version=version or "unknown",
        run_id=run_id,
        uri=uri,
    )
