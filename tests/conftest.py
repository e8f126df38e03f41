"""Shared fixtures: one real `mlflow server` per session, a clean ztml configuration per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mlflow_server import MlflowServer

os.environ.setdefault("RUST_LIB_BACKTRACE", "0")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow")).start()
    yield server
    server.stop()


@pytest.fixture
def ztml_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mlflow_server: MlflowServer
) -> MlflowServer:
    """Point ztml at the session's MLflow with no stray ztml.yaml and a private ZTML_HOME."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.setenv("ZTML_HOME", str(tmp_path / "ztml-home"))
    monkeypatch.delenv("ZTML_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    return mlflow_server
