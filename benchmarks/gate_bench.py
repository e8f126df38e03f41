"""Benchmark the governance gate: latency of one decision on a full manifest.

Measures N decisions (default 10,000) of `gate.evaluate(manifest, env, engine)` -- manifest
to policy input, policy evaluation, Decision -- for:
- in-process regorus (the default engine),
- the OPA REST path: ztml's OpaServerEngine (opa-python-client over HTTP on loopback)
  against the OPA-REST TEST DOUBLE in tests/policy/opa_double.py, which serves OPA's API on
  top of regorus. No `opa` binary exists here, so this measures ztml's REST client path plus
  HTTP, not OPA's own evaluator,
- OPA's Go engine in-process (opa-golib-python-bindings), when installed, for reference.
Prints median, p99 and mean per decision and the ratios against in-process regorus.

    .venv/bin/python benchmarks/gate_bench.py [-n 10000] [--env production] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RUST_LIB_BACKTRACE", "0")

from mlflow_ztml import gate
from mlflow_ztml.manifest import ModelDeployment
from mlflow_ztml.policy.bundle import PolicyBundle, load_bundle
from mlflow_ztml.policy.engine import Decision, decision_from_document
from mlflow_ztml.policy.opa_server import OpaServerEngine
from mlflow_ztml.policy.regorus import RegorusEngine
from tests.policy.manifests import manifest
from tests.policy.opa_double import OpaTestServer


def measure(decide: Callable[[], Decision], count: int, warmup: int) -> dict[str, float]:
    """Per-decision latency in microseconds over `count` timed calls."""
    for _ in range(warmup):
        decide()
    samples = []
    clock = time.perf_counter_ns
    for _ in range(count):
        start = clock()
        decide()
        samples.append((clock() - start) / 1000)
    samples.sort()
    return {
        "median_us": statistics.median(samples),
        "p99_us": samples[min(len(samples) - 1, int(len(samples) * 0.99))],
        "mean_us": statistics.fmean(samples),
        "min_us": samples[0],
    }


class GoOpaEngine:
    """OPA's Go evaluator in-process (reference only; not a ztml engine)."""

    name = "opa-go"

    def __init__(self, bundle: PolicyBundle) -> None:
        import opa_bindings

        self._engine = opa_bindings.OpaEngine()
        for module_id, source in bundle.modules.items():
            self._engine.add_policy(module_id, source)
        self._engine.add_data(bundle.data)

    def decide(self, package: str, input: dict[str, Any]) -> Decision:
        document = self._engine.eval_document(package, input)
        return decision_from_document(document, engine=self.name, package=package)


def run(count: int, environment: str) -> dict[str, Any]:
    bundle = load_bundle()
    subject: ModelDeployment = manifest()
    results: dict[str, Any] = {}
    warmup = max(100, count // 50)

    local = RegorusEngine.from_bundle(bundle)
    expected = gate.evaluate(subject, environment, local)
    results["in-process regorus"] = measure(
        lambda: gate.evaluate(subject, environment, local), count, warmup
    )
    envelope = gate.policy_input(subject, environment)
    results["in-process regorus, engine only"] = measure(
        lambda: local.decide(gate.GOVERNANCE_PACKAGE, envelope), count, warmup
    )

    with OpaTestServer() as server:
        remote = OpaServerEngine(server.url, mode="load", bundle=bundle)
        decision = gate.evaluate(subject, environment, remote)
        assert (decision.allow, decision.deny, decision.warn) == (
            expected.allow,
            expected.deny,
            expected.warn,
        ), "the OPA REST path must decide as in-process does"
        results["OPA REST (test double)"] = measure(
            lambda: gate.evaluate(subject, environment, remote), count, warmup
        )

    try:
        go = GoOpaEngine(bundle)
    except ImportError:
        pass
    else:
        assert gate.evaluate(subject, environment, go).deny == expected.deny
        results["in-process OPA Go (reference)"] = measure(
            lambda: gate.evaluate(subject, environment, go), count, warmup
        )
    return {"decision": expected.model_dump(), "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--count", type=int, default=10_000)
    parser.add_argument("--env", default="production")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    report = run(args.count, args.env)
    report["machine"] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    results = report["results"]
    base = results["in-process regorus"]
    decision = report["decision"]
    print(
        f"{args.count} decisions of ztml.governance on a full manifest in {args.env} "
        f"(allow={decision['allow']}, {len(decision['deny'])} deny, {len(decision['warn'])} warn); "
        f"{report['machine']['cpus']} CPUs, Python {report['machine']['python']}"
    )
    print(f"{'path':34} {'median':>10} {'p99':>10} {'mean':>10} {'x median':>9} {'x p99':>7}")
    for name, figures in results.items():
        print(
            f"{name:34} {figures['median_us']:8.1f}us {figures['p99_us']:8.1f}us "
            f"{figures['mean_us']:8.1f}us {figures['median_us'] / base['median_us']:8.2f}x "
            f"{figures['p99_us'] / base['p99_us']:6.2f}x"
        )
    print(
        "OPA REST = ztml's OpaServerEngine over loopback HTTP against the regorus-backed "
        "OPA test double (tests/policy/opa_double.py), not a real OPA server."
    )


if __name__ == "__main__":
    main()
