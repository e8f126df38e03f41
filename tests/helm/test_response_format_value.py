"""`serving.responseFormat` of helm/ztml-inference reaches the server as SERVING_RESPONSE_FORMAT
(rendered with the real Helm engine), is checked by the values schema, and the kubernetes
runtime sets it only for a deployment that asks for the published contract."""

from __future__ import annotations

from typing import Any

import pytest

from mlflow_ztml.config import Settings
from mlflow_ztml.runtimes.base import DeploymentSpec
from mlflow_ztml.runtimes.kubernetes import KubernetesRuntime
from tests.helm.conftest import IMAGE, INFERENCE, MODEL, helm, render


def _server_env(values: dict[str, Any]) -> dict[str, str]:
    objects = render(INFERENCE, {"image": IMAGE, "model": MODEL, **values})
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in container["env"]}


def test_the_chart_passes_the_response_format() -> None:
    assert _server_env({})["SERVING_RESPONSE_FORMAT"] == "ztml"
    chosen = _server_env({"serving": {"responseFormat": "mlifecycle"}})
    assert chosen["SERVING_RESPONSE_FORMAT"] == "mlifecycle"
    with helm.Chart.load(INFERENCE) as chart, pytest.raises(helm.HelmValuesError) as caught:
        chart.render({"serving": {"responseFormat": "kserve"}}, name="x", namespace="models")
    assert "responseFormat" in str(caught.value)


def test_the_kubernetes_runtime_sets_it_only_when_chosen() -> None:
    runtime = KubernetesRuntime(Settings())
    spec = DeploymentSpec(
        name="credit-staging",
        environment="staging",
        model_name="credit",
        model_version="3",
        model_uri="models:/credit/3",
        image=f"{IMAGE['repository']}@{IMAGE['digest']}",
    )
    assert "responseFormat" not in runtime.values_for(spec)["serving"]
    chosen = runtime.values_for(spec.model_copy(update={"response_format": "mlifecycle"}))
    assert chosen["serving"]["responseFormat"] == "mlifecycle"
    assert _server_env({"serving": chosen["serving"]})["SERVING_RESPONSE_FORMAT"] == "mlifecycle"
