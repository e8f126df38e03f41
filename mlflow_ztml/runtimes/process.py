"""`process` runtime: `python -m serving` as a local uvicorn process on a loopback port.

The embedded default that needs nothing installed. State is one JSON file per deployment under
`$ZTML_HOME/process/`, so a later CLI process sees the same deployments; a process that died
shows as `failed`, an unreadable state file as `unknown` (for that deployment only). Each
version gets its own port: an update starts the candidate next to the old process, verifies it,
points the deployment at it and only then stops the old one.

A served model is untrusted code, so the control plane keeps its secrets:

- the control plane (which holds the registry credentials) downloads the model files into the
  deployment's own directory, `$ZTML_HOME/process/deployments/NAME/<candidate>/model`, and the
  server loads that local copy: it gets no tracking URI and no credentials;
- the server starts with an allowlisted environment (`SERVING_*`, PATH, HOME, locale, time
  zone, thread counts, the virtualenv and what CUDA needs), never the caller's whole
  environment (webhook secrets, notification URLs, MLflow passwords, cloud credentials).

Fast updates (alias set -> new version answering in seconds):

- `prefetch` starts the model download in the background as soon as the version is known, so
  it runs while the pipeline gathers evidence and evaluates the gate; `deploy` takes that copy
  (or downloads itself when there is none), and the pipeline `discard`s a copy the gate denied;
- once the candidate is verified and the deployment points at it, the old process is retired
  in a background thread (the switch grace, then SIGTERM: it drains every request it received,
  then exits), so `deploy` returns as soon as the new version answers. A `.NAME.retiring-PID`
  file says which process is draining; the thread is not a daemon (the interpreter waits for
  it at exit), `delete` and a fixed-port update wait for it, and another process finding the
  file of a caller that died stops that server itself.

The copy goes away with its process: when an update retires the old version, when a candidate
fails, and with `delete`. Each process writes stdout and stderr, unbuffered, to its own log under
`$ZTML_HOME/process/logs/`; a process that fails to start is reported with its exit code and the
last lines of that log.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import Future
from pathlib import Path

from mlflow_ztml import names
from mlflow_ztml.errors import DeployError, DeploymentConflictError, ZtmlError
from mlflow_ztml.runtimes.base import DeploymentSpec, DeploymentStatus, Verifier
from mlflow_ztml.runtimes.locking import deployment_lock

_STOP_GRACE_SECONDS = 15.0
# Callers that read the old endpoint just before the switch still get to connect.
_SWITCH_GRACE_SECONDS = 1.0
_TAIL_LINES = 20
_READY_POLL_MIN_SECONDS = 0.01
_READY_POLL_MAX_SECONDS = 0.1
_TAIL_CHARS = 3000

# What the serving process may see of the caller's environment: what it needs to run. Anything
# else (secrets, tokens, cloud credentials, notification URLs) stays with the control plane.
PASS_ENV = frozenset(
    {
        "PATH",
        "HOME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "VIRTUAL_ENV",
        "LD_LIBRARY_PATH",
        "CUDA_VISIBLE_DEVICES",
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "NUMEXPR_NUM_THREADS",
        "NUMEXPR_MAX_THREADS",
        "VECLIB_MAXIMUM_THREADS",
    }
)
PASS_ENV_PREFIXES = ("SERVING_", "LC_", "OPENBLAS_")

# Our own children, so their exit code is known (reaping them elsewhere would lose it).
_children: dict[int, subprocess.Popen[bytes]] = {}
# Old processes this process is retiring (draining), by their `.NAME.retiring-PID` file.
_retirements: dict[str, threading.Thread] = {}


def serving_environment(parent: dict[str, str], extra: dict[str, str]) -> dict[str, str]:
    """The serving process's environment: the allowlisted part of `parent` plus `extra` (the
    spec's explicit settings), and PYTHONPATH only when the `serving` package needs it."""
    env = {
        key: value
        for key, value in parent.items()
        if key in PASS_ENV or key.startswith(PASS_ENV_PREFIXES)
    }
    pythonpath = _serving_pythonpath()
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    env["PYTHONUNBUFFERED"] = "1"  # a crash must not swallow the last lines of the log
    return {**env, **extra}


def _serving_pythonpath() -> str | None:
    """The directory holding the `serving` package when it is not installed in site-packages
    (a source checkout): the child runs from its own directory, not the caller's."""
    spec = importlib.util.find_spec("serving")
    if spec is None or spec.origin is None:
        return None
    root = Path(spec.origin).resolve().parent.parent
    if root.name in ("site-packages", "dist-packages"):
        return None
    return str(root)


class ProcessRuntime:
    name = "process"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        # (deployment, model URI) -> the background download of its files (the workdir)
        self._prefetched: dict[tuple[str, str], Future[Path]] = {}

    def prefetch(
        self, name: str, model_uri: str, tracking_uri: str | None, registry_uri: str | None
    ) -> None:
        """Start downloading `model_uri`'s files for deployment `name` in the background, so
        the download overlaps the stages before `deploy` (evidence, gate, signing). Nothing is
        loaded or run: only files land in the deployment's directory. A no-op when that version
        already runs there or a download of it is under way. The pipeline calls `discard` when
        no deploy took the copy (a denied version leaves no files behind)."""
        names.validate(name)
        key = (name, model_uri)
        if key in self._prefetched:
            return
        with contextlib.suppress(DeployError):
            record = self._read(name)
            if record and record.get("model_uri") == model_uri and _running(record):
                return  # an unchanged deploy: nothing to download
        _remove_old_prefetches(self.root / "prefetch")
        workdir = self.root / "prefetch" / f"{name}-{uuid.uuid4().hex[:8]}"
        try:
            workdir.mkdir(parents=True)
        except OSError:
            return  # deploy downloads itself and reports what is wrong with the directory
        future: Future[Path] = Future()
        self._prefetched[key] = future

        def download() -> None:
            try:
                self._download(model_uri, workdir, tracking_uri, registry_uri)
                future.set_result(workdir)
            except BaseException as exc:  # handed to whoever takes the copy
                future.set_exception(exc)

        threading.Thread(target=download, name=f"ztml-prefetch-{name}", daemon=True).start()

    def discard(self, name: str, model_uri: str) -> None:
        """Drop a prefetched copy that no deploy took (removed once its download ends)."""
        future = self._prefetched.pop((name, model_uri), None)
        if future is not None:
            future.add_done_callback(_remove_download)

    def deploy(self, spec: DeploymentSpec, verify: Verifier) -> tuple[DeploymentStatus, bool]:
        names.validate(spec.name)
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
            if old_record and old_record.get("model_name") != spec.model_name:
                raise DeploymentConflictError(
                    f"deployment {spec.name!r} serves model {old_record.get('model_name')!r}, "
                    f"not {spec.model_name!r}; choose another name with --name"
                )
            draining = self._settle_retirements(spec.name, wait=spec.port is not None)
            prefetched = self._prefetched.pop((spec.name, spec.model_uri), None)
            keep = {(old_record or {}).get("dir"), *draining}
            self._remove_stale_copies(spec.name, keep=keep)
            if spec.port is not None and old_record and old_record.get("port") == spec.port:
                self._stop(old_record)  # a fixed port cannot be shared: no overlap possible
                old_record = None
            candidate = self._start(spec, prefetched)
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
                self._retire(spec.name, old_record)
            return self._status(candidate), True

    def get(self, name: str) -> DeploymentStatus | None:
        names.check_lookup(name)
        try:
            record = self._read(name)
        except DeployError as exc:
            return _unknown(name, self.name, str(exc))
        return None if record is None else self._status(record)

    def list(self) -> list[DeploymentStatus]:
        found = sorted(p.stem for p in self.root.glob("*.json"))
        return [status for name in found if (status := self._get_listed(name)) is not None]

    def _get_listed(self, name: str) -> DeploymentStatus | None:
        try:
            return self.get(name)
        except ZtmlError as exc:  # a stray file with an odd name: shown, never fatal
            return _unknown(name, self.name, str(exc))

    def delete(self, name: str) -> None:
        names.check_lookup(name)
        with deployment_lock(self.root, name):
            self._remove_orphan_candidate(name)
            try:
                record = self._read(name)
            except DeployError:
                record = {}  # corrupt state: nothing to stop that we could know of
            self._settle_retirements(name, wait=True)
            if record is None:
                raise DeployError(f"no process deployment named {name!r}")
            if record:
                self._stop(record)
            self._path(name).unlink(missing_ok=True)
            shutil.rmtree(self._deployment_dir(name), ignore_errors=True)

    def wait_retired(self, name: str) -> None:
        """Return once every old process of `name` that an update retired has drained and
        stopped (the update itself returns as soon as the new version answers)."""
        names.check_lookup(name)
        self._settle_retirements(name, wait=True)

    def endpoint(self, name: str) -> str | None:
        status = self.get(name)
        return status.endpoint if status else None

    def _deployment_dir(self, name: str) -> Path:
        return self.root / "deployments" / name

    def _start(self, spec: DeploymentSpec, prefetched: Future[Path] | None = None) -> dict:
        port = spec.port or _free_port()
        workdir = self._deployment_dir(spec.name) / f"v{spec.model_version}-{uuid.uuid4().hex[:8]}"
        fetched = None
        if prefetched is not None:
            with contextlib.suppress(DeployError):  # then fetched inline: its error is reported
                fetched = prefetched.result()
        if fetched is not None:
            workdir.parent.mkdir(parents=True, exist_ok=True)
            try:
                fetched.rename(workdir)  # the background download, moved (same file system)
            except OSError:  # swept meanwhile, or not movable: fetch inline instead
                shutil.rmtree(fetched, ignore_errors=True)
                fetched = None
        if fetched is not None:
            model_dir = _model_root(workdir / "model")
        else:
            model_dir = self._download(
                spec.model_uri, workdir, spec.tracking_uri, spec.registry_uri
            )
        (workdir / "tmp").mkdir(exist_ok=True)
        signature_env = _signature_files(spec, workdir)
        log_path = self.root / "logs" / f"{spec.name}-v{spec.model_version}-{port}.log"
        # `--flag=value`: a model named `-foo` must not read as another flag
        command = [
            sys.executable,
            "-m",
            "serving",
            f"--model-uri={model_dir}",
            "--host=127.0.0.1",
            f"--port={port}",
            f"--model-name={spec.model_name}",
            f"--model-version={spec.model_version}",
        ]
        env = serving_environment(
            dict(os.environ),
            {
                **spec.env,
                "SERVING_MAX_BATCH_SIZE": str(spec.max_batch_size),
                "SERVING_MAX_BATCH_DELAY_MS": str(spec.max_batch_delay_ms),
                "SERVING_RESPONSE_FORMAT": spec.response_format,
                "TMPDIR": str(workdir / "tmp"),
                **signature_env,
            },
        )
        try:
            with open(log_path, "ab") as log:
                process = subprocess.Popen(
                    command,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    cwd=workdir,
                    start_new_session=True,
                )
        except OSError as exc:
            shutil.rmtree(workdir, ignore_errors=True)
            raise DeployError(f"cannot start the serving process: {exc}") from None
        _children[process.pid] = process
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
            "dir": str(workdir),
            "started_at": time.time(),
        }

    @staticmethod
    def _download(
        model_uri: str, workdir: Path, tracking_uri: str | None, registry_uri: str | None
    ) -> Path:
        """The model's files under `workdir/model` (the directory holding `MLmodel`); on
        failure nothing is left behind and the error is a DeployError."""
        from mlflow_ztml.registry import download_model  # mlflow: only to start a server

        try:
            return download_model(model_uri, workdir / "model", tracking_uri, registry_uri)
        except ZtmlError as exc:
            shutil.rmtree(workdir, ignore_errors=True)
            raise DeployError(f"cannot fetch the model files of {model_uri}: {exc}") from None
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise

    def _retiring_paths(self, name: str) -> list[Path]:
        return sorted(self.root.glob(f".{glob.escape(name)}.retiring-*"))

    def _retire(self, name: str, record: dict) -> None:
        """Stop the replaced process off the caller's path: after the switch grace (callers
        that read the old endpoint just before the switch still connect), SIGTERM, and it
        drains what it received. The `.NAME.retiring-PID` file exists until it is gone."""
        path = self.root / f".{name}.retiring-{record['pid']}"
        self._write_json(path, {**record, "retired_by": os.getpid()})

        def drain() -> None:
            try:
                if _running(record):
                    time.sleep(_SWITCH_GRACE_SECONDS)
                self._stop(record)
            finally:
                path.unlink(missing_ok=True)
                _retirements.pop(str(path), None)

        # Not a daemon: a CLI that deployed and exits still waits for the drain to end.
        thread = threading.Thread(target=drain, name=f"ztml-retire-{name}", daemon=False)
        _retirements[str(path)] = thread
        thread.start()

    def _settle_retirements(self, name: str, wait: bool) -> list[str]:
        """Old processes of `name` still draining: with `wait`, until they are gone; else the
        workdirs to keep (they still serve their last requests). A retirement whose owner
        process died is finished here (its server stopped, its copy removed)."""
        draining = []
        for path in self._retiring_paths(name):
            thread = _retirements.get(str(path))
            if thread is not None:
                if wait:
                    thread.join()
                else:
                    with contextlib.suppress(OSError, json.JSONDecodeError):
                        draining.append(json.loads(path.read_text()).get("dir"))
                continue
            try:
                record = json.loads(path.read_text())
            except FileNotFoundError:
                continue  # finished meanwhile
            except (OSError, json.JSONDecodeError):
                path.unlink(missing_ok=True)
                continue
            owner = record.get("retired_by")
            if not wait and isinstance(owner, int) and owner != os.getpid() and _alive(owner):
                draining.append(record.get("dir"))  # another live process drains it
                continue
            self._stop(record)
            path.unlink(missing_ok=True)
        return [d for d in draining if d]

    def _wait_ready(self, record: dict, timeout: float) -> None:
        import requests  # only to start a server: `ztml status` never pays for it

        url = f"http://127.0.0.1:{record['port']}/ready"
        deadline = time.monotonic() + timeout
        pause = _READY_POLL_MIN_SECONDS
        while time.monotonic() < deadline:
            if not _alive(record["pid"]):
                raise DeployError(
                    f"serving process for {record['name']} v{record['model_version']} exited "
                    f"({_exit_description(record['pid'])}) before it was ready; "
                    f"last log lines of {record['log']}:\n{_tail(record['log'])}"
                )
            with contextlib.suppress(requests.RequestException):
                if requests.get(url, timeout=2).status_code == 200:
                    return
            # A refused connection costs nothing: ask often at first (the server may be up in
            # a few hundred milliseconds), then back off to `_READY_POLL_MAX_SECONDS`.
            time.sleep(pause)
            pause = min(pause * 1.5, _READY_POLL_MAX_SECONDS)
        raise DeployError(
            f"{record['name']} v{record['model_version']} was not ready within {timeout:.0f} s; "
            f"last log lines of {record['log']}:\n{_tail(record['log'])}"
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
        """Stop the process (SIGTERM: it drains in-flight requests; SIGKILL after the grace)
        and remove its copy of the model."""
        pid = record["pid"]
        if _running(record):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + _STOP_GRACE_SECONDS
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.05)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                while _alive(pid) and time.monotonic() < deadline + 5:
                    time.sleep(0.05)
        _children.pop(pid, None)
        workdir = record.get("dir")
        if workdir and Path(workdir).resolve().is_relative_to(self.root.resolve()):
            shutil.rmtree(workdir, ignore_errors=True)

    def _path(self, name: str) -> Path:
        return self.root / f"{name}.json"

    def _read(self, name: str) -> dict | None:
        path = self._path(name)
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DeployError(
                f"corrupt state file {path}: {exc}; `ztml delete {name}` removes it"
            ) from None
        missing = [k for k in _RECORD_KEYS if k not in record] if isinstance(record, dict) else []
        if not isinstance(record, dict) or missing:
            raise DeployError(
                f"corrupt state file {path}: missing {', '.join(missing) or 'everything'}; "
                f"`ztml delete {name}` removes it"
            )
        return record

    def _write(self, name: str, record: dict) -> None:
        self._write_json(self._path(name), record)

    @staticmethod
    def _write_json(path: Path, record: dict) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2))
        tmp.replace(path)

    def _remove_stale_copies(self, name: str, keep: set[str | None]) -> None:
        """Model copies that no process uses any more (left when the caller was killed
        mid-download) go before the next one is made; called under the deployment's lock.
        `keep`: the serving copy and those of old processes still draining."""
        kept = {Path(path).resolve() for path in keep if path}
        with contextlib.suppress(FileNotFoundError):
            for path in self._deployment_dir(name).iterdir():
                if path.resolve() not in kept:
                    shutil.rmtree(path, ignore_errors=True)

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


_RECORD_KEYS = (
    "name",
    "environment",
    "model_name",
    "model_version",
    "model_uri",
    "fingerprint",
    "pid",
    "port",
    "log",
    "started_at",
)


def _signature_files(spec: DeploymentSpec, workdir: Path) -> dict[str, str]:
    """Write the model's signature and public key beside the downloaded copy (never inside it:
    the signature covers every file there) and return the SERVING_* settings that make the
    server verify that copy before loading it; nothing when the version was not signed."""
    if not spec.model_signature or not spec.model_public_key:
        return {}
    signature, public_key = workdir / "model.sig", workdir / "model-signing.pub"
    signature.write_text(spec.model_signature, encoding="utf-8")
    public_key.write_text(spec.model_public_key, encoding="utf-8")
    return {"SERVING_MODEL_SIGNATURE": str(signature), "SERVING_MODEL_PUBLIC_KEY": str(public_key)}


def _remove_download(future: Future[Path]) -> None:
    """Remove a finished download's workdir (a failed one removed its own)."""
    if future.exception() is None:
        shutil.rmtree(future.result(), ignore_errors=True)


_PREFETCH_MAX_AGE_SECONDS = 3600.0


def _remove_old_prefetches(folder: Path) -> None:
    """Downloads left by a caller killed mid-pipeline (an hour old: no pipeline waits that
    long between resolving a version and deploying it)."""
    now = time.time()
    with contextlib.suppress(FileNotFoundError):
        for path in folder.iterdir():
            with contextlib.suppress(OSError):
                if now - path.stat().st_mtime > _PREFETCH_MAX_AGE_SECONDS:
                    shutil.rmtree(path, ignore_errors=True)


def _model_root(folder: Path) -> Path:
    """The directory holding `MLmodel` in a download (the folder itself, as a rule)."""
    if (folder / "MLmodel").is_file():
        return folder
    found = sorted(folder.rglob("MLmodel"), key=lambda p: len(p.parts))
    if not found:
        raise DeployError(f"no MLmodel file in the downloaded copy {folder}")
    return found[0].parent


def _unknown(name: str, runtime: str, detail: str) -> DeploymentStatus:
    return DeploymentStatus(
        name=name,
        runtime=runtime,
        state="unknown",
        environment="",
        model_name="",
        model_version="",
        model_uri="",
        detail=detail,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _alive(pid: int) -> bool:
    """True while `pid` runs (reaping it first if it is our own exited child)."""
    child = _children.get(pid)
    if child is not None:
        return child.poll() is None
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


def _exit_description(pid: int) -> str:
    child = _children.get(pid)
    code = child.poll() if child is not None else None
    if code is None:
        return "exit code unknown"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def _running(record: dict) -> bool:
    """Alive and still our server (a recycled PID runs something else)."""
    if not _alive(record["pid"]):
        return False
    try:
        cmdline = Path(f"/proc/{record['pid']}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    port = str(record["port"]).encode()
    # `--port=N` (and `--port N` from state files written by earlier versions)
    return b"serving" in cmdline and (b"--port=" + port in cmdline or port in cmdline)


def _tail(path: str, lines: int = _TAIL_LINES, limit: int = _TAIL_CHARS) -> str:
    """The last `lines` lines of the log (at most `limit` characters, the end kept), or a
    sentence saying why there are none: never an empty string."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(size - 64 * 1024, 0))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"(the log {path} cannot be read: {exc.strerror or exc})"
    tail = "\n".join(line for line in text.splitlines()[-lines:])
    if not tail.strip():
        return f"(the process wrote nothing to {path})"
    return tail if len(tail) <= limit else "..." + tail[-limit:]
