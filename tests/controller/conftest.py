"""Fixtures for the controller's end-to-end tests: an MLflow server with webhooks enabled
(one per session: a start costs ~10 s) and a real `ztml controller` process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.controller.process import WEBHOOK_ENV
from tests.mlflow_server import MlflowServer


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
