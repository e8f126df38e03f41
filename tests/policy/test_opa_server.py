"""The OPA REST path (opa-python-client over HTTP) against the labelled OPA test double.

No `opa` binary exists where these tests run; `tests/policy/opa_double.py` serves OPA's REST
API on top of regorus (see its docstring). What is under test here is ztml's OPA engine:
pushing policies and data, querying, and failing closed on every kind of error.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mlflow_ztml import gate
from mlflow_ztml.config import PolicyConfig
from mlflow_ztml.errors import ConfigError
from mlflow_ztml.policy.bundle import PolicyBundle, load_bundle
from mlflow_ztml.policy.engine import make_engine
from mlflow_ztml.policy.opa_server import OpaServerEngine
from mlflow_ztml.policy.regorus import RegorusEngine
from tests.mlflow_server import free_port
from tests.policy.manifests import CASES, manifest
from tests.policy.opa_double import OpaTestServer


@pytest.fixture
def opa(opa_server: OpaTestServer) -> OpaTestServer:
    """The session's double, emptied (as a freshly started OPA) for each test."""
    opa_server.double.reset()
    opa_server.double.requests.clear()
    return opa_server


def test_load_mode_gives_the_same_decisions_as_in_process(
    opa: OpaTestServer, default_bundle: PolicyBundle, regorus_engine: RegorusEngine
) -> None:
    remote = OpaServerEngine(opa.url, mode="load", bundle=default_bundle)
    for name in sorted(CASES):
        document, environment, _, _ = CASES[name]
        for env in (environment, "local", "staging", "production", "qa"):
            local = gate.evaluate(document, env, regorus_engine)
            over_rest = gate.evaluate(document, env, remote)
            assert over_rest.engine == "opa"
            assert (over_rest.allow, over_rest.deny, over_rest.warn) == (
                local.allow,
                local.deny,
                local.warn,
            ), f"{name} in {env}"


def test_load_mode_pushes_policies_and_data_once(
    opa: OpaTestServer, default_bundle: PolicyBundle
) -> None:
    remote = OpaServerEngine(opa.url, mode="load", bundle=default_bundle)
    for _ in range(3):
        assert gate.evaluate(manifest(), "production", remote).allow
    shipped = {f"ztml/{name}" for name in default_bundle.modules}
    assert "ztml/governance/governance.rego" in shipped and "ztml/lib/ztml.rego" in shipped
    puts = [path for method, path in opa.double.requests if method == "PUT"]
    assert sorted(puts) == sorted(["/v1/data/ztml", *(f"/v1/policies/{m}" for m in shipped)])
    posts = [path for method, path in opa.double.requests if method == "POST"]
    assert posts == ["/v1/data/ztml/governance"] * 3
    assert set(opa.double.policies) == shipped
    assert opa.double.data["ztml"] == default_bundle.data["ztml"]


def test_load_mode_reloads_after_the_server_forgot(
    opa: OpaTestServer, default_bundle: PolicyBundle
) -> None:
    remote = OpaServerEngine(opa.url, mode="load", bundle=default_bundle)
    assert gate.evaluate(manifest(), "production", remote).allow
    opa.double.reset()  # OPA restarted without a bundle
    assert gate.evaluate(manifest(), "production", remote).allow


def test_query_mode_only_queries(opa: OpaTestServer, default_bundle: PolicyBundle) -> None:
    OpaServerEngine(opa.url, mode="load", bundle=default_bundle).load()
    opa.double.requests.clear()
    remote = OpaServerEngine(opa.url, mode="query")
    document, environment, deny, warn = CASES["high-drift"]
    decision = gate.evaluate(document, environment, remote)
    assert (decision.allow, decision.deny, decision.warn) == (False, sorted(deny), sorted(warn))
    assert opa.double.requests == [("POST", "/v1/data/ztml/governance")]


def test_query_mode_without_the_package_denies(opa: OpaTestServer) -> None:
    decision = gate.evaluate(manifest(), "production", OpaServerEngine(opa.url, mode="query"))
    assert not decision.allow
    assert decision.error == f"policy package ztml.governance is not defined on {opa.url}"


def test_unreachable_server_denies_with_the_connection_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for remote in (
        OpaServerEngine(url, mode="query", timeout=1, retries=0),
        OpaServerEngine(url, mode="load", timeout=1, retries=0, bundle=load_bundle()),
    ):
        decision = gate.evaluate(manifest(), "production", remote)
        assert not decision.allow
        assert (decision.error or "").startswith(f"cannot reach OPA at {url}")
        assert "Connection refused" in (decision.error or "")


def test_policy_the_server_rejects_denies_with_the_compile_error(
    opa: OpaTestServer, default_bundle: PolicyBundle
) -> None:
    modules = dict(default_bundle.modules)
    modules["governance/governance.rego"] = "package ztml.governance\n\ndeny contains x if {\n"
    broken = PolicyBundle(modules=modules, data=default_bundle.data)
    decision = gate.evaluate(manifest(), "production", OpaServerEngine(opa.url, bundle=broken))
    assert not decision.allow
    error = decision.error or ""
    assert "rejected PUT /v1/policies/ztml/governance/governance.rego" in error
    assert "error(s) occurred while compiling module(s)" in error


def test_server_errors_are_denies(opa: OpaTestServer) -> None:
    # A package whose evaluation fails: OPA answers 500 internal_error.
    opa.double.put_policy(
        "p.rego", "package p\n\nallow := true if input.n == 1\n\nallow := false if input.n == 1\n"
    )
    decision = OpaServerEngine(opa.url, mode="query", retries=0).decide("p", {"n": 1})
    assert not decision.allow
    assert "POST /v1/data/p failed: HTTP 500" in (decision.error or "")


def test_make_engine_builds_the_configured_opa_engine(opa: OpaTestServer, make_settings) -> None:
    settings = make_settings(
        policy=PolicyConfig(engine="opa", opa_url=opa.url, opa_timeout_seconds=2),
        environments={"production": {"policy": {"governance": {"min_f1_score": 0.95}}}},
    )
    engine = make_engine(settings)
    assert isinstance(engine, OpaServerEngine) and engine.mode == "load"
    decision = gate.evaluate(manifest(), "production", engine)
    assert decision.deny == ["f1_score 0.9100 is below the minimum 0.9500 for production"]
    query = make_engine(
        settings.model_copy(
            update={"policy": PolicyConfig(engine="opa", opa_url=opa.url, opa_mode="query")}
        )
    )
    assert isinstance(query, OpaServerEngine) and query.mode == "query"
    assert gate.evaluate(manifest(), "production", query).deny == decision.deny


@pytest.mark.parametrize("url", ["localhost:8181", "ftp://opa:8181", "http://opa:8181/v1"])
def test_bad_opa_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError, match="opa_url"):
        OpaServerEngine(url, mode="query")


def test_opa_engine_without_url_is_a_config_error(make_settings) -> None:
    with pytest.raises(ConfigError, match="opa_url is not set"):
        make_engine(make_settings(policy=PolicyConfig(engine="opa")))


def test_policy_dir_is_pushed_as_is(opa: OpaTestServer, policy_copy: Path, make_settings) -> None:
    (policy_copy / "governance" / "extra.rego").write_text(
        'package ztml.governance\n\ndeny contains "frozen" if input.environment == "production"\n',
        encoding="utf-8",
    )
    settings = make_settings(
        policy=PolicyConfig(engine="opa", opa_url=opa.url, policy_dir=policy_copy)
    )
    decision = gate.evaluate(manifest(), "production", make_engine(settings))
    assert decision.deny == ["frozen"]
    assert "ztml/governance/extra.rego" in opa.double.policies
