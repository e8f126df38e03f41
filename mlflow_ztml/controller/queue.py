"""A keyed work queue in the manner of client-go's workqueue, for one process.

Contract:
- a key is in at most one of: ready, waiting (backoff), processing. So one worker per key.
- `add` of a key that is already ready or waiting coalesces: ten events are one reconcile.
- `add` of a key being processed marks it dirty: it runs once more after `done`, because what
  the running reconcile read may already be stale.
- `done(key, failed=True)` schedules a retry after an exponential backoff
  (`base * 2**(failures-1)`, capped, with jitter); success forgets the failure count.
- `add(key, immediate=False)` (the periodic poll) leaves a pending backoff alone, so a broken
  deployment is retried at the backoff's pace, not at the poll's; `immediate=True` (a webhook:
  something changed, which may be the fix) cuts the wait short.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class KeyState:
    """What the queue knows about one key, for `/status`."""

    state: str  # "ready" | "waiting" | "processing"
    failures: int
    retry_in_seconds: float | None = None


class WorkQueue(Generic[K]):
    def __init__(
        self,
        base_delay: float = 2.0,
        max_delay: float = 300.0,
        jitter: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.jitter = jitter
        self._clock = clock
        self._cond = threading.Condition()
        self._ready: deque[K] = deque()
        self._ready_set: set[K] = set()
        self._waiting: dict[K, float] = {}
        self._processing: set[K] = set()
        self._dirty: dict[K, bool] = {}  # key -> re-run immediately (else respect backoff)
        self._failures: dict[K, int] = {}
        self._shutdown = False

    def add(self, key: K, *, immediate: bool = True) -> bool:
        """Ask for `key` to be reconciled; False when it coalesced with pending work."""
        with self._cond:
            if self._shutdown:
                return False
            if key in self._processing:
                fresh = key not in self._dirty
                self._dirty[key] = self._dirty.get(key, False) or immediate
                return fresh
            if key in self._ready_set:
                return False
            if key in self._waiting:
                if not immediate:
                    return False
                del self._waiting[key]
            self._push(key)
            return True

    def get(self, timeout: float | None = None) -> K | None:
        """The next ready key (now marked processing), or None on timeout or shutdown."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while not self._shutdown:
                self._promote_due()
                if self._ready:
                    key = self._ready.popleft()
                    self._ready_set.discard(key)
                    self._processing.add(key)
                    return key
                wait = self._next_due_in()
                if deadline is not None:
                    left = deadline - self._clock()
                    if left <= 0:
                        return None
                    wait = left if wait is None else min(wait, left)
                self._cond.wait(wait)
            return None

    def done(self, key: K, *, failed: bool = False) -> float | None:
        """Finish `key`; returns the retry delay when a retry was scheduled."""
        with self._cond:
            self._processing.discard(key)
            dirty = key in self._dirty
            immediate = self._dirty.pop(key, False)
            if not failed:
                self._failures.pop(key, None)
                if dirty:
                    self._push(key)
                return None
            failures = self._failures.get(key, 0) + 1
            self._failures[key] = failures
            if immediate:
                self._push(key)
                return 0.0
            delay = self.backoff(failures)
            self._waiting[key] = self._clock() + delay
            self._cond.notify()
            return delay

    def backoff(self, failures: int) -> float:
        delay = min(self.max_delay, self.base_delay * 2 ** max(0, failures - 1))
        if self.jitter:
            delay *= 1 + random.uniform(-self.jitter, self.jitter)  # noqa: S311 - not crypto
        return min(delay, self.max_delay)

    def forget(self, key: K) -> None:
        with self._cond:
            self._failures.pop(key, None)

    def depth(self) -> int:
        """Keys waiting for a worker (ready now or after a backoff); not those in progress."""
        with self._cond:
            return len(self._ready) + len(self._waiting)

    def in_progress(self) -> int:
        with self._cond:
            return len(self._processing)

    def states(self) -> dict[K, KeyState]:
        with self._cond:
            now = self._clock()
            result: dict[K, KeyState] = {}
            for key in self._ready:
                result[key] = KeyState("ready", self._failures.get(key, 0))
            for key, due in self._waiting.items():
                result[key] = KeyState(
                    "waiting", self._failures.get(key, 0), round(max(0.0, due - now), 3)
                )
            for key in self._processing:
                result[key] = KeyState("processing", self._failures.get(key, 0))
            return result

    def shutdown(self) -> None:
        with self._cond:
            self._shutdown = True
            self._cond.notify_all()

    @property
    def is_shutdown(self) -> bool:
        return self._shutdown

    def _push(self, key: K) -> None:
        self._ready.append(key)
        self._ready_set.add(key)
        self._cond.notify()

    def _promote_due(self) -> None:
        if not self._waiting:
            return
        now = self._clock()
        for key in [k for k, due in self._waiting.items() if due <= now]:
            del self._waiting[key]
            self._push(key)

    def _next_due_in(self) -> float | None:
        if not self._waiting:
            return None
        return max(0.0, min(self._waiting.values()) - self._clock())
