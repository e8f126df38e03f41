"""Benchmark the governance gate: latency of one decision on a full manifest.

Measures N decisions (default 10,000) of `gate.evaluate(manifest, env, engine)` -- manifest
to policy input, policy evaluation, Decision -- for:
- in-process regorus as ztml runs it: policies compiled and data loaded once, the input
  serialised once per call, and the decision cache (`policy.decision_cache_size`): the same
  manifest judged again is answered without evaluating the policy again,
- in-process regorus with the cache off (`decision_cache_size: 0`): every call evaluates,
- the raw engine: regorus' own `eval_query_as_json` of the decision query on the prepared
  engine with the input already set (no ztml code at all): the floor an evaluation costs,
- the OPA REST path: ztml's OpaServerEngine (opa-python-client over HTTP on loopback)
  against the OPA-REST TEST DOUBLE in tests/policy/opa_double.py, which serves OPA's API on
  top of regorus. No `opa` binary exists here, so this measures ztml's REST client path plus
  HTTP, not OPA's own evaluator,
- OPA's Go engine in-process (opa-golib-python-bindings), when installed, for reference.
Prints median, p99 and mean per decision and each path's ratio to the raw engine eval
measured in the same run (`x engine`).

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
from mlflow_ztml.policy.regorus import _ANSWERS, RegorusEngine
from tests.policy.manifests import manifest
from tests.policy.opa_double import OpaTestServer

RAW = "raw regorus eval (engine only)"


def measure(decide: Callable[[], Any], count: int, warmup: int) -> dict[str, float]:
    """Per-decision latency in microseconds over `count` timed calls."""
    return measure_interleaved({"": decide}, count, warmup)[""]


def measure_interleaved(
    paths: dict[str, Callable[[], Any]], count: int, warmup: int, block: int = 50
) -> dict[str, dict[str, float]]:
    """`measure` for several paths in rounds of `block` calls of each: a load that comes and
    goes on the machine hits every path alike, so their ratios hold even when absolute
    figures do not (a block, not single calls: a microsecond path timed right after a
    millisecond one would measure the caches the other left cold)."""
    for _ in range(warmup):
        for decide in paths.values():
            decide()
    samples: dict[str, list[float]] = {name: [] for name in paths}
    clock = time.perf_counter_ns
    done = 0
    while done < count:
        size = min(block, count - done)
        for name, decide in paths.items():
            decide()  # one untimed call: the caches this path needs
            for _ in range(size):
                start = clock()
                decide()
                samples[name].append((clock() - start) / 1000)
        done += size
    return {name: _figures(values) for name, values in samples.items()}


def _figures(samples: list[float]) -> dict[str, float]:
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
    fresh = RegorusEngine.from_bundle(bundle, cache_size=0)
    assert gate.evaluate(subject, environment, fresh) == expected
    # the raw engine: its own prepared regorus Engine (compat installed), input set once
    raw = RegorusEngine.from_bundle(bundle, cache_size=0)._engine()
    raw.set_input_json(json.dumps(gate.policy_input(subject, environment)))
    query = _ANSWERS.format(package=gate.GOVERNANCE_PACKAGE)
    results.update(
        measure_interleaved(
            {
                "in-process regorus": lambda: gate.evaluate(subject, environment, local),
                "in-process regorus, cache off": lambda: gate.evaluate(subject, environment, fresh),
                RAW: lambda: raw.eval_query_as_json(query),
            },
            count,
            warmup,
        )
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
    base = results[RAW]
    decision = report["decision"]
    print(
        f"{args.count} decisions of ztml.governance on a full manifest in {args.env} "
        f"(allow={decision['allow']}, {len(decision['deny'])} deny, {len(decision['warn'])} warn); "
        f"{report['machine']['cpus']} CPUs, Python {report['machine']['python']}"
    )
    print(f"{'path':34} {'median':>10} {'p99':>10} {'mean':>10} {'x engine':>9} {'x p99':>7}")
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
