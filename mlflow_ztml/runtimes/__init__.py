"""Deploy runtimes behind one interface: `process`, `docker` and `kubernetes`."""

from __future__ import annotations

from mlflow_ztml.config import Settings
from mlflow_ztml.errors import ConfigError
from mlflow_ztml.runtimes.base import Runtime


def get_runtime(name: str, settings: Settings) -> Runtime:
    """The runtime called `name`, configured from settings; a ConfigError when unavailable."""
    if name == "process":
        from mlflow_ztml.runtimes.process import ProcessRuntime

        return ProcessRuntime(settings.home / "process")
    if name == "docker":
        from mlflow_ztml.runtimes.docker import DockerRuntime
        from mlflow_ztml.supply_chain.verification import image_check

        return DockerRuntime(
            settings.home / "docker", build=settings.build, image_check=image_check(settings)
        )
    if name == "kubernetes":
        from mlflow_ztml.runtimes.kubernetes import KubernetesRuntime

        return KubernetesRuntime(settings)
    raise ConfigError(
        f"runtime {name!r} is not available in this version of ztml; "
        "use runtime: process, docker or kubernetes"
    )
