"""Fixtures for policy tests: engines on the shipped policies, isolated Settings, an OPA double."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mlflow_ztml.config import Settings
from mlflow_ztml.policy.bundle import PolicyBundle, default_policy_dir, load_bundle
from mlflow_ztml.policy.regorus import RegorusEngine
from tests.policy.opa_double import OpaTestServer


@pytest.fixture(scope="session")
def default_bundle() -> PolicyBundle:
    """The shipped policies with data.json's profiles (local, staging, production)."""
    return load_bundle()


@pytest.fixture(scope="session")
def regorus_engine(default_bundle: PolicyBundle) -> RegorusEngine:
    return RegorusEngine.from_bundle(default_bundle)


@pytest.fixture(scope="session")
def opa_server() -> Iterator[OpaTestServer]:
    """The OPA REST test double (regorus behind OPA's HTTP API), one per session."""
    with OpaTestServer() as server:
        yield server


@pytest.fixture
def make_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., Settings]:
    """Settings built from keyword arguments only: no ztml.yaml, no ZTML_* variables."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ZTML_CONFIG", raising=False)
    for name in list(os.environ):
        if name.startswith("ZTML_"):
            monkeypatch.delenv(name)

    def build(**values: Any) -> Settings:
        return Settings(**values)

    return build


@pytest.fixture
def policy_copy(tmp_path: Path) -> Path:
    """A writable copy of the shipped policy directory (Rego and data.json only)."""
    source = default_policy_dir()
    target = tmp_path / "policies"
    for path in source.rglob("*"):
        if path.suffix in (".rego", ".json"):
            destination = target / path.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    return target
