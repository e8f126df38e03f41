"""`process` runtime: `python -m serving` as a local uvicorn process on a loopback port.

The embedded default that needs nothing installed. State is one JSON file per deployment under
`$ZTML_HOME/process/`, so a later CLI process sees the same deployments; a process that died
shows as `failed`. Each version gets its own port: an update starts the candidate next to the
old process, verifies it, points the deployment at it and only then stops the old one.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from mlflow_ztml.errors import DeployError
from mlflow_ztml.runtimes.base import DeploymentSpec, DeploymentStatus, Verifier
from mlflow_ztml.runtimes.locking import deployment_lock

_STOP_GRACE_SECONDS = 15.0
# Callers that read the old endpoint just before the switch still get to connect.
_SWITCH_GRACE_SECONDS = 1.0


class ProcessRuntime:
    name = "process"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        (self.root / "logs").mkdir(parents=True, exist_ok=True)

    def deploy(self, spec: DeploymentSpec, verify: Verifier) -> tuple[DeploymentStatus, bool]:
        with deployment_lock(self.root, spec.name):
            current = self.get(spec.name)
            if (
                current is not None
                and current.state == "running"
                and current.fingerprint == spec.fingerprint()
            ):
                return current, False
            self._remove_orphan_candidate(spec.name)
            old_record = self._read(spec.name)
            if spec.port is not None and old_record and old_record.get("port") == spec.port:
                self._stop(old_record)  # a fixed port cannot be shared: no overlap possible
                old_record = None
            candidate = self._start(spec)
            self._write_json(self._candidate_path(spec.name), candidate)
            try:
                self._wait_ready(candidate, spec.ready_timeout_seconds)
                verify(self._status(candidate))
            except BaseException:
                self._stop(candidate)
                self._candidate_path(spec.name).unlink(missing_ok=True)
                raise
            self._write(spec.name, candidate)
            self._candidate_path(spec.name).unlink(missing_ok=True)
            if old_record:
                if _running(old_record):
                    time.sleep(_SWITCH_GRACE_SECONDS)
                self._stop(old_record)
            return self._status(candidate), True

    def get(self, name: str) -> DeploymentStatus | None:
        record = self._read(name)
        return None if record is None else self._status(record)

    def list(self) -> list[DeploymentStatus]:
        names = sorted(p.stem for p in self.root.glob("*.json"))
        return [status for name in names if (status := self.get(name)) is not None]

    def delete(self, name: str) -> None:
        with deployment_lock(self.root, name):
            self._remove_orphan_candidate(name)
            record = self._read(name)
            if record is None:
                raise DeployError(f"no process deployment named {name!r}")
            self._stop(record)
            self._path(name).unlink(missing_ok=True)

    def endpoint(self, name: str) -> str | None:
        status = self.get(name)
        return status.endpoint if status else None

    def _start(self, spec: DeploymentSpec) -> dict:
        port = spec.port or _free_port()
        log_path = self.root / "logs" / f"{spec.name}-v{spec.model_version}-{port}.log"
        command = [
            sys.executable,
            "-m",
            "serving",
            "--model-uri",
            spec.model_uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--model-name",
            spec.model_name,
            "--model-version",
            spec.model_version,
        ]
        env = {
            **os.environ,
            **spec.env,
            "SERVING_MAX_BATCH_SIZE": str(spec.max_batch_size),
            "SERVING_MAX_BATCH_DELAY_MS": str(spec.max_batch_delay_ms),
        }
        if spec.tracking_uri:
            env["MLFLOW_TRACKING_URI"] = spec.tracking_uri
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        return {
            "name": spec.name,
            "environment": spec.environment,
            "model_name": spec.model_name,
            "model_version": spec.model_version,
            "model_uri": spec.model_uri,
            "fingerprint": spec.fingerprint(),
            "pid": process.pid,
            "port": port,
            "log": str(log_path),
            "started_at": time.time(),
        }

    def _wait_ready(self, record: dict, timeout: float) -> None:
        url = f"http://127.0.0.1:{record['port']}/ready"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _alive(record["pid"]):
                raise DeployError(
                    f"serving process for {record['name']} v{record['model_version']} exited "
                    f"before it was ready; last log lines:\n{_tail(record['log'])}"
                )
            with contextlib.suppress(requests.RequestException):
                if requests.get(url, timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise DeployError(
            f"{record['name']} v{record['model_version']} was not ready within {timeout:.0f} s; "
            f"last log lines:\n{_tail(record['log'])}"
        )

    def _status(self, record: dict) -> DeploymentStatus:
        alive = _running(record)
        return DeploymentStatus(
            name=record["name"],
            runtime=self.name,
            state="running" if alive else "failed",
            environment=record["environment"],
            model_name=record["model_name"],
            model_version=record["model_version"],
            model_uri=record["model_uri"],
            endpoint=f"http://127.0.0.1:{record['port']}",
            fingerprint=record["fingerprint"],
            started_at=record["started_at"],
            detail=None
            if alive
            else f"process {record['pid']} is not running; log: {record['log']}",
        )

    def _stop(self, record: dict) -> None:
        pid = record["pid"]
        if not _running(record):
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)  # the server drains in-flight requests
        deadline = time.monotonic() + _STOP_GRACE_SECONDS
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)

    def _path(self, name: str) -> Path:
        return self.root / f"{name}.json"

    def _read(self, name: str) -> dict | None:
        try:
            return json.loads(self._path(name).read_text())
        except FileNotFoundError:
            return None
        except json.JSONDecodeError as exc:
            raise DeployError(f"corrupt state file {self._path(name)}: {exc}") from None

    def _write(self, name: str, record: dict) -> None:
        self._write_json(self._path(name), record)

    @staticmethod
    def _write_json(path: Path, record: dict) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2))
        tmp.replace(path)

    def _candidate_path(self, name: str) -> Path:
        return self.root / f".{name}.candidate"

    def _remove_orphan_candidate(self, name: str) -> None:
        """A candidate left by a process that died mid-deploy (the caller was killed) is
        stopped before the next attempt, so no unmanaged server keeps running."""
        path = self._candidate_path(name)
        try:
            record = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            path.unlink(missing_ok=True)
            return
        self._stop(record)
        path.unlink(missing_ok=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _alive(pid: int) -> bool:
    """True while `pid` runs (reaping it first if it is our own exited child)."""
    with contextlib.suppress(ChildProcessError, OSError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("State:"):
                    return "Z" not in line
    except OSError:
        return False
    return True


def _running(record: dict) -> bool:
    """Alive and still our server (a recycled PID runs something else)."""
    if not _alive(record["pid"]):
        return False
    try:
        cmdline = Path(f"/proc/{record['pid']}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"serving" in cmdline and str(record["port"]).encode() in cmdline


def _tail(path: str, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
