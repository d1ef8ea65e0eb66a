import asyncio
import time
from typing import Any

import pytest

from berth.runtime.batching import Batcher, BatchError

pytestmark = pytest.mark.anyio


class Model:
    def __init__(self, fail_on: object = None, wrong_length: bool = False) -> None:
        self.calls: list[list[Any]] = []
        self.fail_on = fail_on
        self.wrong_length = wrong_length

    async def __call__(self, batch: dict[str, list[Any]]) -> Any:
        payloads = batch["payload"]
        self.calls.append(payloads)
        if self.fail_on in payloads:
            raise ValueError("bad item")
        return payloads[:-1] if self.wrong_length else [p * 10 for p in payloads]


def batcher(model: Model, size: int, interval: float, observed: list[tuple[int, float]] | None = None) -> Batcher:
    return Batcher(model, frozenset({"payload"}), size, interval,
                   (lambda n, waited: observed.append((n, waited))) if observed is not None else lambda n, w: None)


async def test_a_full_batch_closes_at_once_and_answers_in_order() -> None:
    model = Model()
    started = time.perf_counter()
    b = batcher(model, 4, 10.0)
    results = await asyncio.gather(*(b.submit({"payload": i}) for i in range(1, 5)))
    assert results == [10, 20, 30, 40]
    assert model.calls == [[1, 2, 3, 4]]
    assert time.perf_counter() - started < 1  # did not wait for the 10 s interval


async def test_the_interval_closes_a_partial_batch() -> None:
    model, observed = Model(), []
    b = batcher(model, 8, 0.05, observed)
    started = time.perf_counter()
    assert await asyncio.gather(*(b.submit({"payload": i}) for i in range(3))) == [0, 10, 20]
    assert 0.04 <= time.perf_counter() - started < 1
    assert model.calls == [[0, 1, 2]] and observed[0][0] == 3 and observed[0][1] >= 0.04


async def test_more_requests_than_a_batch_split_into_several() -> None:
    model = Model()
    b = batcher(model, 4, 0.02)
    results = await asyncio.gather(*(b.submit({"payload": i}) for i in range(10)))
    assert results == [i * 10 for i in range(10)]
    assert [len(call) for call in model.calls] == [4, 4, 2]


async def test_an_exception_fails_only_its_batch() -> None:
    model = Model(fail_on=5)
    b = batcher(model, 4, 0.02)
    results = await asyncio.gather(*(b.submit({"payload": i}) for i in range(8)), return_exceptions=True)
    assert results[:4] == [0, 10, 20, 30]
    assert all(isinstance(r, BatchError) and "ValueError" in str(r) and "batch of 4" in str(r) for r in results[4:])


async def test_a_wrong_length_fails_the_batch_with_a_clear_error() -> None:
    b = batcher(Model(wrong_length=True), 3, 0.02)
    results = await asyncio.gather(*(b.submit({"payload": i}) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, BatchError) for r in results)
    assert "must return a list of 3 items" in str(results[0]) and "returned 2 items" in str(results[0])
