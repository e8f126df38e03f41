"""Lease-based leader election: the logic against an in-memory Lease API with the API server's
optimistic concurrency, and (when ZTML_TEST_KUBECONFIG names a cluster) against a real one."""

from __future__ import annotations

import copy
import os
import threading
import time
import uuid
from pathlib import Path

import pytest

pytest.importorskip("kubernetes", reason="leader election needs the kubernetes package")

from kubernetes.client.exceptions import ApiException

from mlflow_ztml.config import LeaderElectionConfig
from mlflow_ztml.controller.leader import LeaderElector, coordination_api

CONFIG = LeaderElectionConfig(
    enabled=True,
    lease_name="ztml-test",
    namespace="ns",
    lease_duration_seconds=15,
    renew_deadline_seconds=10,
    retry_period_seconds=2,
)


class FakeLeaseApi:
    """read/create/replace with resourceVersion checks, like the API server."""

    def __init__(self) -> None:
        self.lease = None
        self.version = 0
        self.lock = threading.Lock()
        self.fail = False

    def read_namespaced_lease(self, name, namespace):
        with self.lock:
            if self.fail:
                raise ApiException(status=500, reason="Internal Server Error")
            if self.lease is None:
                raise ApiException(status=404, reason="Not Found")
            return copy.deepcopy(self.lease)

    def create_namespaced_lease(self, namespace, body):
        with self.lock:
            if self.lease is not None:
                raise ApiException(status=409, reason="AlreadyExists")
            self.version += 1
            body.metadata.resource_version = str(self.version)
            self.lease = copy.deepcopy(body)
            return body

    def replace_namespaced_lease(self, name, namespace, body):
        with self.lock:
            if self.fail:
                raise ApiException(status=500, reason="Internal Server Error")
            if body.metadata.resource_version != self.lease.metadata.resource_version:
                raise ApiException(status=409, reason="Conflict")
            self.version += 1
            body = copy.deepcopy(body)
            body.metadata.resource_version = str(self.version)
            self.lease = body
            return body


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _pair(api: FakeLeaseApi, clock: Clock) -> tuple[LeaderElector, LeaderElector]:
    a = LeaderElector(api, CONFIG.model_copy(update={"identity": "a"}), clock=clock)
    b = LeaderElector(api, CONFIG.model_copy(update={"identity": "b"}), clock=clock)
    return a, b


def test_first_comer_leads_and_the_other_waits() -> None:
    api, clock = FakeLeaseApi(), Clock()
    a, b = _pair(api, clock)
    assert a.step() is True
    assert b.step() is False
    assert api.lease.spec.holder_identity == "a"
    clock.now += 2
    assert a.step() is True  # renewals keep it
    clock.now += 14
    assert b.step() is False  # b saw a renew 14 s ago: not expired


def test_standby_takes_over_only_after_the_lease_expires_on_its_own_clock() -> None:
    api, clock = FakeLeaseApi(), Clock()
    a, b = _pair(api, clock)
    a.step()
    b.step()  # b starts observing
    clock.now += 14.9
    assert b.step() is False
    clock.now += 0.2
    assert b.step() is True
    assert api.lease.spec.holder_identity == "b"
    assert api.lease.spec.lease_transitions == 1


def test_leader_that_cannot_renew_steps_down_before_expiry() -> None:
    api, clock = FakeLeaseApi(), Clock()
    changes: list[bool] = []
    a = LeaderElector(api, CONFIG.model_copy(update={"identity": "a"}), changes.append, clock)
    assert a.step() is True
    api.fail = True
    clock.now += 9
    assert a.step() is True  # within the renew deadline
    clock.now += 1
    assert a.step() is False
    assert changes == [True, False]
    assert clock.now < CONFIG.lease_duration_seconds  # stopped before anyone may start


def test_racing_for_an_expired_lease_has_one_winner() -> None:
    api, clock = FakeLeaseApi(), Clock()
    old = LeaderElector(api, CONFIG.model_copy(update={"identity": "old"}), clock=clock)
    old.step()
    contenders = [
        LeaderElector(api, CONFIG.model_copy(update={"identity": f"r{i}"}), clock=clock)
        for i in range(5)
    ]
    for elector in contenders:
        elector.step()
    clock.now += 16
    # Everyone read the same expired record; writes carry its resourceVersion.
    leases = [api.read_namespaced_lease("x", "ns") for _ in contenders]
    results = []
    for elector, lease in zip(contenders, leases, strict=True):
        elector.api = _Stale(api, lease)
        results.append(elector.try_acquire_or_renew())
    assert results.count(True) == 1


class _Stale:
    """Serves one stale read, then passes through (two replicas reading before either writes)."""

    def __init__(self, api: FakeLeaseApi, lease) -> None:
        self.api, self.lease = api, lease

    def read_namespaced_lease(self, name, namespace):
        return copy.deepcopy(self.lease)

    def replace_namespaced_lease(self, name, namespace, body):
        return self.api.replace_namespaced_lease(name, namespace, body)


def test_release_hands_over_at_once() -> None:
    api, clock = FakeLeaseApi(), Clock()
    a, b = _pair(api, clock)
    a.step()
    b.step()
    a.release()
    assert not a.is_leader
    assert b.step() is True  # no waiting for expiry


def test_renew_deadline_must_be_below_lease_duration() -> None:
    with pytest.raises(Exception, match="renew_deadline_seconds"):
        LeaderElector(FakeLeaseApi(), CONFIG.model_copy(update={"renew_deadline_seconds": 15}))


@pytest.mark.skipif(
    not os.environ.get("ZTML_TEST_KUBECONFIG"),
    reason="needs a Kubernetes cluster: set ZTML_TEST_KUBECONFIG to a kubeconfig "
    "(no cluster can run on this machine)",
)
def test_lease_election_on_a_real_cluster() -> None:
    kubeconfig = Path(os.environ["ZTML_TEST_KUBECONFIG"])
    api = coordination_api(kubeconfig)
    namespace = os.environ.get("ZTML_TEST_NAMESPACE", "default")
    config = CONFIG.model_copy(
        update={
            "namespace": namespace,
            "lease_name": f"ztml-test-{uuid.uuid4().hex[:6]}",
            "lease_duration_seconds": 4,
            "renew_deadline_seconds": 3,
            "retry_period_seconds": 1,
        }
    )
    a = LeaderElector(api, config.model_copy(update={"identity": "a"}))
    b = LeaderElector(api, config.model_copy(update={"identity": "b"}))
    try:
        assert a.step() is True
        assert b.step() is False
        a.release()
        assert b.step() is True
        lease = api.read_namespaced_lease(config.lease_name, namespace)
        assert lease.spec.holder_identity == "b"
        assert a.step() is False  # b holds a live lease; a starts observing it
        time.sleep(config.lease_duration_seconds + 0.5)  # b stops renewing (crashed)
        assert a.step() is True
        assert api.read_namespaced_lease(config.lease_name, namespace).spec.lease_transitions >= 2
    finally:
        api.delete_namespaced_lease(config.lease_name, namespace)
