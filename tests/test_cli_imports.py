"""What the `ztml` command loads: only what the command it runs needs (issue 14).

`ztml --help`, `ztml gate -f FILE` and `ztml status` answer in a fraction of a second because
none of them imports mlflow (about 2 s), torch, docker, kubernetes, pandas or requests. Each runs
the real command in a fresh interpreter and reports, at exit, which of those modules were
loaded: a behaviour test (what is imported), not a timing assertion. The MLflow plugin
(`-t ztml`) likewise lists deployments without loading the deploy pipeline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.policy.manifests import manifest

HEAVY = ("mlflow", "torch", "docker", "kubernetes", "pandas", "sklearn", "aiohttp", "requests")
# `import mlflow_ztml.cli` and `--help` need click and nothing of ztml's models either
LIGHT_ONLY = (*HEAVY, "pydantic", "yaml", "regorus")

_PROBE = """
import atexit, json, sys
watched = json.loads(sys.argv[1])
atexit.register(lambda: print("LOADED=" + json.dumps(
    [name for name in watched if name in sys.modules]), file=sys.__stderr__))
import mlflow_ztml.cli
if len(sys.argv) > 2:
    sys.argv = ["ztml", *sys.argv[2:]]
    mlflow_ztml.cli.main()
"""


def _loaded(tmp_path: Path, watched: tuple[str, ...], *args: str) -> tuple[list[str], str]:
    """The `watched` modules loaded by `ztml ARGS` (nothing: just the import), and stdout."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "ZTML_CONFIG")}
    env["ZTML_HOME"] = str(tmp_path / "ztml-home")
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(watched), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    [line] = [x for x in result.stderr.splitlines() if x.startswith("LOADED=")]
    assert "Traceback" not in result.stderr, result.stderr
    return json.loads(line.removeprefix("LOADED=")), result.stdout


@pytest.fixture
def local_store(tmp_path: Path) -> Path:
    """A directory with a local MLflow store (ztml uses ./mlflow.db when nothing says else)
    and a manifest that the local environment allows."""
    (tmp_path / "mlflow.db").touch()
    (tmp_path / "m.yaml").write_text(manifest().to_yaml(), encoding="utf-8")
    return tmp_path


def test_importing_the_cli_and_help_load_nothing_heavy(tmp_path: Path) -> None:
    assert _loaded(tmp_path, LIGHT_ONLY) == ([], "")
    loaded, stdout = _loaded(tmp_path, LIGHT_ONLY, "--help")
    assert loaded == [] and "Usage: ztml" in stdout


def test_gate_on_a_local_manifest_imports_no_mlflow(local_store: Path) -> None:
    loaded, stdout = _loaded(local_store, HEAVY, "gate", "-f", "m.yaml")
    assert stdout.startswith("ALLOW m.yaml for local (engine: regorus)"), stdout
    assert loaded == []


def test_status_of_the_process_runtime_imports_no_mlflow(local_store: Path) -> None:
    loaded, stdout = _loaded(local_store, HEAVY, "status")
    assert stdout.strip() == "no deployments"
    assert loaded == []


_PLUGIN_PROBE = """
import json, sys
import mlflow.deployments
from mlflow.deployments import get_deploy_client
client = get_deploy_client("ztml")  # mlflow loads the plugin through its entry point
listed = client.list_deployments()
watched = ["mlflow_ztml.pipeline", "mlflow_ztml.policy.regorus", "mlflow_ztml.notify",
           "mlflow_ztml.evidence", "prometheus_client", "docker", "kubernetes", "torch"]
print(json.dumps({"listed": listed, "loaded": [m for m in watched if m in sys.modules]}))
"""


def test_the_mlflow_plugin_lists_deployments_without_the_deploy_pipeline(
    local_store: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "ZTML_CONFIG")}
    env["ZTML_HOME"] = str(local_store / "ztml-home")
    result = subprocess.run(
        [sys.executable, "-c", _PLUGIN_PROBE],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=local_store,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer == {"listed": [], "loaded": []}
