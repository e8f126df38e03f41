"""Benchmark the `ztml` command's wall time: `--help`, `status`, `gate -f FILE` (issue 14).

Each command runs as users run it (a fresh interpreter, `python -m mlflow_ztml.cli`) in a
scratch directory holding a local MLflow store (`mlflow.db`, so no server is involved) and a
manifest that the local environment allows, with a private ZTML_HOME (`status` reads the
process runtime's empty state). Runs are interleaved (help, status, gate, help, ...) so load
on the machine hits every command alike; the figure is the median of N runs per command,
set against the budget (0.5 s each, the issue's target), with its CPU time (user + system).

With `--before REF`, the same commands also run on the code of git revision REF (exported
with `git archive` to a scratch directory and put first on PYTHONPATH), interleaved with the
working tree's, and the ratio is printed: the before/after comparison in one run.

    .venv/bin/python benchmarks/cli_bench.py [-n 15] [--before HEAD] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BUDGET_SECONDS = 0.5
COMMANDS: dict[str, list[str]] = {
    "ztml --help": ["--help"],
    "ztml status": ["status"],
    "ztml gate -f FILE": ["gate", "-f", "m.yaml"],
}


def scratch(directory: Path) -> None:
    """A local MLflow store (an empty mlflow.db: ztml only checks it exists) and a manifest."""
    from tests.policy.manifests import manifest

    (directory / "mlflow.db").touch()
    (directory / "m.yaml").write_text(manifest().to_yaml(), encoding="utf-8")


def export(ref: str, into: Path) -> Path:
    """The package and policies of git revision `ref`, as a directory to put on PYTHONPATH."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "mlflow_ztml", "policies"],
        capture_output=True,
        check=True,
    ).stdout
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def once(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """(wall, CPU) seconds from process start to exit of `ztml ARGS`: the CPU time (user +
    system) says what the command costs when the machine is loaded and the wall time is
    mostly waiting for a core. A failing command is an error."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "mlflow_ztml.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if result.returncode != 0:
        raise SystemExit(f"ztml {' '.join(args)} failed ({result.returncode}): {result.stderr}")
    return elapsed, cpu


def run(count: int, before: str | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ztml-cli-bench-") as tmp:
        work = Path(tmp)
        scratch(work)
        base = {
            k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "ZTML_CONFIG")
        }
        base["ZTML_HOME"] = str(work / "home")
        variants: dict[str, dict[str, str]] = {"after": {**base, "PYTHONPATH": str(ROOT)}}
        if before is not None:
            old = export(before, work / "before")
            variants["before"] = {**base, "PYTHONPATH": str(old)}
        samples: dict[str, dict[str, list[tuple[float, float]]]] = {
            variant: {name: [] for name in COMMANDS} for variant in variants
        }
        for env in variants.values():  # one unmeasured pass: file caches, .pyc files
            for args in COMMANDS.values():
                once(args, work, env)
        for _ in range(count):
            for name, args in COMMANDS.items():
                for variant, env in variants.items():
                    samples[variant][name].append(once(args, work, env))
    return {
        variant: {
            name: {
                "median_s": statistics.median(wall for wall, _ in values),
                "min_s": min(wall for wall, _ in values),
                "max_s": max(wall for wall, _ in values),
                "cpu_median_s": statistics.median(cpu for _, cpu in values),
            }
            for name, values in by_command.items()
        }
        for variant, by_command in samples.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--count", type=int, default=15, help="runs per command")
    parser.add_argument("--before", metavar="REF", help="also time git revision REF")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    report: dict[str, Any] = {
        "results": run(args.count, args.before),
        "budget_s": BUDGET_SECONDS,
        "runs": args.count,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load": os.getloadavg()[0],
        },
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    results = report["results"]
    machine = report["machine"]
    print(
        f"median of {args.count} interleaved runs per command; {machine['cpus']} CPUs, "
        f"load {machine['load']:.1f}, Python {machine['python']}; budget {BUDGET_SECONDS:.1f} s"
    )
    head = f"{'command':20} {'after':>8} {'min':>7} {'max':>7} {'cpu':>7} {'budget':>7}"
    if "before" in results:
        head += f" {'before':>8} {'cpu':>7} {'speed-up':>9}"
    print(head)
    for name in COMMANDS:
        after = results["after"][name]
        verdict = "ok" if after["median_s"] < BUDGET_SECONDS else "OVER"
        line = (
            f"{name:20} {after['median_s']:7.3f}s {after['min_s']:6.3f}s {after['max_s']:6.3f}s "
            f"{after['cpu_median_s']:6.3f}s {verdict:>7}"
        )
        if "before" in results:
            old = results["before"][name]
            line += (
                f" {old['median_s']:7.3f}s {old['cpu_median_s']:6.3f}s "
                f"{old['median_s'] / after['median_s']:8.1f}x"
            )
        print(line)


if __name__ == "__main__":
    main()
