"""Benchmark: `python -m serving` vs `mlflow models serve --env-manager local` on one torch MLP.

Reproducible end to end: trains nothing fancy (random weights are enough for latency), saves the
64->256->256->2 MLP with `mlflow.pytorch.save_model` (signature + 2-row input example), then serves
it with each stack in turn - same machine, same run, same CPU pinning - and drives each with
single-row POSTs from `wrk` at concurrency 1 and 64. The server is pinned to one set of cores and
wrk to another (`taskset`) so the load generator does not steal the server's CPU. A `/noop`
endpoint on our stack (same app, same wrapper, reads the body, no model) is the ceiling.

    .venv/bin/python benchmarks/serving_bench.py [--duration 10] [--server-cpus 0] [--wrk-cpus 1]

Binary vs JSON tensors on the Open Inference Protocol (`--only binary`, no wrk needed; also run
after the comparison above): the same server, tritonclient.http with `binary_data` on (its
default) and off for inputs and outputs, a closed loop of `--binary-rows`-row requests.

    .venv/bin/python benchmarks/serving_bench.py --only binary [--binary-rows 256]

gRPC vs HTTP (`--only grpc`): the same server with `--grpc-port`, tritonclient.grpc against
tritonclient.http, each at its defaults (raw_input_contents / binary tensors), same loop.

Needs `wrk` (apt-get install -y wrk) and `taskset` (util-linux) for the comparison with
mlflow. Prints req/s, p50 and p99 per case and the ratios the serving issue sets as targets
(c=64: >= 4x mlflow throughput with p99 no worse; >= 50% of the no-op ceiling).
Both servers get OMP_NUM_THREADS=1 (one core each).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.mlflow_server import free_port  # noqa: E402 - needs the repository on sys.path

LUA = """wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
"""


@dataclass
class Result:
    case: str
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def save_model(root: Path) -> Path:
    """The MLP of the issue, saved the way users save it (torch.export, 2-row example)."""
    import mlflow.pytorch
    import numpy as np
    import torch
    from mlflow.models import infer_signature

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(64, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 2),
    ).eval()
    x = np.random.default_rng(0).normal(size=(2, 64)).astype(np.float32)
    with torch.no_grad():
        y = net(torch.from_numpy(x)).numpy()
    path = root / "mlp"
    shutil.rmtree(path, ignore_errors=True)
    mlflow.pytorch.save_model(
        net,
        path,
        signature=infer_signature(x, y),
        input_example=x,
        pip_requirements=["mlflow==3.17.2", "torch==2.13.0"],
    )
    return path


def wait_http(url: str, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as res:
                if res.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def start(cmd: list[str], cpus: str, ready_url: str, log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO),
        # mlflow models serve execs `uvicorn` from PATH: the venv's bin must be on it
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    out = open(log, "wb")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(
        ["taskset", "-c", cpus, *cmd],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    wait_http(ready_url, 180, proc)
    return proc


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(url: str, lua: Path, concurrency: int, duration: int, cpus: str) -> dict:
    threads = 1 if concurrency == 1 else 2
    cmd = [
        "taskset",
        "-c",
        cpus,
        "wrk",
        f"-t{threads}",
        f"-c{concurrency}",
        f"-d{duration}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(lua),
        url,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out)[1])
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out)[1])
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out):
        errors += int(m[1])
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(map(int, m.groups()))
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "errors": errors}


def bench_server(name, cmd, ready, targets, args, work: Path) -> list[Result]:
    results = []
    proc = start(cmd, args.server_cpus, ready, work / f"{name}.log")
    try:
        for case, url in targets:
            for c in args.concurrency:
                run_wrk(url, work / "post.lua", c, 2, args.wrk_cpus)  # warm-up
                r = run_wrk(url, work / "post.lua", c, args.duration, args.wrk_cpus)
                results.append(Result(case, c, **r))
                print(
                    f"  {case:<10} c={c:<3} {r['rps']:>9.0f} req/s  p50 {r['p50_ms']:7.2f} ms"
                    f"  p99 {r['p99_ms']:7.2f} ms  errors {r['errors']}",
                    flush=True,
                )
    finally:
        stop(proc)
    return results


def bench_binary(model: Path, args, work: Path) -> dict[str, dict[str, float]]:
    """req/s and p50 of one client loop, binary tensors vs JSON tensors, on /v2 infer."""
    import numpy as np
    import tritonclient.http as httpclient

    port = free_port()
    cmd = [sys.executable, "-m", "serving", "--model-uri", str(model), "--port", str(port)]
    cmd += ["--num-threads", "1", "--max-batch-delay-ms", "0"]
    proc = start(cmd, args.server_cpus, f"http://127.0.0.1:{port}/ready", work / "oip.log")
    x = np.random.default_rng(0).normal(size=(args.binary_rows, 64)).astype(np.float32)
    out: dict[str, dict[str, float]] = {}
    try:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
        name = client.get_model_metadata("mlp")["inputs"][0]["name"]
        for case, as_binary in (("json", False), ("binary", True)):
            inp = httpclient.InferInput(name, list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=as_binary)
            wanted = [httpclient.InferRequestedOutput("output-0", binary_data=as_binary)]
            out[case] = closed_loop(
                lambda inp=inp, wanted=wanted: client.infer("mlp", [inp], outputs=wanted),
                args.duration,
            )
            print(
                f"  v2 {case:<6} rows={args.binary_rows} {out[case]['rps']:8.0f} req/s  "
                f"p50 {out[case]['p50_ms']:7.2f} ms  p99 {out[case]['p99_ms']:7.2f} ms",
                flush=True,
            )
        client.close()
    finally:
        stop(proc)
    ratio = out["binary"]["rps"] / out["json"]["rps"]
    print(f"binary/JSON throughput on /v2 infer ({args.binary_rows} x 64 FP32): {ratio:.2f}x")
    return out


def closed_loop(call, seconds: float) -> dict[str, float]:
    """req/s, p50 and p99 (ms) of one client calling `call` back to back for `seconds`, after
    20 warm-up calls."""
    for _ in range(20):
        call()
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        began = time.perf_counter()
        call()
        times.append(time.perf_counter() - began)
    times.sort()
    return {
        "rps": len(times) / sum(times),
        "p50_ms": times[len(times) // 2] * 1000,
        "p99_ms": times[int(len(times) * 0.99)] * 1000,
    }


def bench_grpc(model: Path, args, work: Path) -> dict[str, dict[str, float]]:
    """req/s and p50 of one client loop, gRPC vs HTTP, each client at its defaults
    (tritonclient.grpc: raw_input_contents; tritonclient.http: binary tensors), one server."""
    import numpy as np
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    port, grpc_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "serving", "--model-uri", str(model), "--port", str(port)]
    cmd += ["--grpc-port", str(grpc_port), "--num-threads", "1", "--max-batch-delay-ms", "0"]
    proc = start(cmd, args.server_cpus, f"http://127.0.0.1:{port}/ready", work / "grpc.log")
    x = np.random.default_rng(0).normal(size=(args.binary_rows, 64)).astype(np.float32)
    out: dict[str, dict[str, float]] = {}
    try:
        clients = {
            "http": (httpclient, httpclient.InferenceServerClient(f"127.0.0.1:{port}")),
            "grpc": (grpcclient, grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")),
        }
        name = clients["http"][1].get_model_metadata("mlp")["inputs"][0]["name"]
        for case, (module, client) in clients.items():
            inp = module.InferInput(name, list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            out[case] = closed_loop(
                lambda client=client, inp=inp: client.infer("mlp", [inp]).as_numpy("output-0"),
                args.duration,
            )
            print(
                f"  oip {case:<4} rows={args.binary_rows} {out[case]['rps']:8.0f} req/s  "
                f"p50 {out[case]['p50_ms']:7.2f} ms  p99 {out[case]['p99_ms']:7.2f} ms",
                flush=True,
            )
            client.close()
    finally:
        stop(proc)
    ratio = out["grpc"]["rps"] / out["http"]["rps"]
    print(f"gRPC/HTTP throughput on v2 infer ({args.binary_rows} x 64 FP32): {ratio:.2f}x")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--server-cpus", default="0", help="taskset CPU list for the server")
    parser.add_argument("--wrk-cpus", default="1", help="taskset CPU list for wrk")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument(
        "--only",
        choices=["all", "binary", "grpc"],
        default="all",
        help="binary: only binary vs JSON; grpc: only gRPC vs HTTP",
    )
    parser.add_argument("--binary-rows", type=int, default=256, help="rows per v2 request")
    args = parser.parse_args()
    if args.only == "grpc":
        work = args.workdir or Path(tempfile.mkdtemp(prefix="serving-bench-"))
        work.mkdir(parents=True, exist_ok=True)
        figures = bench_grpc(save_model(work), args, work)
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2))
        return 0
    if args.only == "binary":
        if shutil.which("taskset") is None:
            sys.exit("taskset not found: apt-get install -y util-linux")
        work = args.workdir or Path(tempfile.mkdtemp(prefix="serving-bench-"))
        work.mkdir(parents=True, exist_ok=True)
        figures = bench_binary(save_model(work), args, work)
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2))
        return 0
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install -y wrk util-linux")

    work = args.workdir or Path(tempfile.mkdtemp(prefix="serving-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"workdir {work}; saving the model...", flush=True)
    model = save_model(work)
    row = [round(0.01 * i, 3) for i in range(64)]
    (work / "post.lua").write_text(LUA.format(body=json.dumps({"inputs": [row]})))

    py = sys.executable
    mlflow_bin = str(Path(py).parent / "mlflow")
    p1 = free_port()
    print("mlflow models serve --env-manager local", flush=True)
    results = bench_server(
        "mlflow",
        [
            mlflow_bin,
            "models",
            "serve",
            "-m",
            str(model),
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(p1),
        ],
        f"http://127.0.0.1:{p1}/ping",
        [("mlflow", f"http://127.0.0.1:{p1}/invocations")],
        args,
        work,
    )
    p2 = free_port()
    print("python -m serving", flush=True)
    results += bench_server(
        "serving",
        [
            py,
            "-m",
            "serving",
            "--model-uri",
            str(model),
            "--host",
            "127.0.0.1",
            "--port",
            str(p2),
            "--noop-endpoint",
            "--num-threads",
            "1",
        ],
        f"http://127.0.0.1:{p2}/ready",
        [("serving", f"http://127.0.0.1:{p2}/predict"), ("noop", f"http://127.0.0.1:{p2}/noop")],
        args,
        work,
    )

    by = {(r.case, r.concurrency): r for r in results}
    print("\n| case | c | req/s | p50 ms | p99 ms | errors |\n|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r.case} | {r.concurrency} | {r.rps:.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} "
            f"| {r.errors} |"
        )
    print()
    ok = True
    for c in args.concurrency:
        ours, base, noop = by[("serving", c)], by[("mlflow", c)], by[("noop", c)]
        speedup = ours.rps / base.rps
        ceiling = ours.rps / noop.rps
        p99_ratio = ours.p99_ms / base.p99_ms
        print(
            f"c={c}: serving/mlflow throughput {speedup:.2f}x, p99 ratio {p99_ratio:.2f} "
            f"(serving/mlflow), serving/no-op {ceiling:.0%}"
        )
        if c == 64:
            ok = speedup >= 4 and p99_ratio <= 1 and ceiling >= 0.5
            print(
                f"targets at c=64 (>=4x, p99 no worse, >=50% of no-op): "
                f"{'met' if ok else 'NOT met'}"
            )
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=2))
    bench_binary(model, args, work)
    bench_grpc(model, args, work)
    print("image size comparison: needs a Docker engine; not measured by this script")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
