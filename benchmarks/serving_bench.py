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

Cold start and memory (`--only coldstart`, no wrk needed; also part of the default run): process
start -> first correct prediction on `/invocations` (the model's own serving input example, the
answer compared with MLflow pyfunc's in-process prediction) and the RSS of the whole process
tree right after it, for the torch MLP and a scikit-learn LogisticRegression (saved with skops,
MLflow's default), `python -m serving` against `mlflow models serve`, `--cold-passes`
interleaved passes (the order alternates), medians and ratios printed. Issue 14's targets:
cold start <= 0.3x mlflow's, RSS <= 0.4x.

    .venv/bin/python benchmarks/serving_bench.py --only coldstart [--cold-passes 3]

Throughput only (`--only throughput`): the wrk comparison above without the other parts.

Peers (`--peers`): ours, mlflow, MLServer 1.7.1 (+ mlserver-mlflow) and BentoML 1.4.40 on the same
MLP, all started in each of `--peer-passes` passes (order rotating), medians and the ratios
ours/MLServer (OIP v2 infer), ours/BentoML (/predict), ours/mlflow, ours/no-op. The peers run
from venvs built once with pip under ~/.cache/ztml-bench-peers (benchmarks/peers.py).

    .venv/bin/python benchmarks/serving_bench.py --peers [--peer-passes 3] [--duration 10]

Needs `wrk` (apt-get install -y wrk) and `taskset` (util-linux) for the comparison with
mlflow. Prints req/s, p50 and p99 per case and the ratios the serving issue sets as targets
(c=64: >= 10x mlflow throughput with p99 no worse; >= 50% of the no-op ceiling).
Both servers get OMP_NUM_THREADS=1 (one core each).
"""

from __future__ import annotations

import argparse
import contextlib
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


def save_sklearn_model(root: Path) -> Path:
    """A LogisticRegression on 4 double columns, saved as users do (skops, 2-row example)."""
    import mlflow.sklearn
    import numpy as np
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(200, 4)), columns=["a", "b", "c", "d"])
    y = (x["a"] + x["b"] > 0).astype(int)
    clf = LogisticRegression().fit(x, y)
    path = root / "sk"
    shutil.rmtree(path, ignore_errors=True)
    mlflow.sklearn.save_model(
        clf,
        path,
        signature=infer_signature(x, clf.predict(x)),
        input_example=x.head(2),
        pip_requirements=["mlflow==3.17.2", "scikit-learn", "skops"],
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


def server_env() -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO),
        # mlflow models serve execs `uvicorn` from PATH: the venv's bin must be on it
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def start(cmd: list[str], cpus: str, ready_url: str, log: Path) -> subprocess.Popen:
    env = server_env()
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


def tree_rss_mb(pid: int) -> float:
    """VmRSS summed over the process group led by `pid` (mlflow models serve runs its uvicorn
    worker as a child process; ours is one process)."""
    total_kb = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getpgid(int(entry)) != pid:
                continue
            with open(f"/proc/{entry}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total_kb += int(line.split()[1])
        except (OSError, ProcessLookupError):
            continue
    return total_kb / 1024


def cold_start(
    cmd: list[str], port: int, model: Path, expected, cpus: str, log: Path
) -> tuple[float, float]:
    """(seconds from process start to the first correct prediction, RSS MB right after it)."""
    import numpy as np

    body = (model / "serving_input_example.json").read_bytes()
    url = f"http://127.0.0.1:{port}/invocations"
    began = time.perf_counter()
    proc = subprocess.Popen(
        ["taskset", "-c", cpus, *cmd],
        env=server_env(),
        stdout=open(log, "wb"),  # noqa: SIM115 - closed with the process
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd[0]} exited with {proc.returncode}; see {log}")
            if time.perf_counter() - began > 300:
                raise RuntimeError(f"no prediction after 300 s; see {log}")
            request = urllib.request.Request(
                url, data=body, headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as res:
                    got = json.loads(res.read())["predictions"]
                    break
            except (OSError, ValueError):
                time.sleep(0.01)
        seconds = time.perf_counter() - began
        if not np.allclose(np.asarray(got, dtype=float), np.asarray(expected, dtype=float)):
            raise RuntimeError(f"wrong first prediction from {cmd[0]}: {got} != {expected}")
        time.sleep(0.5)  # let a background warm-up or GC pass settle before reading RSS
        return seconds, tree_rss_mb(proc.pid)
    finally:
        stop(proc)


def bench_coldstart(models: dict[str, Path], args, work: Path) -> dict:
    """Medians of `--cold-passes` interleaved passes, per model and server, and the ratios."""
    import statistics

    import mlflow.pyfunc
    import numpy as np
    import pandas as pd

    expected = {}
    for name, path in models.items():
        example = json.loads((path / "serving_input_example.json").read_text())
        if "dataframe_split" in example:
            split = example["dataframe_split"]
            data = pd.DataFrame(split["data"], columns=split["columns"])
        else:
            data = np.asarray(example["inputs"], dtype=np.float32)
        expected[name] = np.asarray(mlflow.pyfunc.load_model(str(path)).predict(data)).tolist()

    def command(server: str, path: Path, port: int) -> list[str]:
        where = ["127.0.0.1", str(port)]
        if server == "mlflow":
            mlflow_bin = str(Path(sys.executable).parent / "mlflow")
            serve = [mlflow_bin, "models", "serve", "-m", str(path), "--env-manager", "local"]
            return [*serve, "-h", where[0], "-p", where[1]]
        ours = [sys.executable, "-m", "serving", "--model-uri", str(path), "--num-threads", "1"]
        return [*ours, "--host", where[0], "--port", where[1]]

    # the poller runs beside wrk's cores, never on the server's
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {int(c) for c in args.wrk_cpus.split(",")})
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for n in range(args.cold_passes):
        order = ("mlflow", "serving") if n % 2 == 0 else ("serving", "mlflow")
        for name, path in models.items():
            for server in order:
                port = free_port()
                sec, rss = cold_start(
                    command(server, path, port),
                    port,
                    path,
                    expected[name],
                    args.server_cpus,
                    work / f"cold-{server}-{name}.log",
                )
                samples.setdefault((name, server), []).append((sec, rss))
                print(
                    f"  pass {n + 1} {name:<6} {server:<8} cold start {sec:6.2f} s  "
                    f"RSS {rss:6.0f} MB",
                    flush=True,
                )
    figures: dict = {}
    print("\n| model | server | cold start s (median) | RSS MB (median) |\n|---|---|---|---|")
    for (name, server), values in samples.items():
        med = {
            "cold_start_s": statistics.median(v[0] for v in values),
            "rss_mb": statistics.median(v[1] for v in values),
            "passes": [list(v) for v in values],
        }
        figures.setdefault(name, {})[server] = med
        print(f"| {name} | {server} | {med['cold_start_s']:.2f} | {med['rss_mb']:.0f} |")
    ok = True
    for name, by_server in figures.items():
        ours, base = by_server["serving"], by_server["mlflow"]
        cold = ours["cold_start_s"] / base["cold_start_s"]
        rss = ours["rss_mb"] / base["rss_mb"]
        by_server["ratios"] = {"cold_start": cold, "rss": rss}
        met = cold <= 0.3 and rss <= 0.4
        ok = ok and met
        print(
            f"{name}: cold start {cold:.2f}x mlflow's, RSS {rss:.2f}x "
            f"(targets <= 0.3x, <= 0.4x: {'met' if met else 'NOT met'})"
        )
    figures["targets_met"] = ok
    return figures


def bench_peers(args) -> int:
    """`--peers`: ours, `mlflow models serve`, MLServer 1.7.1 (mlserver-mlflow) and BentoML
    1.4.40 on the same torch MLP, all started in every one of `--peer-passes` passes (the order
    rotates per pass), wrk at each `--concurrency` on each one's endpoint; medians of the passes
    and the ratios printed: ours/MLServer on OIP v2 infer, ours/BentoML and ours/mlflow on the
    one-row JSON body, ours/no-op. The peers run from cached venvs (benchmarks/peers.py), built
    with pip on first use. Returns 1 when c=64 misses >= 10x mlflow or >= 4x MLServer."""
    import statistics

    from benchmarks import peers

    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install -y wrk util-linux")
    try:
        venvs = {"mlserver": peers.ensure(peers.mlserver_peer())}
        venvs["bentoml"] = peers.ensure(peers.bentoml_peer())
    except peers.PeerUnavailable as err:
        sys.exit(str(err))
    work = args.workdir or Path(tempfile.mkdtemp(prefix="serving-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"workdir {work}; saving the model...", flush=True)
    model = save_model(work)
    row = [round(0.01 * i, 3) for i in range(64)]
    (work / "post.lua").write_text(LUA.format(body=json.dumps({"inputs": [row]})))
    v2_body = {  # content_type "np": MLServer decodes to one ndarray; ours ignores it
        "parameters": {"content_type": "np"},
        "inputs": [{"name": "input-0", "shape": [1, 64], "datatype": "FP32", "data": row}],
    }
    (work / "v2.lua").write_text(LUA.format(body=json.dumps(v2_body)))

    def server(name: str, port: int) -> tuple[list[str], dict[str, str], str, list[tuple]]:
        """(argv, env, ready URL, [(case, URL, lua)]) of one server on `port`."""
        base = f"http://127.0.0.1:{port}"
        if name == "serving":
            cmd = [sys.executable, "-m", "serving", "--model-uri", str(model), "--port", str(port)]
            cmd += ["--host", "127.0.0.1", "--noop-endpoint", "--num-threads", "1"]
            targets = [
                ("serving", f"{base}/predict", "post.lua"),
                ("serving-v2", f"{base}/v2/models/mlp/infer", "v2.lua"),
                ("noop", f"{base}/noop", "post.lua"),
            ]
            return cmd, server_env(), f"{base}/ready", targets
        if name == "mlflow":
            cmd = [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", str(model)]
            cmd += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
            targets = [("mlflow", f"{base}/invocations", "post.lua")]
            return cmd, server_env(), f"{base}/ping", targets
        if name == "mlserver":
            venv = venvs["mlserver"]
            cmd, ready, url = peers.mlserver_command(venv, model, "mlp", port, work)
            return cmd, peers.peer_env(venv), ready, [("mlserver", url, "v2.lua")]
        venv = venvs["bentoml"]
        cmd, ready, url = peers.bentoml_command(venv, model, port, work)
        return cmd, peers.bentoml_env(venv, model, work), ready, [("bentoml", url, "post.lua")]

    lua_body = re.compile(r"\[==\[(.*)\]==\]", re.S)

    def cpu_seconds(pid: int) -> float:
        """User + system CPU seconds of `pid` and its live descendants (/proc/PID/stat; BentoML
        starts its workers in sessions of their own): CPU per request does not move with the CPU
        share other processes leave the server, which req/s on a shared machine does."""
        stats: dict[int, list[str]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError, IndexError):
                    text = Path(f"/proc/{entry}/stat").read_text()
                    stats[int(entry)] = text.rsplit(")", 1)[1].split()
        tree, grew = {pid}, True
        while grew:
            more = {p for p, f in stats.items() if int(f[1]) in tree} - tree  # f[1]: ppid
            tree |= more
            grew = bool(more)
        ticks = sum(int(stats[p][11]) + int(stats[p][12]) for p in tree if p in stats)
        return ticks / os.sysconf("SC_CLK_TCK")  # [11], [12]: utime, stime

    def model_calls(ready_url: str) -> tuple[float, float]:
        """(rows, model calls) so far on our server, from its /metrics: rows per call is the
        batch size the batcher reached, which moves the ratio to the no-op ceiling."""
        text = urllib.request.urlopen(ready_url.replace("/ready", "/metrics"), timeout=30).read()
        found = [
            re.search(rf"^inference_batch_size_{k} (\S+)$", text.decode(), re.M)
            for k in ("sum", "count")
        ]
        return (float(found[0][1]), float(found[1][1])) if all(found) else (0.0, 0.0)

    names = ["serving", "mlflow", "mlserver", "bentoml"]
    samples: dict[tuple[str, int], list[dict]] = {}
    for n in range(args.peer_passes):
        order = names[n % len(names) :] + names[: n % len(names)]
        print(f"pass {n + 1}/{args.peer_passes}: {', '.join(order)}", flush=True)
        for name in order:
            port = free_port()
            cmd, env, ready, targets = server(name, port)
            log = work / f"peers-{name}-{n}.log"
            proc = subprocess.Popen(
                ["taskset", "-c", args.server_cpus, *cmd],
                env=env,
                stdout=open(log, "wb"),  # noqa: SIM115 - closed with the process
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=work,
            )
            try:
                try:
                    wait_http(ready, 300, proc)
                except RuntimeError as err:
                    raise RuntimeError(f"{name}: {err}; see {log}") from err
                for case, url, lua in targets:
                    body = lua_body.search((work / lua).read_text())[1].encode()
                    request = urllib.request.Request(
                        url, data=body, headers={"Content-Type": "application/json"}
                    )
                    try:  # one correct answer before timing: wrk counts errors only
                        urllib.request.urlopen(request, timeout=60).read()
                    except OSError as err:
                        raise RuntimeError(f"{case} {url}: {err}; see {log}") from err
                    for c in args.concurrency:
                        run_wrk(url, work / lua, c, 2, args.wrk_cpus)  # warm-up
                        before = model_calls(ready) if name == "serving" else (0.0, 0.0)
                        cpu = cpu_seconds(proc.pid)
                        r = run_wrk(url, work / lua, c, args.duration, args.wrk_cpus)
                        cpu = cpu_seconds(proc.pid) - cpu
                        r["cpu_us"] = cpu / max(r["rps"] * args.duration, 1) * 1e6
                        samples.setdefault((case, c), []).append(r)
                        rows = ""
                        if case != "noop" and name == "serving":
                            after = model_calls(ready)
                            calls = after[1] - before[1]
                            rows = f"  rows/model call {(after[0] - before[0]) / max(calls, 1):.1f}"
                        print(
                            f"  {case:<10} c={c:<3} {r['rps']:>9.0f} req/s  p50 "
                            f"{r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  errors "
                            f"{r['errors']}  CPU {r['cpu_us']:.0f} us/req{rows}",
                            flush=True,
                        )
            finally:
                stop(proc)

    med = {
        key: {
            k: statistics.median(r[k] for r in runs) for k in ("rps", "p50_ms", "p99_ms", "cpu_us")
        }
        | {"errors": sum(r["errors"] for r in runs), "passes": runs}
        for key, runs in samples.items()
    }
    print(f"\nmedians of {args.peer_passes} interleaved passes")
    print("| case | c | req/s | p50 ms | p99 ms | server CPU us/req | errors |")
    print("|---|---|---|---|---|---|---|")
    for (case, c), m in med.items():
        print(
            f"| {case} | {c} | {m['rps']:.0f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} "
            f"| {m['cpu_us']:.0f} | {m['errors']} |"
        )
    ok = True
    ratios: dict[str, dict[str, float]] = {}
    for c in args.concurrency:
        rps = {case: med[(case, cc)]["rps"] for case, cc in med if cc == c}
        ratios[str(c)] = got = {
            "ours/mlflow": rps["serving"] / rps["mlflow"],
            "ours/MLServer (v2 infer)": rps["serving-v2"] / rps["mlserver"],
            "ours/BentoML (/predict)": rps["serving"] / rps["bentoml"],
            "ours/no-op": rps["serving"] / rps["noop"],
        }
        print(f"c={c}: " + ", ".join(f"{k} {v:.2f}x" for k, v in got.items()))
        per_pass = [
            f"{s['rps'] / n['rps']:.0%}"
            for s, n in zip(samples[("serving", c)], samples[("noop", c)], strict=True)
        ]
        print(f"c={c}: ours/no-op per pass (same process, back to back): {', '.join(per_pass)}")
        by_cpu = [
            f"{n['cpu_us'] / s['cpu_us']:.0%}"
            for s, n in zip(samples[("serving", c)], samples[("noop", c)], strict=True)
        ]
        print(f"c={c}: ours/no-op per pass by server CPU per request: {', '.join(by_cpu)}")
        if c == 64:
            ok = got["ours/mlflow"] >= 10 and got["ours/MLServer (v2 infer)"] >= 4
            print(f"targets at c=64 (>= 10x mlflow, >= 4x MLServer): {'met' if ok else 'NOT met'}")
    if args.json:
        args.json.write_text(
            json.dumps({"medians": {f"{k[0]}@{k[1]}": v for k, v in med.items()}, **ratios})
        )
    return 0 if ok else 1


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
        choices=["all", "throughput", "coldstart", "binary", "grpc"],
        default="all",
        help="throughput: only the wrk comparison; coldstart: only cold start and RSS; "
        "binary: only binary vs JSON; grpc: only gRPC vs HTTP",
    )
    parser.add_argument(
        "--cold-passes", type=int, default=3, help="interleaved cold-start passes (median)"
    )
    parser.add_argument("--binary-rows", type=int, default=256, help="rows per v2 request")
    parser.add_argument(
        "--peers",
        action="store_true",
        help="ours, mlflow, MLServer 1.7.1 and BentoML 1.4.40 in interleaved passes (peers built "
        "once in cached venvs: needs the package index the first time)",
    )
    parser.add_argument("--peer-passes", type=int, default=3, help="interleaved --peers passes")
    args = parser.parse_args()
    if args.peers:
        return bench_peers(args)
    if args.only == "grpc":
        work = args.workdir or Path(tempfile.mkdtemp(prefix="serving-bench-"))
        work.mkdir(parents=True, exist_ok=True)
        figures = bench_grpc(save_model(work), args, work)
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2))
        return 0
    if args.only == "coldstart":
        if shutil.which("taskset") is None:
            sys.exit("taskset not found: apt-get install -y util-linux")
        work = args.workdir or Path(tempfile.mkdtemp(prefix="serving-bench-"))
        work.mkdir(parents=True, exist_ok=True)
        models = {"torch": save_model(work), "sklearn": save_sklearn_model(work)}
        figures = bench_coldstart(models, args, work)
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2))
        return 0 if figures["targets_met"] else 1
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
            ok = speedup >= 10 and p99_ratio <= 1 and ceiling >= 0.5
            print(
                f"targets at c=64 (>=10x, p99 no worse, >=50% of no-op): "
                f"{'met' if ok else 'NOT met'}"
            )
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=2))
    if args.only == "throughput":
        return 0 if ok else 1
    print("\ncold start and RSS (process start -> first correct prediction)", flush=True)
    cold = bench_coldstart({"torch": model, "sklearn": save_sklearn_model(work)}, args, work)
    ok = ok and cold["targets_met"]
    bench_binary(model, args, work)
    bench_grpc(model, args, work)
    print("image size comparison: needs a Docker engine; not measured by this script")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
