"""The controller process: webhook receiver, poll loop, bounded worker pool, optional election.

Threads (all daemons; `stop` joins them within `controller.shutdown_grace_seconds`):
- `poll`: every `poll_interval_seconds`, compare desired with actual for every managed model
  and queue the differences (`immediate=False`: a key in backoff keeps its backoff); it reads
  only the models MLflow changed since the last poll, and the whole registry at start, on
  becoming leader and every `resync_interval_seconds` (every poll when no webhook secret is set:
  nothing else would bring alias moves);
- `worker-N` (`controller.workers` of them): take a key, reconcile it, report to the queue;
- `leader` (only with `controller.leader_election.enabled`): keeps the Lease; while this
  replica is not the leader, workers and the poll idle and webhooks get 503.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from pydantic import ValidationError

from mlflow_ztml import links
from mlflow_ztml.config import LeaderElectionConfig, Settings
from mlflow_ztml.controller.app import WebhookReceiver
from mlflow_ztml.controller.desired import Key
from mlflow_ztml.controller.leader import LeaderElector, coordination_api
from mlflow_ztml.controller.metrics import Metrics
from mlflow_ztml.controller.queue import WorkQueue
from mlflow_ztml.controller.reconcile import ReconcileFailed, Reconciler
from mlflow_ztml.controller.signature import SECRET_ENV, secrets_from_env
from mlflow_ztml.errors import ConfigError, RegistryUnavailableError, ZtmlError
from mlflow_ztml.notify import Notifier
from mlflow_ztml.pipeline import Pipeline
from mlflow_ztml.redact import safe

log = logging.getLogger("mlflow_ztml.controller")


def validate(settings: Settings) -> None:
    """Fail at start-up, not at the first event, when the mapping names unknown environments."""
    config = settings.controller
    known = set(settings.environments)
    for kind, mapping in (("aliases", config.aliases), ("stages", config.stages)):
        for source, env in mapping.items():
            if env not in known:
                raise ConfigError(
                    f"controller.{kind}.{source} maps to environment {env!r}, which is not "
                    f"declared under 'environments:' (known: {', '.join(sorted(known))})"
                )
    for env in config.prune:
        if env not in known:
            raise ConfigError(f"controller.prune names unknown environment {env!r}")
    lease = config.leader_election
    if lease.enabled and lease.renew_deadline_seconds >= lease.lease_duration_seconds:
        raise ConfigError(
            "controller.leader_election.renew_deadline_seconds must be below lease_duration_seconds"
        )


def with_environment_overrides(settings: Settings) -> Settings:
    """Apply the flat leader-election variables the Helm chart sets (`ZTML_LEADER_ELECTION`,
    `_LEASE`, `_NAMESPACE`, `_LEASE_SECONDS`, `_RENEW_SECONDS`, `_RETRY_SECONDS`) over
    `controller.leader_election`; `ZTML_CONTROLLER__LEADER_ELECTION__*` work as well."""
    env = os.environ
    fields = {
        "ZTML_LEADER_ELECTION": "enabled",
        "ZTML_LEADER_ELECTION_LEASE": "lease_name",
        "ZTML_LEADER_ELECTION_NAMESPACE": "namespace",
        "ZTML_LEADER_ELECTION_LEASE_SECONDS": "lease_duration_seconds",
        "ZTML_LEADER_ELECTION_RENEW_SECONDS": "renew_deadline_seconds",
        "ZTML_LEADER_ELECTION_RETRY_SECONDS": "retry_period_seconds",
    }
    overrides = {field: env[name] for name, field in fields.items() if env.get(name)}
    if not overrides:
        return settings
    lease = settings.controller.leader_election
    try:
        updated = LeaderElectionConfig.model_validate({**lease.model_dump(), **overrides})
    except ValidationError as exc:
        raise ConfigError(f"invalid ZTML_LEADER_ELECTION* variable: {exc}") from None
    controller = settings.controller.model_copy(update={"leader_election": updated})
    return settings.model_copy(update={"controller": controller})


class Controller:
    def __init__(
        self,
        settings: Settings,
        secrets: list[str] | None = None,
        pipeline: Pipeline | None = None,
        queue: WorkQueue[Key] | None = None,
        elector: LeaderElector | None = None,
    ) -> None:
        settings = with_environment_overrides(settings)
        validate(settings)
        self.settings = settings
        self.config = settings.controller
        self.metrics = Metrics()
        self.queue: WorkQueue[Key] = queue or WorkQueue(
            base_delay=self.config.backoff_base_seconds, max_delay=self.config.backoff_max_seconds
        )
        self.metrics.track_queue(self.queue.depth, self.queue.in_progress)
        # outcomes notify in the background for as long as the controller runs
        self.pipeline = pipeline or Pipeline(settings, notifier=Notifier(settings))
        self.reconciler = Reconciler(settings, self.pipeline, self.metrics)
        self.secrets = secrets_from_env() if secrets is None else secrets
        self.receiver = WebhookReceiver(
            self.secrets,
            self.config,
            settings.environments,
            enqueue=self._enqueue_from_webhook,
            metrics=self.metrics,
            accepting=self._accepting,
        )
        self.elector = elector
        self._stop = threading.Event()
        self._poll_now = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = False
        self._last_poll: dict[str, Any] = {}
        self._last_differences: list[Key] = []
        self._last_resync: float | None = None  # monotonic time of the last full listing
        self.metrics.leader.set(0 if self.config.leader_election.enabled else 1)

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self._started:
            return
        if self.config.leader_election.enabled and self.elector is None:
            lease = self.config.leader_election
            self.elector = LeaderElector(
                coordination_api(lease.kubeconfig), lease, on_change=self._leadership_changed
            )
        if not self.secrets:
            log.warning(
                "no webhook secret (%s): every delivery is refused with 401; the controller "
                "still reconciles every %.0f s",
                SECRET_ENV,
                self.config.poll_interval_seconds,
            )
        log.info(
            "controller starting: aliases %s, stages %s, models %s, prune %s, poll %.0f s, "
            "%d workers%s",
            self.config.aliases,
            self.config.stages,
            self.config.models,
            self.config.prune or "{}",
            self.config.poll_interval_seconds,
            self.config.workers,
            f", leader election on lease {self.elector.namespace}/{self.elector.name}"
            if self.elector
            else "",
        )
        self._spawn("warmup", self._warm_up)
        self._spawn("poll", self._poll_loop)
        for index in range(self.config.workers):
            self._spawn(f"worker-{index}", self._worker_loop)
        if self.elector is not None:
            elector = self.elector
            self._spawn("leader", lambda: elector.run(self._stop))
        self._started = True

    def _warm_up(self) -> None:
        """Load the policies now rather than inside the first deploy (a second or two)."""
        try:
            _ = self.pipeline.engine
        except Exception as exc:  # the gate fails closed later and says why
            log.warning("policy engine not ready: %s", exc)

    def stop(self) -> None:
        """Stop taking work, let in-flight reconciles finish within the grace period."""
        self._stop.set()
        self._poll_now.set()
        self.queue.shutdown()
        deadline = time.monotonic() + self.config.shutdown_grace_seconds
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        busy = [t.name for t in self._threads if t.is_alive()]
        if busy:
            log.warning("stopping with %s still busy; the next start converges", busy)

    def _spawn(self, name: str, target: Any) -> None:
        thread = threading.Thread(target=target, name=f"ztml-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    # ---- leadership ------------------------------------------------------------------------

    def _leading(self) -> bool:
        return self.elector is None or self.elector.is_leader

    def _accepting(self) -> bool:
        return self._leading() and not self._stop.is_set()

    def _leadership_changed(self, leading: bool) -> None:
        self.metrics.leader.set(1 if leading else 0)
        if leading:
            self.request_resync()
            self._poll_now.set()  # a new leader looks at everything at once

    # ---- work ------------------------------------------------------------------------------

    def _enqueue_from_webhook(self, key: Key) -> bool:
        return self.queue.add(key, immediate=True)

    def request_resync(self) -> None:
        """Make the next poll a full listing (a new leader, or an operator's request)."""
        self._last_resync = None

    def _resync_due(self, now: float) -> bool:
        """A full listing: at the first poll, every `resync_interval_seconds`, and always
        without a webhook secret (alias moves and tag changes move no `last_updated_timestamp`
        in MLflow; only webhooks or a full listing bring them)."""
        return (
            not self.secrets
            or self._last_resync is None
            or now - self._last_resync >= self.config.resync_interval_seconds
        )

    def poll_once(self) -> list[Key]:
        """Queue every key whose actual state differs from the desired one; returns them."""
        started = time.monotonic()
        full = self._resync_due(started)
        try:
            keys = self.reconciler.differences(full=full)
        except ZtmlError as exc:
            self.metrics.poll_errors.inc()
            if isinstance(exc, RegistryUnavailableError):
                self.metrics.registry_up.set(0)
            log.warning(
                "poll failed, retrying in %.0f s: %s", self.config.poll_interval_seconds, exc
            )
            self._last_poll = {"at": time.time(), "ok": False, "error": safe(exc, 500)}
            return []
        for key in keys:
            result = "queued" if self.queue.add(key, immediate=False) else "coalesced"
            self.metrics.enqueued.labels("poll", result).inc()
        if full:
            self._last_resync = started
        seconds = time.monotonic() - started
        self.metrics.poll_seconds.observe(seconds)
        self.metrics.last_poll.set_to_current_time()
        self._last_poll = {
            "at": time.time(),
            "ok": True,
            "seconds": round(seconds, 3),
            "full": full,
            "differences": [str(k) for k in keys],
        }
        if keys != self._last_differences:  # say it once, not every poll while it is fixed
            log.info(
                "poll: %d key(s) differ%s",
                len(keys),
                ": " + ", ".join(map(str, keys)) if keys else "",
            )
            self._last_differences = keys
        return keys

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            if self._leading():
                try:
                    self.poll_once()
                except Exception:  # a bug must not end the loop: log it and poll again later
                    self.metrics.poll_errors.inc()
                    log.exception("poll crashed")
            self._poll_now.wait(self.config.poll_interval_seconds)
            self._poll_now.clear()

    def _worker_loop(self) -> None:
        while not self._stop.is_set():
            if not self._leading():
                self._stop.wait(0.5)
                continue
            key = self.queue.get(timeout=1.0)
            if key is None:
                continue
            try:
                self.reconciler.reconcile(key)
            except ReconcileFailed as exc:
                if isinstance(exc.__cause__, RegistryUnavailableError):
                    self.metrics.registry_up.set(0)
                delay = self.queue.done(key, failed=True)
                log.warning("%s; retrying in %.1f s", exc, delay or 0.0)
            except Exception:
                delay = self.queue.done(key, failed=True)
                log.exception("%s: reconcile crashed; retrying in %.1f s", key, delay or 0.0)
            else:
                self.queue.done(key)

    # ---- introspection ---------------------------------------------------------------------

    def health(self) -> tuple[bool, dict[str, Any]]:
        dead = [t.name for t in self._threads if not t.is_alive() and t.name != "ztml-warmup"]
        ok = not dead or self._stop.is_set()
        return ok, {"status": "ok" if ok else "unhealthy", "dead_threads": dead}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready = started and not stopping. Deliberately not "is the leader": a Deployment's
        rolling update waits for new pods to become ready, and a standby that could never be
        ready would stall it while the old leader holds the Lease. A standby that receives a
        delivery answers 503 with Retry-After, and MLflow's retry (same id) usually lands on
        the leader; what still misses it, the leader's next poll picks up."""
        leading = self._leading()
        ok = self._started and not self._stop.is_set()
        return ok, {
            "status": "ready" if ok else "not_ready",
            "leader": leading,
            "registry_up": bool(self.metrics.value("ztml_controller_registry_up")),
            "webhook_secret": bool(self.secrets),
        }

    def status(self) -> dict[str, Any]:
        return {
            "leader": self._leading(),
            "identity": self.elector.identity if self.elector else None,
            "environments": sorted(self.settings.environments),
            "last_poll": self._last_poll,
            "queue": {
                str(k): {"state": s.state, "failures": s.failures, "retry_in": s.retry_in_seconds}
                for k, s in sorted(self.queue.states().items())
            },
            "keys": self.reconciler.reports(),
            "decisions": self.reconciler.decisions(),
            # where links into MLflow point (the status page): never with credentials
            "mlflow_ui": links.ui_base(self.settings),
        }
