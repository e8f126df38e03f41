"""`store.default_uri`: MLflow's default tracking URI, computed without importing mlflow.

The CLI resolves the local store this way so that commands that never talk to MLflow do not
pay for importing it; the answer must be exactly what `mlflow.get_tracking_uri()` says in the
same directory, or ztml and MLflow would use different stores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mlflow_ztml import store

_MLFLOW_SAYS = """
import json, os, sys
import mlflow
answers = {}
for directory in json.loads(sys.argv[1]):
    os.chdir(directory)
    answers[directory] = mlflow.get_tracking_uri()
print(json.dumps(answers))
"""


def test_default_uri_is_mlflows_own_answer(tmp_path: Path) -> None:
    empty = tmp_path / "empty dir%"  # quoted in the sqlite URI as MLflow quotes it
    with_db = tmp_path / "with-db"
    with_runs = tmp_path / "with-runs"
    empty_runs = tmp_path / "empty-runs"  # mlruns without experiment data: sqlite
    for directory in (empty, with_db, with_runs, empty_runs):
        directory.mkdir()
    (with_db / "mlflow.db").touch()
    (with_runs / "mlruns" / "0").mkdir(parents=True)
    (with_runs / "mlruns" / "0" / "meta.yaml").write_text("name: Default\n")
    (empty_runs / "mlruns" / ".trash").mkdir(parents=True)
    directories = [str(d) for d in (empty, with_db, with_runs, empty_runs)]

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    result = subprocess.run(
        [sys.executable, "-c", _MLFLOW_SAYS, json.dumps(directories)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    mlflow_says = json.loads(result.stdout.strip().splitlines()[-1])
    ours = {d: store.default_uri(Path(d)) for d in directories}
    assert ours == mlflow_says
    assert ours[str(with_runs)].startswith("file://")
    assert ours[str(with_db)] == f"sqlite:///{with_db}/mlflow.db"
