from pathlib import Path

import pytest

from mlflow_ztml.config import load_settings
from mlflow_ztml.errors import ConfigError


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for key in ("ZTML_CONFIG", "ZTML_DEFAULT_ENVIRONMENT", "ZTML_POLICY__ENGINE"):
        monkeypatch.delenv(key, raising=False)


def test_builtin_environments_exist_without_a_file() -> None:
    settings = load_settings()
    assert set(settings.environments) >= {"local", "staging", "production"}
    assert settings.default_environment == "local"
    assert settings.environment("production").inference.replicas == 3


def test_file_merges_over_builtins_and_adds_environments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "custom.yaml"
    config.write_text(
        "environments:\n"
        "  production:\n"
        "    policy: {governance: {min_accuracy: 0.95}}\n"
        "  edge: {runtime: docker}\n"
    )
    monkeypatch.setenv("ZTML_CONFIG", str(config))
    settings = load_settings()
    production = settings.environment("production")
    assert production.policy == {"governance": {"min_accuracy": 0.95}}
    assert production.inference.replicas == 3  # built-in value kept
    assert settings.environment("edge").runtime == "docker"
    assert settings.policy_profile("edge") == "production"  # unknown envs start strict


def test_local_ztml_yaml_is_found_and_env_vars_win(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ztml.yaml").write_text("default_environment: staging\npolicy: {engine: opa}\n")
    monkeypatch.setenv("ZTML_POLICY__ENGINE", "regorus")
    settings = load_settings()
    assert settings.default_environment == "staging"
    assert settings.policy.engine == "regorus"


def test_invalid_values_name_the_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ztml.yaml").write_text("environments:\n  local: {runtime: vm}\n")
    with pytest.raises(ConfigError, match=r"environments\.local\.runtime"):
        load_settings()


def test_unknown_environment_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown environment 'qa'"):
        load_settings().environment("qa")


def test_missing_config_file_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZTML_CONFIG", "/nonexistent/ztml.yaml")
    with pytest.raises(ConfigError, match="ZTML_CONFIG"):
        load_settings()


def test_environment_whose_headline_tag_is_taken_is_refused(tmp_path: Path) -> None:
    # `ztml.deploy` is the controller's opt-in tag: an environment named `deploy` would write
    # its headline over it (and the controller would read a status sentence as an opt-in).
    (tmp_path / "ztml.yaml").write_text("environments:\n  deploy: {runtime: process}\n")
    with pytest.raises(ConfigError, match=r"headline tag 'ztml\.deploy'"):
        load_settings()
