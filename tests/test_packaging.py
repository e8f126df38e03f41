"""The default policies ship inside the installed package, not only in a source checkout."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [path] = out.glob("mlflow_ztml-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_carries_policies_data_and_every_package(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    shipped_rego = {
        f"mlflow_ztml/default_policies/{p.relative_to(ROOT / 'policies')}"
        for p in (ROOT / "policies").rglob("*.rego")
    }
    assert shipped_rego and shipped_rego <= names
    assert "mlflow_ztml/default_policies/data.json" in names
    chart = ROOT / "helm" / "ztml-inference"
    shipped_chart = {
        f"mlflow_ztml/charts/ztml-inference/{p.relative_to(chart)}"
        for p in chart.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert "mlflow_ztml/charts/ztml-inference/Chart.yaml" in shipped_chart
    assert shipped_chart <= names, sorted(shipped_chart - names)
    for package in (
        "mlflow_ztml",
        "mlflow_ztml/policy",
        "mlflow_ztml/runtimes",
        "serving",
        "deployment_plugin",
    ):
        assert f"{package}/__init__.py" in names
    for module in ROOT.glob("mlflow_ztml/**/*.py"):
        assert str(module.relative_to(ROOT)) in names, f"{module} is not packaged"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = wheel.read(entry_points).decode()
    assert "ztml = mlflow_ztml.cli:main" in text
    assert "[mlflow.deployments]" in text and "ztml = deployment_plugin" in text


def test_installed_package_finds_its_policies(wheel: zipfile.ZipFile, tmp_path: Path) -> None:
    wheel.extractall(tmp_path / "site")
    code = (
        "from mlflow_ztml.policy.bundle import default_policy_dir;"
        "d = default_policy_dir(); print(d); assert (d / 'data.json').is_file()"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            f"import sys; sys.path.insert(0, {str(tmp_path / 'site')!r}); {code}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert str(tmp_path / "site") in result.stdout
