"""terraform/: formatted, valid, its `terraform test` suite green with a mocked AWS provider,
and nothing HIGH or CRITICAL from trivy. Offline: providers come from a local mirror
(`tf-plugins`, see docs/kubernetes.md); skipped only when terraform itself is not on PATH."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helm.conftest import trivy_findings

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "terraform"
TERRAFORM = shutil.which("terraform")

pytestmark = pytest.mark.skipif(TERRAFORM is None, reason="terraform is not on PATH")


def plugin_dir() -> Path | None:
    """The offline provider mirror: ZTML_TF_PLUGIN_DIR, else a `tf-plugins` near the root."""
    explicit = os.environ.get("ZTML_TF_PLUGIN_DIR")
    if explicit:
        return Path(explicit)
    for candidate in (
        Path("/opt/tf-plugins"),
        Path("/tf-plugins"),
        *Path("/").glob("*/tf-plugins"),
    ):
        if candidate.is_dir():
            return candidate
    return None


def terraform(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1", "TF_INPUT": "0"}
    return subprocess.run(
        [TERRAFORM or "terraform", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An initialised copy of the stack (init writes .terraform/ and a lock file)."""
    copy = tmp_path_factory.mktemp("tf") / "terraform"
    shutil.copytree(STACK, copy, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
    args = ["init", "-backend=false", "-no-color"]
    mirror = plugin_dir()
    if mirror is not None:
        args.append(f"-plugin-dir={mirror}")
    done = terraform(*args, cwd=copy)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return copy


def test_fmt_check() -> None:
    done = terraform("fmt", "-check", "-recursive", "-diff", "-no-color", cwd=STACK)
    assert done.returncode == 0, done.stdout + done.stderr


def test_validate(workdir: Path) -> None:
    done = terraform("validate", "-no-color", cwd=workdir)
    assert done.returncode == 0, done.stdout + done.stderr


def test_terraform_test_with_a_mocked_provider(workdir: Path) -> None:
    done = terraform("test", "-no-color", cwd=workdir, timeout=600)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]
    assert "0 failed" in done.stdout


def test_trivy_finds_nothing_serious() -> None:
    """Accepted findings are marked in the code with `#trivy:ignore:<id>` and a reason, and
    listed in docs/kubernetes.md; nothing else may remain."""
    findings = trivy_findings(STACK)
    assert findings == [], [
        f"{f['target']}: {f['ID']} {f['Severity']} {f['Title']}" for f in findings
    ]
    docs = (ROOT / "docs" / "kubernetes.md").read_text(encoding="utf-8")
    for path in STACK.glob("*.tf"):
        for line in path.read_text(encoding="utf-8").splitlines():
            if "trivy:ignore:" in line:
                check = line.split("trivy:ignore:")[1].split()[0]
                assert check in docs, f"{path.name}: {check} is ignored but not explained in docs"


def test_every_variable_is_described_and_the_risky_ones_validated() -> None:
    hcl2 = pytest.importorskip("hcl2", reason="python-hcl2 is not installed")
    with open(STACK / "variables.tf", encoding="utf-8") as handle:
        parsed = hcl2.load(handle)
    # python-hcl2 8 keeps the quotes of block labels ('"name"').
    variables = {
        name.strip('"'): body for block in parsed["variable"] for name, body in block.items()
    }
    assert all(body.get("description") for body in variables.values())
    for name in ("name", "region", "kubernetes_version", "public_access_cidrs", "gpu_node_group"):
        assert variables[name].get("validation"), name
