"""`docker` runtime: the built image as a local container, locked down like the cluster's pods.

Every container runs with a read-only root filesystem, a tmpfs on /tmp, uid/gid 10001, all
capabilities dropped, `no-new-privileges`, a pids limit and the CPU/memory limits of the spec,
published on 127.0.0.1 only. The model is baked into the image: the container needs neither
MLflow nor the network.

State lives in the engine, not in files: labels on each container name the deployment, model,
version, environment and spec fingerprint, so `get`/`list` rebuild the truth from `docker ps`.
The container that serves a deployment NAME is the one *named* `ztml-NAME`; names, unlike
labels, can change, which is how an update switches:

1. start the candidate `ztml-NAME-<id>` on its own loopback port, wait for /ready, `verify` it;
2. rename the serving container to `ztml-NAME-retiring-<id>` and the candidate to `ztml-NAME`;
3. after a short grace (callers that read the old endpoint just before still connect), stop
   the old container (SIGTERM: the server drains in-flight requests) and remove it.

A client that re-resolves the endpoint (`get`) between steps 2 and 3 is answered with the
retiring container, which still serves, so no request fails during an update. A failed verify
removes the candidate and leaves the old container serving.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from mlflow_ztml.config import BuildConfig
from mlflow_ztml.errors import BuildError, DeployError
from mlflow_ztml.redact import safe
from mlflow_ztml.runtimes.base import DeploymentSpec, DeploymentStatus, Verifier
from mlflow_ztml.runtimes.locking import deployment_lock

LABEL = "io.mlifecycle.ztml"
MANAGED = f"{LABEL}.managed"
CONTAINER_PORT = 8080
SERVING_UID = "10001:10001"
_STOP_GRACE_SECONDS = 15
_SWITCH_GRACE_SECONDS = 1.0
_PIDS_LIMIT = 512
_RESTART_POLICY = {"Name": "on-failure", "MaximumRetryCount": 3}
_TMPFS_SIZE = "512m"


def parse_cpu(value: str) -> float:
    """Kubernetes CPU quantity -> cores ("500m" -> 0.5, "2" -> 2.0)."""
    text = str(value).strip()
    try:
        return float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError:
        raise DeployError(f"invalid CPU quantity {value!r} (use e.g. 500m or 2)") from None


_MEMORY_UNITS = {
    "": 1,
    "k": 10**3,
    "m": 10**6,
    "g": 10**9,
    "t": 10**12,
    "ki": 2**10,
    "mi": 2**20,
    "gi": 2**30,
    "ti": 2**40,
}


def parse_memory(value: str) -> int:
    """Kubernetes memory quantity -> bytes ("512Mi", "1Gi", "1G", "1048576")."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", str(value))
    unit = match[2].lower() if match else ""
    if not match or unit not in _MEMORY_UNITS:
        raise DeployError(f"invalid memory quantity {value!r} (use e.g. 512Mi or 2Gi)")
    return int(float(match[1]) * _MEMORY_UNITS[unit])


def container_name(deployment: str) -> str:
    return f"ztml-{deployment}"


class DockerRuntime:
    """Runs deployments as containers of the local Docker engine (`DOCKER_HOST`)."""

    name = "docker"

    def __init__(
        self,
        root: Path,
        client: Any | None = None,
        build: BuildConfig | None = None,
        stop_grace_seconds: int = _STOP_GRACE_SECONDS,
        image_check: Callable[[DeploymentSpec], object] | None = None,
    ) -> None:
        """`image_check` runs before any container starts (signature and decision
        attestation, supply_chain/verification.py) and raises to refuse the image;
        `get_runtime` always sets it, so only a runtime built by hand runs unchecked."""
        self.image_check = image_check
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._client = client
        self.build = build or BuildConfig()
        self.stop_grace_seconds = stop_grace_seconds

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow_ztml.build import docker_client

            try:
                self._client = docker_client(timeout=120)
            except BuildError as exc:
                raise DeployError(str(exc)) from None
        return self._client

    # -- the Runtime protocol ------------------------------------------------------------

    def deploy(self, spec: DeploymentSpec, verify: Verifier) -> tuple[DeploymentStatus, bool]:
        if not spec.image:
            raise DeployError(
                f"the docker runtime needs an image for {spec.name}; the build stage sets it"
            )
        with deployment_lock(self.root, spec.name):
            current = self._serving(spec.name)
            if current is not None:
                status = self._status(current)
                if status.state == "running" and status.fingerprint == spec.fingerprint():
                    return status, False
            image = spec.image
            if self.image_check is not None:  # refuses before anything is pulled or started
                from mlflow_ztml.supply_chain.verification import pinned

                image = pinned(spec.image, self.image_check(spec))  # run what was verified
            self._ensure_image(image)
            if (
                current is not None
                and spec.port is not None
                and self._host_port(current) == spec.port
            ):
                self._remove(current)  # a fixed port cannot be shared: no overlap possible
                current = None
            candidate = self._start(spec, image)
            try:
                self._wait_ready(candidate, spec.ready_timeout_seconds)
                verify(self._status(candidate))
                self._arm_restarts(candidate)
            except BaseException:
                self._remove(candidate)
                raise
            self._switch(spec.name, candidate, current)
            candidate.reload()
            return self._status(candidate), True

    def get(self, name: str) -> DeploymentStatus | None:
        container = self._serving(name)
        return None if container is None else self._status(container)

    def list(self) -> list[DeploymentStatus]:
        names = sorted(
            {
                c.labels.get(f"{LABEL}.deployment", "")
                for c in self._containers()
                if c.labels.get(f"{LABEL}.deployment")
            }
        )
        return [status for name in names if (status := self.get(name)) is not None]

    def delete(self, name: str) -> None:
        with deployment_lock(self.root, name):
            containers = self._containers(name)
            if not containers:
                raise DeployError(f"no docker deployment named {name!r}")
            for container in containers:
                self._remove(container)

    def endpoint(self, name: str) -> str | None:
        status = self.get(name)
        return status.endpoint if status else None

    # -- containers --------------------------------------------------------------------------

    def _containers(self, name: str | None = None) -> list[Any]:
        filters = [f"{MANAGED}=true"]
        if name is not None:
            filters.append(f"{LABEL}.deployment={name}")
        try:
            return list(self.client.containers.list(all=True, filters={"label": filters}))
        except DeployError:
            raise
        except Exception as exc:
            raise DeployError(f"cannot list containers: {safe(exc, 300)}") from None

    def _serving(self, name: str) -> Any | None:
        """The container serving `name`: the one named `ztml-NAME`, else (mid-switch) the
        retiring one that still runs. Candidates never count."""
        containers = self._containers(name)
        by_name = {c.name: c for c in containers}
        if container_name(name) in by_name:
            return by_name[container_name(name)]
        retiring = [
            c
            for c in containers
            if c.name.startswith(f"{container_name(name)}-retiring-") and c.status == "running"
        ]
        return retiring[0] if retiring else None

    def _labels(self, spec: DeploymentSpec) -> dict[str, str]:
        return {
            MANAGED: "true",
            f"{LABEL}.deployment": spec.name,
            f"{LABEL}.environment": spec.environment,
            f"{LABEL}.model-name": spec.model_name,
            f"{LABEL}.model-version": spec.model_version,
            f"{LABEL}.model-uri": spec.model_uri,
            f"{LABEL}.fingerprint": spec.fingerprint(),
            f"{LABEL}.image": spec.image or "",
            f"{LABEL}.started-at": f"{time.time():.3f}",
        }

    def _start(self, spec: DeploymentSpec, image: str) -> Any:
        from docker.types import DeviceRequest

        environment = {
            **spec.env,
            "SERVING_MAX_BATCH_SIZE": str(spec.max_batch_size),
            "SERVING_MAX_BATCH_DELAY_MS": str(spec.max_batch_delay_ms),
            "SERVING_RESPONSE_FORMAT": spec.response_format,
            "SERVING_MODEL_NAME": spec.model_name,
            "SERVING_MODEL_VERSION": spec.model_version,
        }
        options: dict[str, Any] = {
            "name": f"{container_name(spec.name)}-{uuid.uuid4().hex[:8]}",
            "detach": True,
            "labels": self._labels(spec),
            "environment": environment,
            "user": SERVING_UID,
            "read_only": True,
            "tmpfs": {"/tmp": f"rw,nosuid,nodev,size={_TMPFS_SIZE},mode=1777"},  # noqa: S108
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges:true"],
            "pids_limit": _PIDS_LIMIT,
            "nano_cpus": int(parse_cpu(spec.cpu) * 1e9),
            "mem_limit": parse_memory(spec.memory),
            "memswap_limit": parse_memory(spec.memory),  # no swap beyond the limit
            "ports": {f"{CONTAINER_PORT}/tcp": ("127.0.0.1", spec.port)},
            # No restarts until it has served once: a start failure then stops at its first
            # exit, with that exit code and that run's logs (see _arm_restarts).
            "restart_policy": {"Name": "no"},
            "stop_signal": "SIGTERM",
        }
        grpc_port = spec.env.get("SERVING_GRPC_PORT", "").strip()
        if grpc_port.isdigit() and int(grpc_port):  # gRPC asked for: loopback, any free host port
            options["ports"][f"{int(grpc_port)}/tcp"] = ("127.0.0.1", None)
        if spec.gpu:
            options["device_requests"] = [DeviceRequest(count=spec.gpu, capabilities=[["gpu"]])]
        try:
            container = self.client.containers.run(image, **options)
        except Exception as exc:
            raise DeployError(
                f"cannot start a container for {spec.name} v{spec.model_version} from "
                f"{image}: {safe(exc, 500)}"
            ) from None
        container.reload()
        return container

    def _ensure_image(self, image: str) -> None:
        from mlflow_ztml.build import pull

        try:
            pull(self.client, image, self.build)
        except BuildError as exc:
            raise DeployError(str(exc)) from None

    @staticmethod
    def _arm_restarts(container: Any) -> None:
        """A verified container restarts on a crash from now on (`on-failure`, bounded)."""
        try:
            container.update(restart_policy=_RESTART_POLICY)
        except Exception as exc:
            raise DeployError(
                f"cannot set the restart policy of {container.name}: {safe(exc, 300)}"
            ) from None

    def _wait_ready(self, container: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url: str | None = None
        while time.monotonic() < deadline:
            container.reload()
            if container.status in ("exited", "dead", "restarting"):
                raise DeployError(
                    f"container {container.name} exited before it was ready "
                    f"({exit_reason(container)}); {_logs(container)}"
                )
            port = self._host_port(container)
            if port:
                url = f"http://127.0.0.1:{port}/ready"
                with contextlib.suppress(requests.RequestException):
                    if requests.get(url, timeout=2).status_code == 200:
                        return
            time.sleep(0.1)
        raise DeployError(
            f"container {container.name} was not ready within {timeout:.0f} s ({url or 'no port'})"
            f"; {_logs(container)}"
        )

    def _switch(self, name: str, candidate: Any, current: Any | None) -> None:
        if current is not None:
            with contextlib.suppress(Exception):
                current.rename(f"{container_name(name)}-retiring-{uuid.uuid4().hex[:8]}")
        try:
            candidate.rename(container_name(name))
        except Exception as exc:
            raise DeployError(f"cannot switch {name} to {candidate.name}: {exc}") from None
        if current is not None:
            current.reload()
            if current.status == "running":
                time.sleep(_SWITCH_GRACE_SECONDS)
            self._remove(current)
        # Leftovers of an interrupted update (retiring or candidate containers) go too.
        for container in self._containers(name):
            if container.id != candidate.id:
                self._remove(container)

    def _remove(self, container: Any) -> None:
        with contextlib.suppress(Exception):
            container.stop(timeout=self.stop_grace_seconds)
        with contextlib.suppress(Exception):
            container.remove(force=True)

    @staticmethod
    def _host_port(container: Any) -> int | None:
        ports = (container.attrs.get("NetworkSettings") or {}).get("Ports") or {}
        for binding in ports.get(f"{CONTAINER_PORT}/tcp") or []:
            if binding.get("HostPort"):
                return int(binding["HostPort"])
        return None

    def _status(self, container: Any) -> DeploymentStatus:
        labels = container.labels
        port = self._host_port(container)
        state_info = container.attrs.get("State") or {}
        health = (state_info.get("Health") or {}).get("Status")
        running = container.status == "running"
        detail = None
        if not running:
            detail = f"container {container.name} is {container.status} ({exit_reason(container)})"
        elif health == "unhealthy":
            detail = f"container {container.name} is unhealthy"
        started = labels.get(f"{LABEL}.started-at")
        return DeploymentStatus(
            name=labels.get(f"{LABEL}.deployment", container.name),
            runtime=self.name,
            state="running" if running and health != "unhealthy" else "failed",
            environment=labels.get(f"{LABEL}.environment", ""),
            model_name=labels.get(f"{LABEL}.model-name", ""),
            model_version=labels.get(f"{LABEL}.model-version", ""),
            model_uri=labels.get(f"{LABEL}.model-uri", ""),
            endpoint=f"http://127.0.0.1:{port}" if port else None,
            fingerprint=labels.get(f"{LABEL}.fingerprint"),
            started_at=float(started) if started else None,
            detail=detail,
        )


def exit_reason(container: Any) -> str:
    """Why a container stopped, from the engine's state: the exit code, an out-of-memory kill
    (which leaves no log line: the kernel kills the process), the engine's own error, restarts."""
    state = container.attrs.get("State") or {}
    reason = f"exit code {state.get('ExitCode')}"
    if state.get("OOMKilled"):
        limit = (container.attrs.get("HostConfig") or {}).get("Memory") or 0
        shown = f" of {limit / 2**20:.0f}Mi" if limit else ""
        reason += (
            f", killed for exceeding its memory limit{shown}: give the deployment more memory "
            "(inference.resources.memory, or -C memory=...)"
        )
    if state.get("Error"):
        reason += f", engine error: {safe(state['Error'], 300)}"
    restarts = container.attrs.get("RestartCount") or 0
    if restarts:
        reason += f", after {restarts} restart(s)"
    return reason


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_LOG_LINE_LIMIT = 600


def _logs(container: Any, lines: int = 20) -> str:
    """The container's own last output lines (stdout and stderr, read from the engine before
    the container is removed), headed `last log lines`; never an empty tail: no output or
    unreadable logs are said as such."""
    try:
        raw = container.logs(stdout=True, stderr=True, tail=lines * 5, timestamps=False)
    except Exception as exc:
        return f"its logs could not be read ({safe(exc, 200)})"
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)
    rendered = [line for line in map(log_line, text.splitlines()) if line]
    if not rendered:
        return "it wrote nothing to stdout or stderr"
    return "last log lines (stdout and stderr):\n" + "\n".join(rendered[-lines:])


def log_line(line: str) -> str:
    """One output line for a message: control characters dropped, credentials redacted,
    bounded; the serving image's JSON log lines as `level logger: message` plus the last line
    of a traceback (the exception itself), instead of a screen of escaped JSON."""
    line = _CONTROL.sub("", line).strip()
    if line.startswith("{"):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict) and isinstance(record.get("message"), str):
            line = f"{record.get('level', '')} {record.get('logger', '')}: {record['message']}"
            trace = str(record.get("exception") or "").strip().splitlines()
            last = trace[-1].strip() if trace else ""
            if last and last.split(": ", 1)[-1] not in line:
                line += f" [{last}]"
    return safe(line.strip(), _LOG_LINE_LIMIT) if line.strip() else ""
