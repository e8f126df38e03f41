"""The MLflow deployments target `ztml`: a thin adapter over `mlflow_ztml.pipeline`.

    mlflow deployments create -t ztml --name credit -m models:/credit-risk/3
    mlflow deployments create -t ztml:/production --name credit -m models:/credit-risk@champion

Target `ztml` means the default environment (`local` unless ztml.yaml says otherwise);
`ztml:/ENV` picks a configured environment. See `target_help()` for the `-C` options.
"""

from deployment_plugin.client import ZtmlDeploymentClient, run_local, target_help

__all__ = ["ZtmlDeploymentClient", "run_local", "target_help"]
