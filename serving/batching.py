"""Dynamic batching: merge concurrent requests into one model call, give each its own rows back.

A single worker task owns the queue. It takes the oldest request, adds queued requests that can
be concatenated with it (same columns / tensor shape) until `max_batch_size` rows, and - only while
more requests are known to be on their way (`announce()`d but not yet submitted) - waits up to
`max_delay_s` for them. A lone caller therefore never pays the delay; under load batches form both
from that wait and from requests that queue up while the previous batch runs.

The merged input runs on the inference thread; the output is cut back by row offsets. If the
merged call fails, or its output cannot be split per row, each request is re-run alone, so one
bad request never fails its neighbours and errors reach exactly the caller that caused them.
A request whose caller has gone (timeout, disconnect) is dropped before it is run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from serving.data import ModelInput, concat, output_rows, slice_rows

log = logging.getLogger("serving.batching")


@dataclass(slots=True)
class _Item:
    inp: ModelInput
    future: asyncio.Future
    key: tuple = field(default=())


class Batcher:
    """Queue + worker. `run_batch(inputs) -> list[output | Exception]` runs on the model thread."""

    def __init__(
        self,
        execute: Callable[[Callable[[], Any]], Any],
        predict: Callable[[ModelInput], Any],
        *,
        max_batch_size: int,
        max_delay_s: float,
        on_batch: Callable[[int], None] = lambda rows: None,
    ) -> None:
        self._execute = execute  # awaitable runner on the inference thread
        self._predict = predict
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self._on_batch = on_batch
        self._queue: deque[_Item] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.pending = 0  # requests announced but not yet submitted

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for item in self._queue:
            if not item.future.done():
                item.future.set_exception(RuntimeError("server is shutting down"))
        self._queue.clear()

    def announce(self) -> None:
        """A request has arrived and will probably submit soon (makes the worker wait for it)."""
        self.pending += 1

    def withdraw(self) -> None:
        """An announced request will not submit (it failed validation, timed out...)."""
        self.pending -= 1

    async def submit(self, inp: ModelInput) -> Any:
        """Queue `inp`; return the model output for exactly its rows (or raise its error)."""
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Item(inp, future, inp.batch_key()))
        self._wakeup.set()
        return await future

    # ---------------------------------------------------------------------- worker
    def _take(self, batch: list[_Item], rows: int) -> int:
        """Move compatible queued items into `batch` while they fit; return the row count."""
        key = batch[0].key if batch else None
        kept: deque[_Item] = deque()
        while self._queue:
            item = self._queue.popleft()
            if item.future.done():  # caller gone
                continue
            if key is None:
                batch.append(item)
                key, rows = item.key, item.inp.rows
                continue
            if item.key == key and rows + item.inp.rows <= self.max_batch_size:
                batch.append(item)
                rows += item.inp.rows
            else:
                kept.append(item)
                if rows >= self.max_batch_size:
                    break
        kept.extend(self._queue)
        self._queue = kept
        return rows

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            await asyncio.sleep(0)  # let requests already parsed in this loop turn enqueue
            batch: list[_Item] = []
            rows = self._take(batch, 0)
            if not batch:
                continue
            if self.max_delay_s > 0:
                deadline = loop.time() + self.max_delay_s
                while rows < self.max_batch_size and self.pending > 0:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    self._wakeup.clear()
                    try:
                        await asyncio.wait_for(self._wakeup.wait(), remaining)
                    except TimeoutError:
                        break
                    rows = self._take(batch, rows)
            try:
                results = await self._execute(lambda b=batch: self._run(b))
            except Exception as exc:  # executor failure: fail the whole batch
                results = [exc] * len(batch)
            for item, result in zip(batch, results, strict=True):
                if item.future.done():
                    continue
                if isinstance(result, BaseException):
                    item.future.set_exception(result)
                else:
                    item.future.set_result(result)

    def _run(self, batch: list[_Item]) -> list[Any]:
        """On the model thread: one merged call, cut per request; per-request retry on failure."""
        if len(batch) == 1:
            return [self._call(batch[0].inp)]
        merged = concat([item.inp for item in batch])
        try:
            self._on_batch(merged.rows)
            output = self._predict(merged)
        except Exception as exc:
            log.info(
                "batch of %d requests failed (%s); re-running them one by one",
                len(batch),
                type(exc).__name__,
            )
            return [self._call(item.inp) for item in batch]
        if output_rows(output) != merged.rows:
            log.debug("output cannot be split per row; re-running requests one by one")
            return [self._call(item.inp) for item in batch]
        out, start = [], 0
        for item in batch:
            out.append(slice_rows(output, start, start + item.inp.rows))
            start += item.inp.rows
        return out

    def _call(self, inp: ModelInput) -> Any:
        try:
            self._on_batch(inp.rows)
            return self._predict(inp)
        except Exception as exc:
            return exc
