"""The regorus engine's caches (issue 14: a decision in microseconds, `ztml gate -f` in a
fraction of a second), and that neither ever changes a decision.

- The decision cache: an input already judged is answered without an evaluation. A decision
  is a function of (policies, data, package, input); policies and data are fixed per engine,
  so remembering decisions by their input text is safe, except for policies that call a
  builtin whose answer depends on the clock, the network or chance: never cached.
- The rewrite cache (compat/cache.py): the compat rewrite of each module kept on disk, named
  by the module's text, so another process skips parsing and rewriting it again.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mlflow_ztml import gate
from mlflow_ztml.policy.bundle import PolicyBundle
from mlflow_ztml.policy.compat import cache
from mlflow_ztml.policy.regorus import RegorusEngine
from tests.policy.manifests import manifest

MANIFESTS = {
    "good": manifest(),
    "low accuracy": manifest({"metrics": {"accuracy": 0.5}}),
    "no fairness": manifest(drop=("fairness",)),
}


@pytest.fixture(scope="module")
def engines(default_bundle: PolicyBundle) -> tuple[RegorusEngine, RegorusEngine]:
    """(cached, uncached) engines on the shipped policies."""
    return RegorusEngine.from_bundle(default_bundle), RegorusEngine.from_bundle(
        default_bundle, cache_size=0
    )


@pytest.mark.parametrize("environment", ["local", "production"])
def test_a_remembered_decision_is_the_fresh_one(engines, environment: str) -> None:
    cached, uncached = engines
    cached.cache.clear()
    for subject in MANIFESTS.values():
        fresh = gate.evaluate(subject, environment, uncached)
        first = gate.evaluate(subject, environment, cached)
        again = gate.evaluate(subject, environment, cached)
        assert first == fresh and again == fresh
    assert len(cached.cache) == len(MANIFESTS)  # one entry per input, each a hit the 2nd time
    assert len(uncached.cache) == 0
    assert gate.evaluate(MANIFESTS["low accuracy"], "production", cached).deny  # no mix-up


def test_a_caller_editing_its_decision_changes_nobody_elses(engines) -> None:
    cached, _ = engines
    first = gate.evaluate(MANIFESTS["low accuracy"], "production", cached)
    expected = list(first.deny)
    first.deny.append("edited by a caller")
    first.warn.clear()
    again = gate.evaluate(MANIFESTS["low accuracy"], "production", cached)
    assert again.deny == expected and "edited by a caller" not in again.deny


def test_the_cache_keeps_the_most_recent_decisions_only(default_bundle: PolicyBundle) -> None:
    engine = RegorusEngine.from_bundle(default_bundle, cache_size=2)
    for environment in ("local", "staging", "production"):
        gate.evaluate(MANIFESTS["good"], environment, engine)
    assert len(engine.cache) == 2


def test_policies_reading_the_clock_are_never_cached() -> None:
    source = (
        'package p\nimport rego.v1\ndeny contains "late" if time.now_ns() < input.n\n'
        "allow if count(deny) == 0\n"
    )
    engine = RegorusEngine({"p.rego": source}, {})
    assert engine.decide("p", {"n": 0}).allow and engine.decide("p", {"n": 0}).allow
    assert engine.cache.size == 0 and len(engine.cache) == 0
    pure = RegorusEngine({"p.rego": source.replace("time.now_ns()", "input.n")}, {})
    assert pure.decide("p", {"n": 0}).allow and len(pure.cache) == 1


def test_a_failed_decision_is_not_remembered() -> None:
    engine = RegorusEngine({"p.rego": "package p\nimport rego.v1\nallow := 1 / input.d\n"}, {})
    decision = engine.decide("p", {"d": 0})
    assert not decision.allow and decision.error
    assert len(engine.cache) == 0


def test_numbers_beyond_64_bits_are_refused_with_or_without_the_cache(engines) -> None:
    cached, _ = engines
    for value in (2**70, 1e21, -(2**64)):
        for _ in range(2):
            decision = cached.decide(gate.GOVERNANCE_PACKAGE, {"environment": "local", "n": value})
            assert not decision.allow and "beyond 64 bits" in (decision.error or "")


def test_rewritten_modules_are_kept_on_disk_and_read_back(tmp_path: Path) -> None:
    source = "package p\nimport rego.v1\nallow if input.n + 1 == 2\ndeny := set()\n"
    first = RegorusEngine({"p.rego": source}, {}, rewrite_cache=tmp_path)
    assert first.decide("p", {"n": 1}).allow
    [entry] = tmp_path.glob("*.rego")
    assert entry == cache.entry(tmp_path, "p.rego", source)
    assert "__ztml.add(" in entry.read_text()  # the rewrite, not the source

    # a second engine reads the entry instead of rewriting: what the entry says is evaluated
    entry.write_text(source.replace("input.n + 1 == 2", "input.n == 7"))
    second = RegorusEngine({"p.rego": source}, {}, rewrite_cache=tmp_path)
    assert second.decide("p", {"n": 7}).allow and not second.decide("p", {"n": 1}).allow

    # an edited policy is another entry: never the stale one
    edited = source.replace("+ 1 == 2", "+ 2 == 3")
    third = RegorusEngine({"p.rego": edited}, {}, rewrite_cache=tmp_path)
    assert third.decide("p", {"n": 1}).allow and len(list(tmp_path.glob("*.rego"))) == 2


def test_the_shipped_policies_decide_alike_with_the_rewrite_cache(
    default_bundle: PolicyBundle, tmp_path: Path
) -> None:
    plain = RegorusEngine.from_bundle(default_bundle, cache_size=0)
    for _ in range(2):  # the first engine writes the entries, the second reads them
        kept = RegorusEngine.from_bundle(default_bundle, cache_size=0, rewrite_cache=tmp_path)
        for subject in MANIFESTS.values():
            assert gate.evaluate(subject, "production", kept) == gate.evaluate(
                subject, "production", plain
            )
    assert len(list(tmp_path.glob("*.rego"))) == len(default_bundle.modules)
