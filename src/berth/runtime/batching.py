"""Server-side batching: requests of one process gathered into one `predict` call.

A batch closes when it holds `max_batch_size` requests or `batch_interval` after its first one
arrived, whichever comes first. `predict` gets each declared argument as a list and must return
a list of the same length; item i answers request i. Unlike Cortex's barrier across request
threads, batches form across every in-flight request of the process, so the batch size does not
depend on `threads_per_process`, and `async def predict` batches too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

BatchCall = Callable[[dict[str, list[Any]]], Awaitable[Any]]
Observer = Callable[[int, float], None]  # (batch size, seconds its first request waited)


class BatchError(Exception):
    """The batch's predict failed as a whole; every request in it gets this error."""


@dataclass
class _Pending:
    values: dict[str, Any]
    future: asyncio.Future[Any]
    arrived: float = field(default_factory=time.perf_counter)


class Batcher:
    def __init__(self, call: BatchCall, args: frozenset[str], max_batch_size: int, interval: float,
                 observe: Observer = lambda size, waited: None) -> None:
        self.call = call
        self.args = args
        self.max_batch_size = max_batch_size
        self.interval = interval
        self.observe = observe
        self._pending: list[_Pending] = []
        self._timer: asyncio.TimerHandle | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def submit(self, values: dict[str, Any]) -> Any:
        """This request's item of its batch's result; raises BatchError when the batch failed."""
        loop = asyncio.get_running_loop()
        pending = _Pending(values, loop.create_future())
        self._pending.append(pending)
        if len(self._pending) >= self.max_batch_size:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.interval, self._flush)
        return await pending.future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending[: self.max_batch_size], self._pending[self.max_batch_size:]
        if self._pending:  # the rest starts a new batch, timed from its own first request
            delay = max(0.0, self.interval - (time.perf_counter() - self._pending[0].arrived))
            self._timer = asyncio.get_running_loop().call_later(delay, self._flush)
        if batch:
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[_Pending]) -> None:
        self.observe(len(batch), time.perf_counter() - batch[0].arrived)
        kwargs = {name: [p.values.get(name) for p in batch] for name in self.args}
        try:
            results = await self.call(kwargs)
        except Exception as exc:
            _fail(batch, BatchError(f"predict raised {type(exc).__name__} for a batch of {len(batch)}: {exc}"), exc)
            return
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
