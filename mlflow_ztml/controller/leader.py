"""Leader election over a coordination.k8s.io/v1 Lease, the way client-go does it.

Several controller replicas may run (rolling updates, high availability); only the holder of
the Lease reconciles, the others wait. The rules:

- a replica takes the Lease when it does not exist, is held by nobody, or its holder has not
  renewed it for `lease_duration_seconds` *as observed on this replica's own clock* (the
  holder's `renewTime` is only compared for change, never against local time, so clock skew
  between nodes cannot make two leaders);
- every write carries the `resourceVersion` that was read, so of two replicas racing for an
  expired Lease exactly one wins (the other gets 409 Conflict);
- the leader renews every `retry_period_seconds` and stops leading when it could not renew for
  `renew_deadline_seconds`, which is shorter than the lease duration: it has stopped before
  anyone else may start;
- on shutdown the leader releases the Lease (empty holder) so a successor need not wait.

The API object is injected (`kubernetes.client.CoordinationV1Api` or a test double with the
same three methods), so the logic is tested without a cluster.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlflow_ztml.config import LeaderElectionConfig
from mlflow_ztml.errors import ConfigError

log = logging.getLogger("mlflow_ztml.controller.leader")
_SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def default_namespace() -> str:
    try:
        return _SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    except OSError:
        return os.environ.get("POD_NAMESPACE", "default")


def default_identity() -> str:
    base = os.environ.get("POD_NAME") or socket.gethostname()
    return f"{base}_{uuid.uuid4().hex[:8]}"


def coordination_api(kubeconfig: Path | None = None) -> Any:
    """A CoordinationV1Api: in-cluster credentials when running in a pod, else kubeconfig."""
    try:
        from kubernetes import client, config
    except ImportError:
        raise ConfigError(
            "leader election needs the kubernetes package: pip install kubernetes"
        ) from None
    try:
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            api_client = client.ApiClient(configuration)
        else:
            api_client = config.new_client_from_config(
                config_file=str(kubeconfig) if kubeconfig else None
            )
    except Exception as exc:
        raise ConfigError(
            f"cannot load Kubernetes credentials for leader election: {exc}"
        ) from None
    return client.CoordinationV1Api(api_client)


class LeaderElector:
    def __init__(
        self,
        api: Any,
        config: LeaderElectionConfig,
        on_change: Callable[[bool], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if config.renew_deadline_seconds >= config.lease_duration_seconds:
            raise ConfigError(
                "controller.leader_election.renew_deadline_seconds must be shorter than "
                "lease_duration_seconds (a leader must stop before others may start)"
            )
        self.api = api
        self.config = config
        self.name = config.lease_name
        self.namespace = config.namespace or default_namespace()
        self.identity = config.identity or default_identity()
        self.on_change = on_change or (lambda _leading: None)
        self._clock = clock
        self._leading = threading.Event()
        self._observed: tuple[Any, ...] | None = None  # (holder, renewTime) last seen
        self._observed_at = 0.0
        self._last_renew = 0.0

    @property
    def is_leader(self) -> bool:
        return self._leading.is_set()

    def try_acquire_or_renew(self) -> bool:
        """One round: True when this replica holds the Lease after it (API errors: False)."""
        from kubernetes.client import V1Lease, V1LeaseSpec, V1ObjectMeta
        from kubernetes.client.exceptions import ApiException

        now = datetime.now(UTC)
        duration = int(self.config.lease_duration_seconds)
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                log.warning("reading lease %s/%s failed: %s", self.namespace, self.name, exc.reason)
                return False
            body = V1Lease(
                metadata=V1ObjectMeta(name=self.name, namespace=self.namespace),
                spec=V1LeaseSpec(
                    holder_identity=self.identity,
                    lease_duration_seconds=duration,
                    acquire_time=now,
                    renew_time=now,
                    lease_transitions=0,
                ),
            )
            try:
                self.api.create_namespaced_lease(self.namespace, body)
            except ApiException as create_exc:
                if create_exc.status != 409:
                    log.warning("creating lease failed: %s", create_exc.reason)
                return False
            return True

        spec = lease.spec or V1LeaseSpec()
        holder = spec.holder_identity or ""
        record = (holder, spec.renew_time, spec.lease_duration_seconds)
        if record != self._observed:
            self._observed, self._observed_at = record, self._clock()
        if holder and holder != self.identity:
            held_for = spec.lease_duration_seconds or duration
            if self._clock() - self._observed_at < held_for:
                return False  # someone else holds a live lease
        if holder != self.identity:
            spec.acquire_time = now
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
        spec.holder_identity = self.identity
        spec.renew_time = now
        spec.lease_duration_seconds = duration
        lease.spec = spec
        try:
            self.api.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as exc:
            if exc.status != 409:
                log.warning("renewing lease failed: %s", exc.reason)
            return False
        return True

    def step(self) -> bool:
        """One round plus the leading/not-leading transition; returns `is_leader`."""
        try:
            held = self.try_acquire_or_renew()
        except Exception as exc:  # network errors: treat like a failed renewal
            log.warning("lease round failed: %s", exc)
            held = False
        now = self._clock()
        if held:
            self._last_renew = now
            if not self._leading.is_set():
                log.info(
                    "became leader (lease %s/%s, %s)", self.namespace, self.name, self.identity
                )
                self._leading.set()
                self.on_change(True)
        elif (
            self._leading.is_set() and now - self._last_renew >= self.config.renew_deadline_seconds
        ):
            log.warning("lost leadership: lease not renewed for %.0f s", now - self._last_renew)
            self._leading.clear()
            self.on_change(False)
        return self._leading.is_set()

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.step()
            stop.wait(self.config.retry_period_seconds)
        self.release()

    def release(self) -> None:
        """Give the Lease up on shutdown so a successor takes over at once."""
        if not self._leading.is_set():
            return
        self._leading.clear()
        self.on_change(False)
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
            if lease.spec and lease.spec.holder_identity == self.identity:
                lease.spec.holder_identity = None
                lease.spec.lease_duration_seconds = 1
                self.api.replace_namespaced_lease(self.name, self.namespace, lease)
        except Exception as exc:
            log.warning("releasing lease failed (a successor waits for it to expire): %s", exc)
