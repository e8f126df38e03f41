"""The keyed work queue: coalescing, one worker per key, dirty re-runs, backoff."""

from __future__ import annotations

import threading
import time
from collections import Counter

from mlflow_ztml.controller.queue import WorkQueue


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_repeated_adds_coalesce() -> None:
    queue: WorkQueue[str] = WorkQueue(jitter=0)
    assert queue.add("a") is True
    assert queue.add("a") is False
    assert queue.add("b") is True
    assert queue.depth() == 2
    assert [queue.get(0), queue.get(0), queue.get(0)] == ["a", "b", None]


def test_add_during_processing_runs_once_more_after_done() -> None:
    queue: WorkQueue[str] = WorkQueue(jitter=0)
    queue.add("a")
    assert queue.get(0) == "a"
    queue.add("a")
    queue.add("a")
    assert queue.get(0) is None  # never handed to a second worker while processing
    queue.done("a")
    assert queue.get(0) == "a"
    queue.done("a")
    assert queue.get(0) is None


def test_failures_back_off_exponentially_and_success_resets() -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue(base_delay=2, max_delay=10, jitter=0, clock=clock)
    queue.add("a")
    delays = []
    for _ in range(4):
        assert queue.get(0) == "a"
        delays.append(queue.done("a", failed=True))
        assert queue.get(0) is None
        clock.now += delays[-1]
    assert delays == [2, 4, 8, 10]
    assert queue.get(0) == "a"
    queue.done("a")
    queue.add("a")
    assert queue.get(0) == "a"
    assert queue.done("a", failed=True) == 2


def test_poll_respects_backoff_but_a_webhook_cuts_it_short() -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue(base_delay=30, jitter=0, clock=clock)
    queue.add("a")
    queue.get(0)
    queue.done("a", failed=True)
    assert queue.add("a", immediate=False) is False
    assert queue.get(0) is None
    assert queue.states()["a"].state == "waiting"
    assert queue.add("a", immediate=True) is True
    assert queue.get(0) == "a"


def test_failure_with_a_webhook_during_processing_retries_at_once() -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue(base_delay=30, jitter=0, clock=clock)
    queue.add("a")
    queue.get(0)
    queue.add("a", immediate=False)
    assert queue.done("a", failed=True) == 30  # poll during work: keeps the backoff
    clock.now += 30
    queue.get(0)
    queue.add("a", immediate=True)
    assert queue.done("a", failed=True) == 0  # something changed meanwhile: look again now


def test_jitter_stays_within_bounds() -> None:
    queue: WorkQueue[str] = WorkQueue(base_delay=10, max_delay=100, jitter=0.1)
    for _ in range(50):
        assert 9 <= queue.backoff(1) <= 11
        assert queue.backoff(20) <= 100


def test_one_worker_per_key_under_contention() -> None:
    """Eight workers, a storm of adds on four keys: never two workers on one key."""
    queue: WorkQueue[str] = WorkQueue(jitter=0)
    active: Counter[str] = Counter()
    processed: Counter[str] = Counter()
    overlaps: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        while (key := queue.get(timeout=1)) is not None:
            with lock:
                active[key] += 1
                if active[key] > 1:
                    overlaps.append(key)
            time.sleep(0.002)
            with lock:
                active[key] -= 1
                processed[key] += 1
            queue.done(key)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for index in range(2000):
        queue.add(f"k{index % 4}")
    deadline = time.monotonic() + 10
    while (queue.depth() or queue.in_progress()) and time.monotonic() < deadline:
        time.sleep(0.01)
    queue.shutdown()
    for thread in threads:
        thread.join(5)
    assert overlaps == []
    assert set(processed) == {"k0", "k1", "k2", "k3"}
    assert sum(processed.values()) < 2000  # adds coalesced


def test_shutdown_wakes_waiting_workers() -> None:
    queue: WorkQueue[str] = WorkQueue()
    result: list[str | None] = []
    thread = threading.Thread(target=lambda: result.append(queue.get()))
    thread.start()
    time.sleep(0.05)
    queue.shutdown()
    thread.join(2)
    assert result == [None]
    assert queue.add("a") is False
