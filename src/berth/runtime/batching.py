"""Server-side batching: requests of one process gathered into one `predict` call.

`predict` gets each declared argument as a list and must return a list of the same length; item i
answers request i. Unlike Cortex's barrier across request threads, batches form across every
in-flight request of the process, so the batch size does not depend on `threads_per_process`, and
`async def predict` batches too.

The policy: a batch starts as soon as a slot is free and the load seen so far is gathered, and
`batch_interval` bounds how long the batcher holds a request for that, never a floor.

* A *slot* is one batch running. The process has `concurrency` slots: `threads_per_process` (a
  sync predict runs on that many threads, inline on the event loop with one; an async one gets
  that many batches in flight, since a batched async predict usually awaits one accelerator).
* The *target* is the size of the last round: the last batch plus the requests that queued while
  it ran (capped at `max_batch_size`; 1 at first). Closed-loop clients answered by a batch send
  again within a network round trip, so the target is the load the model is under.
* With a slot free and at least *target* requests queued, the batch starts at the next turn of the
  event loop with every request submitted in that turn, up to `max_batch_size`. With one client
  the target is 1: a lone request on an idle model is dispatched at once, with no timer.
* With a slot free and fewer queued than the target, the slot waits for the target, but never
  past `batch_interval` after the first queued request arrived. This is what keeps batches whole
  under load: without it, a few early arrivals start a small batch, the rest form the next, and
  the groups never merge again (measured: half the throughput at 32 clients). After a drop in
  load, the first batch waits at most `batch_interval` once, and the target follows the load.
* With every slot busy, requests queue; the requests that arrive while a batch runs form the next
  one, which starts when a slot frees (at once if `batch_interval` has passed since the first of
  them arrived, else once the target is gathered). A request queued behind a busy single-thread
  model therefore waits for the running batch to end even past `batch_interval`: nothing can
  start it sooner. The interval bounds the batcher's own holding, not the model's running time.
* A failing batch (an exception, or a result that is not a list of one item per request) fails
  only its own requests, with `BatchError`.

`observe(size, waited)` gets each batch's size and how long its first request waited to start.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from berth.runtime.errors import BatchError

BatchCall = Callable[[dict[str, list[Any]]], Awaitable[Any]]
Observer = Callable[[int, float], None]  # (batch size, seconds its first request waited)


@dataclass
class _Pending:
    values: dict[str, Any]
    future: asyncio.Future[Any]
    arrived: float = field(default_factory=time.perf_counter)


class Batcher:
    def __init__(self, call: BatchCall, args: frozenset[str], max_batch_size: int, interval: float,
                 observe: Observer = lambda size, waited: None, concurrency: int = 1) -> None:
        if max_batch_size < 1 or concurrency < 1:
            raise ValueError("max_batch_size and concurrency must be at least 1")
        self.call = call
        self.args = args
        self.max_batch_size = max_batch_size
        self.interval = interval  # an upper bound the policy always meets: see the module docstring
        self.observe = observe
        self.concurrency = concurrency
        self._pending: deque[_Pending] = deque()
        self._busy = 0  # slots taken: batches running, or about to take their requests
        self._starting = False  # a slot will take its batch at the next loop turn
        self._target = 1  # requests in the last round: how many to gather before starting
        self._filled: asyncio.Future[None] | None = None  # set once the queue reaches _target
        self._tasks: set[asyncio.Task[None]] = set()  # strong references: the loop keeps weak ones

    @property
    def running(self) -> int:
        """Slots taken now (batches running or about to start)."""
        return self._busy

    @property
    def queued(self) -> int:
        """Requests waiting for a batch."""
        return len(self._pending)

    async def submit(self, values: dict[str, Any]) -> Any:
        """This request's item of its batch's result; raises BatchError when the batch failed."""
        loop = asyncio.get_running_loop()
        pending = _Pending(values, loop.create_future())
        self._pending.append(pending)
        if self._filled is not None and not self._filled.done() and len(self._pending) >= self._target:
            self._filled.set_result(None)
        self._start_slot(loop)
        return await pending.future

    def _start_slot(self, loop: asyncio.AbstractEventLoop) -> None:
        # One starting slot at a time: it takes everything submitted before its first step, so a
        # burst read in one loop turn becomes one batch rather than one batch per free slot.
        if self._starting or self._busy >= self.concurrency or not self._pending:
            return
        self._busy += 1
        self._starting = True
        task = loop.create_task(self._slot())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _slot(self) -> None:
        """Run batches while requests queue; give the slot back once none is left."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self._fill(loop)
                batch = self._take()
                self._starting = False
                if not batch:
                    break
                self._start_slot(loop)  # more than a batch queued and a slot free: use it too
                await self._run(batch)
                # The round just served: this batch, whose clients will likely send again, and
                # the requests that queued meanwhile.
                self._target = min(self.max_batch_size, len(batch) + len(self._pending))
                # Let the requests just answered send their responses before the next batch, which
                # with an inline predictor holds the event loop for its whole duration.
                await asyncio.sleep(0)
        finally:
            self._busy -= 1
            self._start_slot(loop)  # requests that came while the slot was giving up

    async def _fill(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait for the queue to reach the last round's size, until batch_interval after its first."""
        if not self._pending or len(self._pending) >= self._target:
            return
        delay = self.interval - (time.perf_counter() - self._pending[0].arrived)
        if delay <= 0:
            return
        if self._filled is None or self._filled.done():
            self._filled = loop.create_future()
        with contextlib.suppress(TimeoutError):  # shielded: other gathering slots share the future
            await asyncio.wait_for(asyncio.shield(self._filled), delay)

    def _take(self) -> list[_Pending]:
        batch: list[_Pending] = []
        while self._pending and len(batch) < self.max_batch_size:
            pending = self._pending.popleft()
            if not pending.future.done():  # its request was cancelled (client gone): skip it
                batch.append(pending)
        return batch

    async def _run(self, batch: list[_Pending]) -> None:
        self.observe(len(batch), time.perf_counter() - batch[0].arrived)
        kwargs = {name: [p.values.get(name) for p in batch] for name in self.args}
        try:
            results = await self.call(kwargs)
        except Exception as exc:
            _fail(batch, BatchError(f"predict raised {type(exc).__name__} for a batch of {len(batch)}: {exc}"), exc)
            return
        except BaseException as exc:  # cancelled (shutdown): its requests must not hang on
            _fail(batch, BatchError(f"the batch of {len(batch)} was interrupted ({type(exc).__name__})"), exc)
            raise
        if not isinstance(results, list | tuple) or len(results) != len(batch):
            found = f"{len(results)} items" if isinstance(results, list | tuple) else type(results).__name__
            _fail(batch, BatchError(f"predict must return a list of {len(batch)} items, one per request "
                                    f"of the batch; it returned {found}"), None)
            return
        for pending, result in zip(batch, results, strict=True):
            if not pending.future.done():
                pending.future.set_result(result)


def _fail(batch: list[_Pending], error: BatchError, cause: BaseException | None) -> None:
    error.__cause__ = cause
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(error)
