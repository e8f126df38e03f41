"""Controller wiring that needs no server: start-up validation and environment overrides."""

from __future__ import annotations

import pytest

from mlflow_ztml.config import load_settings
from mlflow_ztml.controller.manager import Controller, validate, with_environment_overrides
from mlflow_ztml.errors import ConfigError


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("ZTML_HOME", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    monkeypatch.delenv("ZTML_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    return load_settings()


def test_mappings_must_name_declared_environments(settings) -> None:
    validate(settings)
    settings.controller.aliases = {"champion": "prod"}
    with pytest.raises(ConfigError, match=r"controller\.aliases\.champion.*'prod'"):
        validate(settings)
    settings.controller.aliases = {}
    settings.controller.prune = {"qa": True}
    with pytest.raises(ConfigError, match="prune"):
        validate(settings)


def test_helm_chart_leader_election_variables(settings, monkeypatch) -> None:
    assert with_environment_overrides(settings) is settings
    monkeypatch.setenv("ZTML_LEADER_ELECTION", "true")
    monkeypatch.setenv("ZTML_LEADER_ELECTION_LEASE", "my-lease")
    monkeypatch.setenv("ZTML_LEADER_ELECTION_NAMESPACE", "ml")
    monkeypatch.setenv("ZTML_LEADER_ELECTION_LEASE_SECONDS", "20")
    lease = with_environment_overrides(settings).controller.leader_election
    assert (lease.enabled, lease.lease_name, lease.namespace) == (True, "my-lease", "ml")
    assert lease.lease_duration_seconds == 20
    monkeypatch.setenv("ZTML_LEADER_ELECTION_RENEW_SECONDS", "30")
    with pytest.raises(ConfigError, match="renew_deadline"):
        Controller(settings, secrets=["s"])


def test_not_ready_before_start_and_secret_reported(settings) -> None:
    controller = Controller(settings, secrets=[])
    ready, body = controller.readiness()
    assert not ready
    assert body["webhook_secret"] is False
    assert controller.health()[0]
