"""Peer model servers for `serving_bench.py --peers`: MLServer and BentoML in cached venvs.

The peers must not change the dev venv (MLServer 1.7.1 downgrades fastapi, starlette and
protobuf; BentoML brings a web stack of its own), so each lives in a venv of its own, made once
by pip under `~/.cache/ztml-bench-peers/<name>` (`ZTML_BENCH_PEERS` moves the root) and reused while
healthy: made to the end (a marker file is written last) and every pinned distribution imports at
its pinned version. One maker at a time (a file lock). Each peer venv also gets the mlflow and
torch versions of the dev venv, so every server loads the very same MLflow model with the same
kernels. Same pattern as tests/serving/peers.py, without pytest: a venv that cannot be made
raises `PeerUnavailable` with pip's words (and says so plainly when the index is unreachable).

The contract with serving_bench.py: `ensure(peer)` returns the venv; `mlserver_command` and
`bentoml_command` write the peers' config files into a work folder and return (argv, ready URL,
URL to drive with wrk); `peer_env(venv)` is the environment to start them in.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PEERS_ROOT = Path(
    os.environ.get("ZTML_BENCH_PEERS", Path.home() / ".cache" / "ztml-bench-peers")
).expanduser()
HEALTHY_MARK = ".ztml-peer-ready"  # written last: a venv without it is half-made and rebuilt
PIP_TIMEOUT_S = 1800
# what pip prints when it cannot reach the index at all (not: a package or version is missing)
NO_NETWORK = re.compile(
    r"NewConnectionError|Failed to establish a new connection|Temporary failure in name "
    r"resolution|Name or service not known|Network is unreachable|No route to host|"
    r"ConnectTimeoutError|ProxyError|Connection refused"
)
# MLServer opens gRPC and metrics ports besides HTTP: pick them below Linux's ephemeral range
# (32768-60999) so they cannot collide with the client sockets wrk and the servers open.
FIXED_PORTS = range(20000, 32000)


class PeerUnavailable(RuntimeError):
    """A peer venv could not be made or does not import what it was made for."""


@dataclass(frozen=True)
class Peer:
    """A peer server: its venv's name, exact pins (`dist==version`) and modules it must import."""

    name: str
    requirements: tuple[str, ...]
    imports: tuple[str, ...]


def same_as_ours(dist: str) -> str:
    """`dist==<version in this interpreter>`: peers load the model with our mlflow and torch."""
    return f"{dist}=={importlib.metadata.version(dist)}"


def mlserver_peer() -> Peer:
    """MLServer with its MLflow runtime. uvloop is held at 0.21.0: from 0.22 uvloop's
    `get_event_loop()` raises in a thread without a loop, which kills MLServer 1.7.1's parallel
    inference worker at start (`mlserver/parallel/worker.py` `_ignore_signals`), so the model
    never loads."""
    return Peer(
        "mlserver-1.7.1",
        (
            "mlserver==1.7.1",
            "mlserver-mlflow==1.7.1",
            "uvloop==0.21.0",
            same_as_ours("mlflow"),
            same_as_ours("torch"),
        ),
        ("mlserver", "mlserver_mlflow", "torch"),
    )


def bentoml_peer() -> Peer:
    return Peer(
        "bentoml-1.4.40",
        ("bentoml==1.4.40", same_as_ours("mlflow"), same_as_ours("torch")),
        ("bentoml", "mlflow.pyfunc", "torch"),
    )


def peer_env(venv: Path | None = None) -> dict[str, str]:
    """Our environment less what would make a peer's python see the dev venv or this repo; the
    peer's bin first on PATH (both peers exec helpers from it); one compute thread, like ours."""
    drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    if venv is not None:
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(venv)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", BENTOML_DO_NOT_TRACK="true")
    return env


def healthy(venv: Path, peer: Peer) -> bool:
    """Made to the end, its python imports the peer's modules, every pin at its version."""
    python = venv / "bin" / "python"
    if not (venv / HEALTHY_MARK).is_file() or not python.exists():
        return False
    pins = dict(req.split("==", 1) for req in peer.requirements)
    code = "".join(f"import {module}\n" for module in peer.imports)
    code += "import importlib.metadata as m, json\n"
    code += f"print(json.dumps({{d: m.version(d) for d in {sorted(pins)!r}}}))\n"
    probe = subprocess.run(
        [str(python), "-c", code],
        capture_output=True,
        text=True,
        env=peer_env(),
        timeout=300,
        check=False,
    )
    if probe.returncode != 0:
        return False
    try:
        return json.loads(probe.stdout.strip().splitlines()[-1]) == pins
    except (ValueError, IndexError):
        return False


def pip(venv: Path, *args: str) -> None:
    """`pip ARGS` in the peer venv, or `PeerUnavailable` with pip's own words."""
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", *args],
        capture_output=True,
        text=True,
        env=peer_env(),
        timeout=PIP_TIMEOUT_S,
        check=False,
    )
    if done.returncode == 0:
        return
    said = (done.stdout + done.stderr)[-4000:]
    if hit := NO_NETWORK.search(said):
        raise PeerUnavailable(
            f"--peers needs the package index to build {venv.name} once (pip: {hit[0]})"
        )
    raise PeerUnavailable(
        f"pip {' '.join(args)} failed in {venv} (exit {done.returncode}):\n{said}"
    )


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """One maker at a time across concurrent benchmark runs on this machine."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure(peer: Peer) -> Path:
    """The cached venv `PEERS_ROOT/peer.name`, made (pip upgraded first) when absent or
    unhealthy. Prints how long a build took (it happens once per machine)."""
    venv = PEERS_ROOT / peer.name
    with locked(PEERS_ROOT / f"{peer.name}.lock"):
        if healthy(venv, peer):
            return venv
        print(f"building {venv} (once): pip install {' '.join(peer.requirements)}", flush=True)
        shutil.rmtree(venv, ignore_errors=True)
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=peer_env())
        pip(venv, "install", "--quiet", "--upgrade", "pip")
        pip(venv, "install", "--quiet", *peer.requirements)
        seconds = time.monotonic() - started
        (venv / HEALTHY_MARK).write_text(json.dumps({"made_in_seconds": round(seconds, 1)}))
        if not healthy(venv, peer):
            raise PeerUnavailable(f"{venv} was made but does not import {peer.requirements}")
        print(f"made {venv} in {seconds:.0f} s", flush=True)
    return venv


def fixed_port() -> int:
    """A free TCP port below the ephemeral range (see FIXED_PORTS)."""
    for port in random.sample(FIXED_PORTS, 200):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {FIXED_PORTS}")


def mlserver_command(
    venv: Path, model: Path, name: str, port: int, work: Path
) -> tuple[list[str], str, str]:
    """`mlserver start` on the MLflow model through mlserver-mlflow's runtime, its defaults
    otherwise (one parallel inference worker, no adaptive batching). Returns (argv, ready URL,
    OIP v2 infer URL)."""
    folder = work / "mlserver"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    settings = {
        "host": "127.0.0.1",
        "http_port": port,
        "grpc_port": fixed_port(),
        "metrics_port": fixed_port(),
    }
    (folder / "settings.json").write_text(json.dumps(settings))
    model_settings = {
        "name": name,
        "implementation": "mlserver_mlflow.MLflowRuntime",
        "parameters": {"uri": str(model)},
    }
    (folder / "model-settings.json").write_text(json.dumps(model_settings))
    base = f"http://127.0.0.1:{port}/v2/models/{name}"
    return [str(venv / "bin" / "mlserver"), "start", str(folder)], f"{base}/ready", f"{base}/infer"


BENTO_SERVICE = '''"""The smallest BentoML service around the MLflow model (serving_bench.py)."""
import os

import bentoml
import mlflow.pyfunc
import numpy as np


@bentoml.service(workers=1)
class MLP:
    def __init__(self) -> None:
        self.model = mlflow.pyfunc.load_model(os.environ["ZTML_BENCH_MODEL"])

    @bentoml.api
    def predict(self, inputs: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(inputs.astype(np.float32)))
'''


def bentoml_command(venv: Path, model: Path, port: int, work: Path) -> tuple[list[str], str, str]:
    """`bentoml serve` on a one-file service that loads the model with mlflow.pyfunc and
    answers `POST /predict {"inputs": [[...]]}` (the body ours takes on /predict). Returns (argv,
    ready URL, predict URL); start it with `bentoml_env`."""
    folder = work / "bentoml"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "service.py").write_text(BENTO_SERVICE)
    argv = [str(venv / "bin" / "bentoml"), "serve", "service:MLP", "--working-dir", str(folder)]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    return argv, f"{base}/readyz", f"{base}/predict"


def bentoml_env(venv: Path, model: Path, work: Path) -> dict[str, str]:
    """peer_env plus the model path and a BentoML home inside the work folder."""
    return {
        **peer_env(venv),
        "ZTML_BENCH_MODEL": str(model),
        "BENTOML_HOME": str(work / "bentoml-home"),
    }
