"""Shared by the supply-chain tests: the CI registry, two key pairs, tiny pushed images."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest

from mlflow_ztml.config import Settings
from mlflow_ztml.supply_chain import keys
from mlflow_ztml.supply_chain.registry_client import ImageReference
from tests.docker_support import docker_env
from tests.supply_chain.oci import push_tiny_image

REPOSITORY = "ztml-test/signing"
_counter = itertools.count()


@pytest.fixture(scope="session")
def registry() -> str:
    """The registry docker-up started (skip, naming docker-up, when there is none)."""
    return docker_env().registry


@pytest.fixture(scope="session")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys")
    keys.generate_key_pair(directory / "ztml")
    keys.generate_key_pair(directory / "other")
    return directory


@pytest.fixture(scope="session")
def signing_settings(key_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        home=tmp_path_factory.mktemp("home"),
        signing={"key": str(key_dir / "ztml" / keys.PRIVATE_KEY_FILE)},
    )


@pytest.fixture
def tiny_image(registry: str):
    """A factory: push a fresh one-file image under a tag, return it with its digest."""

    def push(tag: str | None = None, content: bytes | None = None) -> ImageReference:
        unique = f"{time.time_ns()}-{next(_counter)}"  # other runs share this registry
        body = content or f"image {unique}".encode()
        return push_tiny_image(registry, REPOSITORY, tag or f"t-{unique}", body)

    return push
