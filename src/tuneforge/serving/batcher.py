"""Dynamic micro-batching: concurrent requests for one model are run as one batch, off the event loop.

A request waits at most ``max_wait_ms`` (counted from its arrival) for others to join it, but only
when there is company: another request waiting, or a previous batch that served more than one. A
lone client is never made to wait for a partner who is not coming (measured: the fixed wait cost a
single client a quarter of its throughput), while under load batches still gather. A batch holds up
to ``max_batch_size`` inputs and only requests for one model (adapters switch per batch).
Requests are taken oldest first, so a busy model cannot starve another. The model runs in one
worker thread: the event loop keeps accepting and parsing requests while a batch computes, and
whatever arrived meanwhile forms the next batch at once (its oldest member has already waited), so
batches grow with the load and cost no waiting when the server is busy.

No library does this for an arbitrary Python callable inside an ASGI app (Triton, TorchServe and
Ray Serve batch in their own server processes), hence these hundred lines.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Hashable, Sequence


@dataclass
class _Pending:
    key: Hashable
    inputs: Sequence
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)


@dataclass
class BatchStats:
    """What one batch was: passed to ``on_batch`` (the app records it as metrics)."""

    key: Hashable
    inputs: int
    requests: int
    seconds: float


class MicroBatcher:
    """``await batcher.submit(key, inputs)`` -> ``run_batch(key, all_inputs)`` sliced back per request.

    ``run_batch(key, inputs) -> list`` must return one result per input, in order; it runs in the
    worker thread. ``on_queue(key, n_inputs_waiting)`` and ``on_batch(BatchStats)`` report to metrics.
    """

    def __init__(self, run_batch: Callable[[Hashable, list], list], max_batch_size: int = 32,
                 max_wait_ms: float = 5.0, on_batch: Callable[[BatchStats], None] | None = None,
                 on_queue: Callable[[Hashable, int], None] | None = None):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.on_batch = on_batch
        self.on_queue = on_queue
        self._pending: deque[_Pending] = deque()
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._busy = False
        self._last_requests = 0  # requests the previous batch served: company is likely when > 1

    # --- lifecycle (the app's lifespan)
    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tuneforge-infer")
        self._worker = asyncio.get_running_loop().create_task(self._work(), name="tuneforge-batcher")

    async def stop(self) -> None:
        """Finish what is queued, then stop (the server has stopped taking requests by now)."""
        while self._pending or self._busy:
            await asyncio.sleep(0.01)
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    @property
    def running(self) -> bool:
        return self._worker is not None and not self._worker.done()

    def waiting(self, key: Hashable) -> int:
        return sum(len(p.inputs) for p in self._pending if p.key == key)

    # --- requests
    async def submit(self, key: Hashable, inputs: Sequence) -> list:
        if not inputs:
            return []
        if not self.running:
            raise RuntimeError("the batcher is not running")
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(key, inputs, future))
        self._report_queue(key)
        self._wakeup.set()
        return await future

    def _report_queue(self, key: Hashable) -> None:
        if self.on_queue is not None:
            self.on_queue(key, self.waiting(key))

    def _take_batch(self) -> list[_Pending]:
        """The oldest request and the requests for its model behind it, up to max_batch_size inputs
        (a single request larger than that is a batch of its own)."""
        key = self._pending[0].key
        batch, size, kept = [], 0, deque()
        while self._pending:
            p = self._pending.popleft()
            if p.future.done():  # the client went away while it waited
                continue
            if p.key == key and (not batch or size + len(p.inputs) <= self.max_batch_size):
                batch.append(p)
                size += len(p.inputs)
            else:
                kept.append(p)
        self._pending = kept
        self._report_queue(key)
        return batch

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            first = self._pending[0]
            company = len(self._pending) > 1 or self._last_requests > 1
            deadline = first.arrived + (self.max_wait if company else 0.0)
            while self.waiting(first.key) < self.max_batch_size and (left := deadline - time.monotonic()) > 0:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), left)
                except asyncio.TimeoutError:
                    break
            batch = self._take_batch()
            if not batch:
                continue
            inputs = [x for p in batch for x in p.inputs]
            self._last_requests = len(batch)
            started = time.perf_counter()
            self._busy = True
            try:
                results = await loop.run_in_executor(self._executor, self.run_batch, first.key, inputs)
                if len(results) != len(inputs):
                    raise RuntimeError(f"run_batch returned {len(results)} results for {len(inputs)} inputs")
            except Exception as exc:
                if len(batch) == 1:
                    if not batch[0].future.done():
                        batch[0].future.set_exception(exc)
                    continue
                # one request's bad input must not fail the others that shared its batch: each runs alone
                for p in batch:
                    try:
                        alone = await loop.run_in_executor(self._executor, self.run_batch, first.key, p.inputs)
                    except Exception as own:  # noqa: BLE001 - handed to the request that caused it
                        if not p.future.done():
                            p.future.set_exception(own)
                        continue
                    if not p.future.done():
                        p.future.set_result(alone)
                continue
            finally:
                self._busy = False
            if self.on_batch is not None:
                self.on_batch(BatchStats(first.key, len(inputs), len(batch), time.perf_counter() - started))
            offset = 0
            for p in batch:
                part = results[offset: offset + len(p.inputs)]
                offset += len(p.inputs)
                if not p.future.done():
                    p.future.set_result(part)


__all__ = ["BatchStats", "MicroBatcher"]
