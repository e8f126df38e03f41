"""Benchmark: registry change -> new version answering, with and without the webhook.

A real `mlflow server` (webhooks enabled), a real `ztml controller` process and the process
runtime. Each trial moves the alias `bench` (-> environment `local`) between two registered
sklearn versions and measures from the `set_registered_model_alias` call until `/predict`
answers 200 on the deployment now running the new version (the update path: the old version
serves until the new one is verified).

- webhook: MLflow delivers `model_version_alias.created`; the poll interval stays at the
  product default (30 s) so it hardly ever contributes;
- polling only: the same with the webhook disabled in MLflow (what a lost delivery or a
  stage transition costs): latency = deploy time + the wait for the next poll;
- webhook endpoint throughput: signed deliveries over HTTP to the running controller (8 client
  threads on this machine's two cores, so the client competes with the server), and the
  in-process ceiling of verify + parse + route + enqueue.

    .venv/bin/python benchmarks/controller_bench.py [--trials 10] [--poll-interval 30]

Target: median under 3 s, p95 under 5 s with the webhook.

Registry scale (`--models N`, instead of the trials): N registered models with 5 versions each,
1 % of them with the alias `bench` on a version the controller already rejected (its
`ztml.local.*` tags say so, as after a real rejection). Seeding N models through REST takes
hours, so they are written straight into the server's SQL store with MLflow's own SQLAlchemy
models (one real sklearn version is logged through REST; the rejected versions point at its run
and logged model). Then, in this process, a controller (fresh memory: a restart) runs poll
cycles (poll + the reconciles it queued) and the table gives per cycle: poll seconds, MLflow
requests, the MLflow server's CPU seconds, and this process's RSS.

    .venv/bin/python benchmarks/controller_bench.py --models 20000 [--cycles 4]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RUST_LIB_BACKTRACE", "0")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

from mlflow import MlflowClient

from mlflow_ztml.config import ControllerConfig, load_settings
from mlflow_ztml.controller import webhooks
from mlflow_ztml.controller.app import WebhookReceiver
from mlflow_ztml.controller.metrics import Metrics
from mlflow_ztml.controller.signature import sign
from mlflow_ztml.runtimes.process import ProcessRuntime
from tests.controller.helpers import SECRET
from tests.controller.process import WEBHOOK_ENV, ControllerProcess
from tests.mlflow_server import MlflowServer
from tests.models import GOOD_METRICS, register_sklearn

MODEL = "bench-controller"
ROW = {"inputs": [{"income": 0.9, "age": 0.4, "debt": 0.1}]}


def _wait(check: Callable[[], bool], timeout: float, interval: float = 0.05) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        with contextlib.suppress(requests.RequestException):
            if check():
                return time.perf_counter() - started
        time.sleep(interval)
    raise SystemExit(f"timed out after {timeout} s")


def _answering(runtime: ProcessRuntime, name: str, version: str) -> bool:
    status = runtime.get(name)
    if not status or status.state != "running" or status.model_version != version:
        return False
    return requests.post(f"{status.endpoint}/predict", json=ROW, timeout=5).status_code == 200


def _idle(controller_url: str) -> bool:
    """Nothing queued or running: the previous trial's tail (stopping the old process,
    writing tags) must not be billed to the next trial."""
    status = requests.get(f"{controller_url}/status", timeout=5).json()
    return not status["queue"]


def trials(
    client: MlflowClient,
    runtime: ProcessRuntime,
    controller_url: str,
    versions: tuple[str, str],
    count: int,
    timeout: float,
    spread: float = 0.0,
) -> list[float]:
    """`spread`: a random pause before each trial, so polling trials do not phase-lock
    with the poll timer (which would make every trial wait the same amount)."""
    name = f"{MODEL}-local"
    results = []
    for index in range(count):
        _wait(lambda: _idle(controller_url), 60)
        time.sleep(0.5 + random.uniform(0, spread))
        target = versions[(index + 1) % 2]
        started = time.perf_counter()
        client.set_registered_model_alias(MODEL, "bench", target)
        _wait(lambda t=target: _answering(runtime, name, t), timeout)
        results.append(time.perf_counter() - started)
        print(f"  trial {index + 1}: v{target} answering after {results[-1]:.2f} s", flush=True)
    return results


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"median {statistics.median(ordered):.2f} s, p95 {p95:.2f} s, worst {ordered[-1]:.2f} s"


def _delivery(index: int) -> tuple[dict[str, str], bytes]:
    body = (
        '{"entity": "model_version_alias", "action": "created", "timestamp": "x", '
        f'"data": {{"name": "bench-absent-{index % 10}", "alias": "bench", "version": "1"}}}}'
    ).encode()
    delivery_id = str(uuid.uuid4())
    timestamp = str(int(time.time()))
    return {
        "Content-Type": "application/json",
        "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": timestamp,
        "X-MLflow-Signature": sign(SECRET, delivery_id, timestamp, body),
    }, body


def http_throughput(url: str, total: int, threads: int = 8) -> tuple[float, float, float]:
    prepared = [_delivery(i) for i in range(total)]
    latencies: list[float] = []
    lock = threading.Lock()
    cursor = iter(range(total))

    def client() -> None:
        session = requests.Session()
        while True:
            with lock:
                index = next(cursor, None)
            if index is None:
                return
            headers, body = prepared[index]
            started = time.perf_counter()
            response = session.post(f"{url}/webhooks/mlflow", data=body, headers=headers)
            elapsed = time.perf_counter() - started
            if response.status_code != 202:
                raise SystemExit(f"unexpected {response.status_code}: {response.text}")
            with lock:
                latencies.append(elapsed)

    started = time.perf_counter()
    workers = [threading.Thread(target=client) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    seconds = time.perf_counter() - started
    latencies.sort()
    return total / seconds, latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]


def inprocess_throughput(total: int) -> float:
    receiver = WebhookReceiver(
        [SECRET],
        ControllerConfig(aliases={"bench": "local"}),
        ["local"],
        enqueue=lambda _key: True,
        metrics=Metrics(),
    )
    prepared = [_delivery(i) for i in range(total)]
    started = time.perf_counter()
    for headers, body in prepared:
        code, _ = receiver.handle(headers, body)
        assert code == 202
    return total / (time.perf_counter() - started)


# ---- registry scale ---------------------------------------------------------------------------

SCALE_MODEL = "bench-scale"


def _seed(server: MlflowServer, models: int, rejected_share: float, tag_value) -> int:
    """Write `models` registered models (5 versions each) into the server's store; every
    1/`rejected_share`-th gets the alias `bench` on its version 5, tagged as rejected. Returns
    the number of rejected keys."""
    from dataclasses import replace

    from mlflow.store.model_registry.dbmodels.models import (
        SqlModelVersion,
        SqlModelVersionTag,
        SqlRegisteredModel,
        SqlRegisteredModelAlias,
    )
    from sqlalchemy import create_engine, insert

    from mlflow_ztml.registry import Registry

    real = register_sklearn(server.url, SCALE_MODEL, metrics={**GOOD_METRICS, "accuracy": 0.6})
    settings = load_settings()
    facts = Registry(settings, MlflowClient(server.url)).resolve(f"models:/{SCALE_MODEL}/{real}")
    version = MlflowClient(server.url).get_model_version(SCALE_MODEL, real)
    stamp = int(time.time() * 1000)
    every = max(1, round(1 / rejected_share))
    rows_models, rows_versions, rows_aliases, rows_tags = [], [], [], []
    for index in range(models):
        name = f"scale-{index:06d}"
        # a registry grown over time: one model a minute, the newest a minute ago
        now = stamp - (models - index) * 60_000
        rows_models.append({"name": name, "creation_time": now, "last_updated_time": now})
        for number in range(1, 6):
            rows_versions.append(
                {
                    "name": name,
                    "version": number,
                    "creation_time": now,
                    "last_updated_time": now,
                    "source": version.source,
                    "run_id": version.run_id,
                    "current_stage": "None",
                    "status": "READY",
                }
            )
        if index % every == 0:
            rows_aliases.append({"name": name, "alias": "bench", "version": 5})
            judged = replace(
                facts, name=name, version="5", uri=f"models:/{name}/5", version_tags={}
            )
            for key, value in (
                ("ztml.local.status", "rejected"),
                ("ztml.local.decision", "deny"),
                ("ztml.local.rejected_fingerprint", tag_value(judged)),
            ):
                rows_tags.append({"name": name, "version": 5, "key": key, "value": value})
    engine = create_engine(f"sqlite:///{server.root / 'mlflow.db'}")
    with engine.begin() as connection:
        for model, rows in (
            (SqlRegisteredModel, rows_models),
            (SqlModelVersion, rows_versions),
            (SqlRegisteredModelAlias, rows_aliases),
            (SqlModelVersionTag, rows_tags),
        ):
            for start in range(0, len(rows), 5000):
                connection.execute(insert(model), rows[start : start + 5000])
    engine.dispose()
    return len(rows_aliases)


def _judged_tag(settings):
    """The rejected-fingerprint tag the controller under test would have written."""
    from mlflow_ztml.controller import reconcile

    policy = reconcile.policy_fingerprint(settings)
    if hasattr(reconcile, "judge"):
        return lambda facts: reconcile.judge(facts, policy, None).tag_value()
    return lambda facts: reconcile.evidence_fingerprint(facts, policy, None)  # before


def _cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of every process in the MLflow server's process group."""
    total = 0
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                total += int(fields[11]) + int(fields[12])
    return total / tick


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def scale(models: int, cycles: int, rejected_share: float, verbose: bool = False) -> None:
    from mlflow_ztml.controller.manager import Controller

    with tempfile.TemporaryDirectory(prefix="ztml-controller-scale-") as tmp:
        root = Path(tmp)
        (root / "ztml.yaml").write_text(
            "controller:\n  aliases: {bench: local}\n  stages: {}\n  models: all\n"
        )
        os.chdir(root)
        os.environ["ZTML_HOME"] = str(root / "ztml-home")
        os.environ.pop("ZTML_CONFIG", None)
        server = MlflowServer(root / "mlflow").start(timeout=300)  # a loaded machine
        os.environ["MLFLOW_TRACKING_URI"] = server.url
        try:
            started = time.perf_counter()
            rejected = _seed(server, models, rejected_share, _judged_tag(load_settings()))
            print(
                f"seeded {models} models x 5 versions, {rejected} rejected keys "
                f"in {time.perf_counter() - started:.1f} s",
                flush=True,
            )
            seen: list[str] = []
            original = requests.Session.request

            def counted(self, method, url, *args, **kwargs):
                began = time.perf_counter()
                try:
                    return original(self, method, url, *args, **kwargs)
                finally:
                    if str(url).startswith(server.url):
                        path = str(url)[len(server.url) :].split("?")[0]
                        seen.append(f"{path} {time.perf_counter() - began:.3f}s")

            requests.Session.request = counted  # type: ignore[method-assign]
            # a webhook secret: polls between resyncs are incremental (without one, all full)
            controller = Controller(load_settings(), secrets=[SECRET])
            assert server.process is not None
            pgid = os.getpgid(server.process.pid)
            rows = []
            names = ["first after start"] + [f"idle {i}" for i in range(1, cycles)]
            names += ["1 model changed", "resync (full listing)"]
            for index, name in enumerate(names):
                if name == "1 model changed":  # moves its last_updated_timestamp
                    MlflowClient(server.url).transition_model_version_stage(
                        "scale-000001", "1", "Staging"
                    )
                elif name.startswith("resync"):
                    controller.request_resync()
                seen.clear()
                cpu = _cpu_seconds(pgid)
                began = time.perf_counter()
                queued = controller.poll_once()
                poll = time.perf_counter() - began
                poll_requests = len(seen)
                while (key := controller.queue.get(timeout=0)) is not None:
                    with contextlib.suppress(Exception):
                        controller.reconciler.reconcile(key)
                    controller.queue.done(key)
                total = time.perf_counter() - began
                rows.append(
                    (
                        name,
                        poll,
                        poll_requests,
                        len(queued),
                        len(seen),
                        total,
                        _cpu_seconds(pgid) - cpu,
                        _rss_mb(),
                    )
                )
                print(f"  cycle {index + 1}: {rows[-1]}", flush=True)
                if verbose:
                    print("    " + "\n    ".join(seen[:12]), flush=True)
            requests.Session.request = original  # type: ignore[method-assign]
        finally:
            server.stop()
    print()
    print(f"{models} models x 5 versions, {rejected} rejected keys (alias bench -> local)")
    print(
        "| cycle | poll s | poll requests | keys queued | MLflow requests (poll + reconciles) "
        "| cycle s | MLflow CPU s | controller RSS MB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, poll, poll_requests, queued, total_requests, total, cpu, rss in rows:
        print(
            f"| {name} | {poll:.2f} | {poll_requests} | {queued} | {total_requests} "
            f"| {total:.2f} | {cpu:.2f} | {rss:.0f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--poll-interval", type=float, default=30.0)
    parser.add_argument("--polling-trials", type=int, default=None, help="default: --trials")
    parser.add_argument("--requests", type=int, default=2000, help="for the throughput part")
    parser.add_argument("--log", default="/tmp/ztml-controller-bench.log", help="controller log")
    parser.add_argument("--models", type=int, default=0, help="registry scale mode (see above)")
    parser.add_argument("--cycles", type=int, default=4, help="poll cycles in --models mode")
    parser.add_argument("--rejected-share", type=float, default=0.01)
    parser.add_argument("--verbose", action="store_true", help="--models: each request's time")
    args = parser.parse_args()
    if args.models:
        scale(args.models, args.cycles, args.rejected_share, args.verbose)
        return

    with tempfile.TemporaryDirectory(prefix="ztml-controller-bench-") as tmp:
        root = Path(tmp)
        server = MlflowServer(root / "mlflow", env=WEBHOOK_ENV).start()
        (root / "ztml.yaml").write_text(
            "controller:\n"
            "  aliases: {bench: local}\n"
            "  stages: {}\n"
            f"  poll_interval_seconds: {args.poll_interval}\n"
        )
        controller = ControllerProcess(root, server.url)
        runtime = ProcessRuntime(root / "ztml-home" / "process")
        try:
            client = MlflowClient(server.url)
            versions = (
                register_sklearn(server.url, MODEL, metrics=GOOD_METRICS),
                register_sklearn(server.url, MODEL, metrics=GOOD_METRICS),
            )
            hook = webhooks.register(client, controller.url, SECRET, "ztml-bench")
            controller.start()
            print("warm-up: first deploy of v1", flush=True)
            client.set_registered_model_alias(MODEL, "bench", versions[0])
            _wait(lambda: _answering(runtime, f"{MODEL}-local", versions[0]), 120)

            print(f"webhook ({args.trials} trials, poll every {args.poll_interval:.0f} s):")
            with_webhook = trials(client, runtime, controller.url, versions, args.trials, 120)
            if len(with_webhook) % 2:  # start the polling part from v1 again
                versions = (versions[1], versions[0])

            client.update_webhook(hook.webhook_id, status="DISABLED")
            time.sleep(2)  # MLFLOW_WEBHOOK_CACHE_TTL=1
            polling_count = args.trials if args.polling_trials is None else args.polling_trials
            print(f"polling only ({polling_count} trials):")
            polling = (
                trials(
                    client,
                    runtime,
                    controller.url,
                    versions,
                    polling_count,
                    120 + args.poll_interval,
                    spread=args.poll_interval,
                )
                if polling_count
                else []
            )

            print(f"webhook endpoint throughput ({args.requests} signed deliveries):")
            rps, p50, p99 = http_throughput(controller.url, args.requests)
            ceiling = inprocess_throughput(max(args.requests, 5000))
        finally:
            controller.stop()
            for status in runtime.list():
                runtime.delete(status.name)
            server.stop()
            log = root / "controller.log"
            if log.exists():
                Path(args.log).write_bytes(log.read_bytes())

    print()
    print("| path | trials | alias set -> new version answering |")
    print("|---|---|---|")
    print(f"| webhook | {len(with_webhook)} | {summary(with_webhook)} |")
    if polling:
        print(
            f"| polling only ({args.poll_interval:.0f} s) | {len(polling)} | {summary(polling)} |"
        )
    print()
    print(
        f"webhook endpoint over HTTP: {rps:.0f} deliveries/s, p50 {p50 * 1000:.1f} ms, "
        f"p99 {p99 * 1000:.1f} ms (8 client threads, same 2 cores)"
    )
    print(f"in-process verify + parse + route + enqueue: {ceiling:.0f} deliveries/s")
    print(f"controller log (stage timings per deploy): {args.log}")
    median = statistics.median(with_webhook)
    ordered = sorted(with_webhook)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    verdict = "met" if median < 3 and p95 < 5 else "NOT met"
    print(f"target: webhook median < 3 s, p95 < 5 s -> {verdict} ({median:.2f} s, {p95:.2f} s)")


if __name__ == "__main__":
    main()
