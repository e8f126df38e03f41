"""Links into the MLflow UI: a model version's page, a run, a run's artifact.

MLflow's UI routes are hash routes under the UI's base address: `<ui>/#/models/<name>/versions/<v>`,
`<ui>/#/experiments/<exp>/runs/<run>`, and `.../runs/<run>/artifactPath/<path>` to open an
artifact. The base is `mlflow.ui_url` when set, else the tracking URI when it is an http(s)
server (a file or database store has no UI address: no links then). A link is shown to anyone
(tags, reports, terminal output), so the base never carries user info, a query or a fragment
(`redact.public_url`); names and ids are percent-quoted, so a hostile model name stays a name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

from mlflow_ztml.redact import public_url

if TYPE_CHECKING:
    from mlflow_ztml.config import Settings


def ui_base(settings: Settings) -> str | None:
    """The MLflow UI's base address for links, or None when there is no UI to link to."""
    return public_url(settings.mlflow.ui_url or settings.tracking_uri())


def _part(value: object) -> str:
    return quote(str(value), safe="")


def version_url(ui: str | None, model: str, version: str | None) -> str | None:
    """The model version's page, or None without a UI or a version."""
    if not ui or not version:
        return None
    return f"{ui}/#/models/{_part(model)}/versions/{_part(version)}"


def run_url(ui: str | None, experiment_id: str | None, run_id: str | None) -> str | None:
    """A run's page, or None without a UI, an experiment or a run."""
    if not ui or not experiment_id or not run_id:
        return None
    return f"{ui}/#/experiments/{_part(experiment_id)}/runs/{_part(run_id)}"


def artifact_url(
    ui: str | None, experiment_id: str | None, run_id: str | None, path: str
) -> str | None:
    """A run's page with the artifact at `path` open (MLflow renders HTML artifacts)."""
    run = run_url(ui, experiment_id, run_id)
    if run is None:
        return None
    return f"{run}/artifactPath/{quote(path, safe='/')}"
