"""Fixtures for the controller's end-to-end tests: an MLflow server with webhooks enabled
(one per session: a start costs ~10 s) and a real `ztml controller` process."""

from __future__ import annotations

import contextlib
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlflow_ztml.cli import main as cli
from tests.controller.process import WEBHOOK_ENV, ControllerProcess
from tests.mlflow_server import MlflowServer
from tests.pipeline_fixtures import process_runtime


@pytest.fixture(scope="session")
def webhook_mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-webhooks"), env=WEBHOOK_ENV).start()
    yield server
    server.stop()


def serving_pids(model_prefix: str) -> list[int]:
    """PIDs of `python -m serving` processes for models whose names start with the prefix."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serving" in argv and any(
            a.startswith(f"models:/{model_prefix}".encode()) for a in argv
        ):
            found.append(int(entry.name))
    return found


@contextlib.contextmanager
def registered_controller(
    home: Path, config: str, mlflow: MlflowServer, prefix: str, log_tail: int = 4000
) -> Iterator[ControllerProcess]:
    """A real controller on `mlflow` with `config` as its ztml.yaml, its webhook registered by
    ztml's own CLI (created, or updated when another module registered one on this shared
    server). This test process sees its runtime state (ZTML_HOME) while it runs. On exit it is
    stopped, its deployments deleted, candidates orphaned by kill tests killed, its log printed."""
    (home / "ztml.yaml").write_text(config)
    process = ControllerProcess(home, mlflow.url)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ZTML_HOME", process.env["ZTML_HOME"])
        patch.setenv("MLFLOW_TRACKING_URI", mlflow.url)
        patch.setenv("ZTML_WEBHOOK_SECRET", process.env["ZTML_WEBHOOK_SECRET"])
        patch.delenv("ZTML_CONFIG", raising=False)
        patch.chdir(home)
        result = CliRunner().invoke(cli, ["webhook", "register", "--url", process.url])
        assert result.exit_code == 0, result.output
        assert re.search(r"(created|updated) webhook ztml-controller", result.output)
        process.start()
        try:
            yield process
        finally:
            process.stop()
            runtime = process_runtime()
            for status in runtime.list():
                runtime.delete(status.name)
            for pid in serving_pids(prefix):
                os.killpg(pid, signal.SIGKILL)
            print(process.log()[-log_tail:])
