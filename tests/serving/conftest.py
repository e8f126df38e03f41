"""Fixtures for the serving tests: real MLflow models on disk and real `python -m serving`
processes (uvicorn on loopback), started once per session, in parallel, to keep the suite fast.

This directory must stay a sub-package of `tests` (tests/__init__.py exists): on its own it
would be a top-level package named `serving` and shadow the real one.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.mlflow_server import free_port

REPO = Path(__file__).resolve().parents[2]
API_KEY = "s3cret-key"
ECHO_MODEL_CODE = '''
import time

import mlflow
import pandas as pd


class Echo(mlflow.pyfunc.PythonModel):
    """y = 2x; raises for x == -1; sleeps `sleep` seconds when given."""

    def predict(self, context, model_input, params=None):
        if (model_input["x"] == -1).any():
            raise ValueError("x = -1 is not allowed")
        if "sleep" in model_input and model_input["sleep"].notna().any():
            time.sleep(float(model_input["sleep"].max()))
        return pd.DataFrame({"y": model_input["x"] * 2, "x": model_input["x"]})


mlflow.models.set_model(Echo())
'''
GATE_MODEL_CODE = '''
import os
import time
from pathlib import Path

import mlflow
import pandas as pd


class Gate(mlflow.pyfunc.PythonModel):
    """y = 2x; a row with hold > 0 touches $GATE_DIR/entered, then waits for $GATE_DIR/release."""

    def predict(self, context, model_input, params=None):
        if "hold" in model_input and (model_input["hold"].fillna(0) > 0).any():
            gate = Path(os.environ["GATE_DIR"])
            (gate / "entered").touch()
            while not (gate / "release").exists():
                time.sleep(0.005)
        return pd.DataFrame({"y": model_input["x"] * 2})


mlflow.models.set_model(Gate())
'''
TYPED_MODEL_CODE = '''
import mlflow
import pandas as pd


class Typed(mlflow.pyfunc.PythonModel):
    """Answers what it was given: blob lengths, datetimes, n and f, and the alpha param."""

    def predict(self, context, model_input, params=None):
        out = {"alpha": [float((params or {}).get("alpha", 1.0))] * len(model_input)}
        if "blob" in model_input:
            out["blob_len"] = [len(b) for b in model_input["blob"]]
        if "when" in model_input:
            out["when"] = [t.isoformat() for t in model_input["when"]]
        if "n" in model_input:
            out["n"] = model_input["n"].astype("int64")
        if "f" in model_input:
            out["f"] = model_input["f"].astype("float64")
        return pd.DataFrame(out)


mlflow.models.set_model(Typed())
'''
# bytes long enough that base64.encodebytes (what MLflow writes into input examples) breaks lines
TYPED_BLOB = bytes(range(256)) * 2


class Server:
    """One `python -m serving` subprocess; `url` is its base URL."""

    def __init__(
        self,
        name: str,
        model_uri: str,
        tmp: Path,
        env: dict[str, str] | None = None,
        *,
        bare: bool = False,
        cwd: Path = REPO,
    ):
        """`bare`: the process gets only PATH, HOME (= tmp), PYTHONPATH and `env`, none of the
        test's environment (no MLflow or cloud settings), like the process runtime gives it."""
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"{name}.log"
        self.saw_not_ready = False
        if bare:
            inherited = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp)}
        else:
            inherited = {k: v for k, v in os.environ.items() if not k.startswith("SERVING_")}
        full_env = {**inherited, "PYTHONPATH": str(REPO), **(env or {})}
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "serving",
                "--model-uri",
                model_uri,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            cwd=cwd,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def poll_ready(self) -> bool:
        """One look at /ready; remembers having seen 503 while the model was loading."""
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited {self.proc.returncode}:\n{self.log()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                return True
            self.saw_not_ready = True
        return False

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@contextlib.contextmanager
def running(
    specs: dict[str, tuple[Path, dict[str, str]]], tmp: Path, kind: type[Server] | None = None
) -> Iterator[dict[str, Server]]:
    """Start one server per spec (model dir, env) in parallel, wait for all, stop them after.
    `kind` is the Server class to start (a subclass adds flags, e.g. a gRPC port)."""
    kind = kind or Server
    started = {name: kind(name, str(path), tmp, env) for name, (path, env) in specs.items()}
    try:
        wait_ready(list(started.values()))
        yield started
    finally:
        for server in started.values():
            server.stop()


def wait_ready(servers: list[Server], timeout: float = 120) -> None:
    """Poll all servers together until each answers /ready with 200."""
    deadline = time.monotonic() + timeout
    waiting = list(servers)
    while waiting:
        waiting = [s for s in waiting if not s.poll_ready()]
        if waiting and time.monotonic() > deadline:
            raise RuntimeError(f"not ready after {timeout}s:\n{waiting[0].log()}")
        time.sleep(0.05)


def metric(text: str, name: str, /, **labels: str) -> float:
    """Value of one Prometheus sample (0 when absent)."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$", line)
        if not match or match[1] != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', match[2] or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(match[3])
    return 0.0


# ---------------------------------------------------------------------------------- models
@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """sklearn (columns a, b: double; c: long), torch MLP 4->8->2 (tensor (-1, 4), 3-row
    example), an `echo` pyfunc (x: double, optional sleep: double; DataFrame output), a `gate`
    pyfunc (x: double, optional hold: double; see GATE_MODEL_CODE), a `typed` pyfunc (when:
    datetime, n: integer, f: float; params alpha: double, tags: string list) and a `binary`
    pyfunc (blob: binary), both with input examples (MLflow writes the binary one's base64 with
    line breaks); TYPED_MODEL_CODE answers what they were given."""
    import mlflow.pyfunc
    import mlflow.pytorch
    import mlflow.sklearn
    import pandas as pd
    import torch
    from mlflow.models import infer_signature
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema
    from sklearn.linear_model import LogisticRegression

    root = tmp_path_factory.mktemp("models")
    reqs = ["mlflow==3.17.2"]  # explicit: skips MLflow's slow requirement inference

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {"a": rng.normal(size=40), "b": rng.normal(size=40), "c": rng.integers(0, 5, 40)}
    )
    target = (frame["a"] + frame["b"] > 0).astype(int)
    clf = LogisticRegression().fit(frame, target)
    mlflow.sklearn.save_model(
        clf,
        root / "sk",
        signature=infer_signature(frame, clf.predict(frame)),
        input_example=frame.head(2),
        pip_requirements=reqs,
    )

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    x = rng.normal(size=(3, 4)).astype(np.float32)
    with torch.no_grad():
        y = net(torch.from_numpy(x)).numpy()
    mlflow.pytorch.save_model(
        net,
        root / "torch",
        signature=infer_signature(x, y),
        input_example=x,
        pip_requirements=reqs,
    )

    code = root / "echo_model.py"
    code.write_text(textwrap.dedent(ECHO_MODEL_CODE))
    signature = ModelSignature(
        inputs=Schema([ColSpec("double", "x"), ColSpec("double", "sleep", required=False)]),
        outputs=Schema([ColSpec("double", "y"), ColSpec("double", "x")]),
    )
    mlflow.pyfunc.save_model(
        root / "echo",
        python_model=str(code),
        signature=signature,
        input_example=pd.DataFrame({"x": [1.0, 2.0]}),
        pip_requirements=reqs,
    )
    gate_code = root / "gate_model.py"
    gate_code.write_text(textwrap.dedent(GATE_MODEL_CODE))
    mlflow.pyfunc.save_model(
        root / "gate",
        python_model=str(gate_code),
        signature=ModelSignature(
            inputs=Schema([ColSpec("double", "x"), ColSpec("double", "hold", required=False)]),
            outputs=Schema([ColSpec("double", "y")]),
        ),
        input_example=pd.DataFrame({"x": [1.0]}),
        pip_requirements=reqs,
    )

    typed_code = root / "typed_model.py"
    typed_code.write_text(textwrap.dedent(TYPED_MODEL_CODE))
    typed_example = pd.DataFrame(
        {
            "when": pd.to_datetime(["2024-01-02T03:04:05", "1999-12-31T23:59:59"]),
            "n": np.array([1, -2], dtype=np.int32),
            "f": np.array([0.5, 1.5], dtype=np.float32),
        }
    )
    mlflow.pyfunc.save_model(
        root / "typed",
        python_model=str(typed_code),
        signature=ModelSignature(
            inputs=Schema(
                [ColSpec("datetime", "when"), ColSpec("integer", "n"), ColSpec("float", "f")]
            ),
            params=ParamSchema(
                [ParamSpec("alpha", "double", 1.0), ParamSpec("tags", "string", ["a"], (-1,))]
            ),
        ),
        input_example=(typed_example, {"alpha": 2.0}),
        pip_requirements=reqs,
    )
    mlflow.pyfunc.save_model(
        root / "binary",
        python_model=str(typed_code),
        signature=ModelSignature(inputs=Schema([ColSpec("binary", "blob")])),
        input_example=pd.DataFrame({"blob": [TYPED_BLOB, b"ab"]}),
        pip_requirements=reqs,
    )
    return {
        "sk": root / "sk",
        "torch": root / "torch",
        "echo": root / "echo",
        "gate": root / "gate",
        "typed": root / "typed",
        "binary": root / "binary",
    }


# ---------------------------------------------------------------------------------- servers
@pytest.fixture(scope="session")
def servers(model_dirs: dict[str, Path], tmp_path_factory) -> Iterator[dict[str, Server]]:
    """All test servers, started together (startup is mostly imports: parallel is cheaper)."""
    tmp = tmp_path_factory.mktemp("logs")
    specs = {
        "torch": (
            model_dirs["torch"],
            {
                "SERVING_MAX_BATCH_SIZE": "32",
                "SERVING_MAX_BATCH_DELAY_MS": "5",
            },
        ),
        "sk": (
            model_dirs["sk"],
            {
                "SERVING_MAX_BATCH_DELAY_MS": "0",  # batching off: the direct path
                "SERVING_MODEL_NAME": "iris",
                "SERVING_MODEL_VERSION": "7",
                "SERVING_IMAGE_DIGEST": "sha256:" + "ab" * 32,
            },
        ),
        "echo": (
            model_dirs["echo"],
            {
                "SERVING_API_KEY": API_KEY,
                "SERVING_MAX_BODY_BYTES": "4096",
                "SERVING_REQUEST_TIMEOUT_SECONDS": "1.5",
                "SERVING_MAX_BATCH_DELAY_MS": "20",
                "SERVING_ACCESS_LOG": "true",
            },
        ),
        "drain": (model_dirs["echo"], {"SERVING_REQUEST_TIMEOUT_SECONDS": "10"}),
    }
    with running(specs, tmp) as started:
        yield started


@pytest.fixture(scope="session")
def torch_server(servers: dict[str, Server]) -> Server:
    return servers["torch"]


@pytest.fixture(scope="session")
def sk_server(servers: dict[str, Server]) -> Server:
    return servers["sk"]


@pytest.fixture(scope="session")
def echo_server(servers: dict[str, Server]) -> Server:
    return servers["echo"]


@pytest.fixture(scope="session")
def drain_server(servers: dict[str, Server]) -> Server:
    return servers["drain"]


@pytest.fixture(scope="session")
def read_metric():
    """`read_metric(text, name, **labels)`: value of one Prometheus sample (0 when absent)."""
    return metric
