"""Benchmark: create -> first successful /predict on the process runtime, per stage.

Baseline, same machine, same model, same run: `mlflow models serve --env-manager local`
started on the registered version until its first successful `/invocations`. Both start
from a registered `models:/` URI in a real `mlflow server` (sqlite) and download the model.

    .venv/bin/python benchmarks/pipeline_bench.py [--trials 5]

Prints the median and worst time for each and the ratio, and the median of each ztml stage.
Target: ztml create -> first /predict under 10 s for a small model.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RUST_LIB_BACKTRACE", "0")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

from mlflow_ztml.config import load_settings
from mlflow_ztml.pipeline import DeployOptions, Pipeline
from tests.mlflow_server import MlflowServer, free_port
from tests.models import GOOD_METRICS, register_sklearn

ROW = {"inputs": [{"income": 0.9, "age": 0.4, "debt": 0.1}]}


def ztml_trial(pipeline: Pipeline, uri: str, name: str) -> tuple[float, dict[str, float]]:
    started = time.perf_counter()
    outcome = pipeline.run(uri, "local", DeployOptions(name=name))
    if outcome.status != "deployed":
        raise SystemExit(f"ztml trial failed: {outcome.status} {outcome.error}")
    response = requests.post(f"{outcome.endpoint}/predict", json=ROW, timeout=30)
    response.raise_for_status()
    elapsed = time.perf_counter() - started
    pipeline.delete(name, "local")
    return elapsed, outcome.stage_seconds


def mlflow_trial(uri: str, tracking_uri: str) -> float:
    port = free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    started = time.perf_counter()
    process = subprocess.Popen(
        [
            str(mlflow_bin),
            "models",
            "serve",
            "-m",
            uri,
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env={
            **os.environ,
            "MLFLOW_TRACKING_URI": tracking_uri,
            "PATH": f"{mlflow_bin.parent}:{os.environ.get('PATH', '')}",  # it execs `uvicorn`
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        body = {"dataframe_records": ROW["inputs"]}
        while True:
            try:
                response = requests.post(
                    f"http://127.0.0.1:{port}/invocations", json=body, timeout=5
                )
                if response.status_code == 200:
                    return time.perf_counter() - started
            except requests.RequestException:
                pass
            if process.poll() is not None:
                raise SystemExit("mlflow models serve exited")
            if time.perf_counter() - started > 180:
                raise SystemExit("mlflow models serve not ready within 180 s")
            time.sleep(0.05)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 15)
            process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = MlflowServer(Path(tmp) / "mlflow").start()
        os.environ["MLFLOW_TRACKING_URI"] = server.url
        os.environ["ZTML_HOME"] = str(Path(tmp) / "ztml-home")
        os.chdir(tmp)
        try:
            version = register_sklearn(server.url, "bench-model", metrics=GOOD_METRICS)
            uri = f"models:/bench-model/{version}"
            pipeline = Pipeline(load_settings())
            ztml, stages, baseline = [], [], []
            for trial in range(args.trials):
                elapsed, stage_seconds = ztml_trial(pipeline, uri, f"bench-{trial}")
                ztml.append(elapsed)
                stages.append(stage_seconds)
                baseline.append(mlflow_trial(uri, server.url))
                print(
                    f"trial {trial}: ztml {elapsed:.2f} s, mlflow models serve {baseline[-1]:.2f} s"
                )
        finally:
            server.stop()
    print("\ncreate -> first successful prediction (process runtime, sklearn model)")
    print(f"{'':28} {'median s':>9} {'worst s':>9}")
    print(f"{'ztml (gate+deploy+verify)':28} {statistics.median(ztml):9.2f} {max(ztml):9.2f}")
    print(f"{'mlflow models serve':28} {statistics.median(baseline):9.2f} {max(baseline):9.2f}")
    print(
        f"ratio ztml / mlflow (median): {statistics.median(ztml) / statistics.median(baseline):.2f}"
    )
    print(
        "ztml stage medians: "
        + ", ".join(
            f"{name} {statistics.median(s[name] for s in stages):.2f}s" for name in stages[0]
        )
    )
    print(f"target < 10 s: {'met' if statistics.median(ztml) < 10 else 'NOT met'}")


if __name__ == "__main__":
    main()
