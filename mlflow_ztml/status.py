"""Deployments as their runtime reports them (`ztml status`), without MLflow.

Reading a runtime's state (the process runtime's state files, `docker ps`, the cluster)
needs neither MLflow nor the policy engine, so this module imports neither: `ztml status`
answers in a fraction of a second. Only when a deployment is found dead (`needs_record`)
does the caller load the pipeline to write that back to MLflow (`Pipeline.record_dead`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlflow_ztml import names

if TYPE_CHECKING:
    from mlflow_ztml.config import Settings
    from mlflow_ztml.runtimes.base import DeploymentStatus, Runtime

# Runtimes whose `failed` means the server is gone for good (nothing restarts it): `ztml status`
# writes that back to MLflow. A Kubernetes rollout heals or rolls back on its own.
DEAD_WHEN_FAILED = ("process", "docker")


def runtime_for(settings: Settings, environment: str, runtime: str | None = None) -> Runtime:
    """The runtime `runtime` names, else the one `environment` is configured with."""
    from mlflow_ztml.runtimes import get_runtime

    return get_runtime(runtime or settings.environment(environment).runtime, settings)


def find(
    settings: Settings,
    environment: str | None = None,
    runtime: str | None = None,
    name: str | None = None,
) -> list[DeploymentStatus]:
    """What the runtime reports: deployment `name`, or all of them; only those of
    `environment` when one is given (a deployment whose state is `unknown` is always shown:
    it may be one of them). The runtime is `runtime`, else the environment's."""
    target = runtime_for(settings, environment or settings.default_environment, runtime)
    if name is not None:
        found = [status] if (status := target.get(names.check_lookup(name))) else []
    else:
        found = target.list()
    if environment is not None:
        found = [s for s in found if s.environment == environment or s.state == "unknown"]
    return found


def needs_record(status: DeploymentStatus) -> bool:
    """Whether `status` is a dead server whose death MLflow may not know yet."""
    return status.state == "failed" and status.runtime in DEAD_WHEN_FAILED
