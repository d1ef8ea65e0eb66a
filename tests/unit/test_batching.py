"""The batching policy, driven deterministically: a fake predict whose every call waits on a
future the test resolves, and loop turns instead of sleeps, so nothing here depends on timing."""

import asyncio
from typing import Any

import pytest

from berth.runtime.batching import Batcher
from berth.runtime.errors import BatchError

pytestmark = pytest.mark.anyio

LONG = 3600.0  # a batch_interval no test may ever wait out


class Model:
    """Batched predict: payload * 10 for each item; fails on `fail_on`; short by one if `wrong_length`."""

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


class GatedModel(Model):
    """A Model whose calls each run until the test calls `finish(i)`: a batch in flight on demand."""

    def __init__(self) -> None:
        super().__init__()
        self.gates: list[asyncio.Future[None]] = []

    async def __call__(self, batch: dict[str, list[Any]]) -> Any:
        gate = asyncio.get_running_loop().create_future()
        self.gates.append(gate)
        self.calls.append(batch["payload"])
        await gate
        return [p * 10 for p in batch["payload"]]

    async def finish(self, index: int, error: BaseException | None = None) -> None:
        if error is None:
            self.gates[index].set_result(None)
        else:
            self.gates[index].set_exception(error)
        await turns()


def batcher(model: Model, size: int, interval: float = LONG, observed: list[tuple[int, float]] | None = None,
            concurrency: int = 1) -> Batcher:
    return Batcher(model, frozenset({"payload"}), size, interval,
                   (lambda n, waited: observed.append((n, waited))) if observed is not None else lambda n, w: None,
                   concurrency=concurrency)


async def turns(count: int = 5) -> None:
    """Let the event loop go round: enough for a submitted request to reach predict when it may."""
    for _ in range(count):
        await asyncio.sleep(0)


def submit(b: Batcher, *payloads: int) -> list[asyncio.Task[Any]]:
    return [asyncio.create_task(b.submit({"payload": p})) for p in payloads]


async def test_a_lone_request_on_an_idle_model_is_dispatched_at_once() -> None:
    model, observed = GatedModel(), list[tuple[int, float]]()
    b = batcher(model, 8, LONG, observed)
    [task] = submit(b, 1)
    await turns(2)  # one turn to submit, one for the batch to start: no timer involved
    assert model.calls == [[1]] and observed[0][0] == 1
    await model.finish(0)
    assert task.result() == 10 and b.running == 0


async def test_requests_submitted_in_one_loop_turn_form_one_batch() -> None:
    model = Model()
    b = batcher(model, 8)
    assert await asyncio.gather(*submit(b, 1, 2, 3)) == [10, 20, 30]
    assert model.calls == [[1, 2, 3]] and b.running == 0


async def test_requests_arriving_during_a_running_batch_form_the_next_one() -> None:
    model = GatedModel()
    b = batcher(model, 8, interval=0.0)  # their interval is over by the end: nothing to gather
    first = submit(b, 1)
    await turns()
    later = submit(b, 2)
    await turns()
    later += submit(b, 3, 4)
    await turns(20)  # however long the batch runs, one slot means they wait for it
    assert model.calls == [[1]] and b.queued == 3
    await model.finish(0)  # the running batch ends: the queued ones start at once, together
    assert model.calls == [[1], [2, 3, 4]] and first[0].result() == 10
    await model.finish(1)
    assert [t.result() for t in later] == [20, 30, 40] and b.running == 0 and b.queued == 0


@pytest.mark.parametrize(("size", "queued", "batches"), [
    (1, 3, [[1], [2], [3], [4]]),
    (2, 5, [[1], [2, 3], [4, 5], [6]]),
    (4, 4, [[1], [2, 3, 4, 5]]),
    (32, 6, [[1], [2, 3, 4, 5, 6, 7]]),
])
async def test_max_batch_size_bounds_the_batches_formed_from_the_queue(
        size: int, queued: int, batches: list[list[int]]) -> None:
    model = GatedModel()
    b = batcher(model, size, interval=0.0)
    tasks = submit(b, 1)
    await turns()
    tasks += submit(b, *range(2, queued + 2))
    await turns()
    for index in range(len(batches)):
        assert model.calls == batches[: index + 1]
        await model.finish(index)
    assert [t.result() for t in tasks] == [p * 10 for p in range(1, queued + 2)]


async def test_one_client_never_waits_for_the_interval() -> None:
    model = GatedModel()
    b = batcher(model, 8)
    for round_ in range(3):  # each round of one leaves a target of one: no gathering, ever
        [task] = submit(b, round_)
        await turns(2)
        assert model.calls[-1] == [round_]
        await model.finish(round_)
        assert task.result() == round_ * 10


async def test_after_a_round_the_next_batch_gathers_as_many_requests() -> None:
    # Under load, the requests answered by a batch come back while the next waits: a free slot
    # waits for the round to gather (here 1 + 3 queued) rather than start a lone early arrival.
    model = GatedModel()
    b = batcher(model, 8)
    submit(b, 1)
    await turns()
    submit(b, 2, 3, 4)
    await turns()
    await model.finish(0)
    assert model.calls == [[1]] and b.queued == 3  # 3 of the round's 4: waiting for the fourth
    submit(b, 5)
    await turns()
    assert model.calls == [[1], [2, 3, 4, 5]]


async def test_the_interval_bounds_the_gathering() -> None:
    model = GatedModel()
    b = batcher(model, 8, interval=0.01)
    submit(b, 1)
    await turns()
    queued = submit(b, 2, 3, 4)
    await turns()
    await model.finish(0)  # the target is 4, and the fourth never comes: the interval ends the wait
    while len(model.gates) < 2:
        await asyncio.sleep(0.005)
    assert model.calls == [[1], [2, 3, 4]]
    await model.finish(1)
    assert [t.result() for t in queued] == [20, 30, 40]


async def test_a_burst_larger_than_a_batch_splits_in_arrival_order() -> None:
    model = Model()
    b = batcher(model, 4, interval=0.0)  # the last 2 would wait for a round of 4 to gather
    results = await asyncio.gather(*(b.submit({"payload": i}) for i in range(10)))
    assert results == [i * 10 for i in range(10)]
    assert model.calls == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


async def test_behind_the_only_slot_a_request_waits_for_the_batch_not_the_interval() -> None:
    # The interval bounds what the batcher adds, not the model's own time: with one slot busy,
    # an elapsed interval cannot start the next batch any sooner.
    model = GatedModel()
    b = batcher(model, 8, interval=0.0)
    submit(b, 1)
    await turns()
    [waiting] = submit(b, 2)
    await turns(20)
    assert model.calls == [[1]] and not waiting.done()
    await model.finish(0)
    assert model.calls == [[1], [2]]
    await model.finish(1)
    assert waiting.result() == 20


async def test_with_a_free_slot_a_request_starts_at_once_even_while_a_batch_runs() -> None:
    model = GatedModel()
    b = batcher(model, 8, interval=0.0, concurrency=2)
    submit(b, 1)
    await turns()
    [second] = submit(b, 2)
    await turns()
    assert model.calls == [[1], [2]] and b.running == 2  # the model had capacity: no wait at all
    [third] = submit(b, 3)
    await turns()
    assert model.calls == [[1], [2]] and b.queued == 1  # both slots busy: it queues
    await model.finish(1)  # whichever slot frees first takes the queue
    assert model.calls == [[1], [2], [3]] and second.result() == 20
    await model.finish(2)
    await model.finish(0)
    assert third.result() == 30 and b.running == 0


async def test_a_queue_longer_than_a_batch_fills_every_free_slot() -> None:
    model = GatedModel()
    b = batcher(model, 2, interval=0.0, concurrency=3)
    submit(b, 1)
    await turns()
    submit(b, 2)  # takes the second slot at once
    await turns()
    submit(b, 3, 4, 5, 6, 7)
    await turns()
    assert model.calls == [[1], [2], [3, 4]] and b.queued == 3
    await model.finish(0)
    assert model.calls[3:] == [[5, 6]]


async def test_observe_gets_every_batch_size() -> None:
    model, observed = GatedModel(), list[tuple[int, float]]()
    b = batcher(model, 8, 0.0, observed)
    submit(b, 1)
    await turns()
    submit(b, 2, 3)
    await turns()
    await model.finish(0)
    await model.finish(1)
    assert [size for size, _ in observed] == [1, 2]
    assert all(0 <= waited < LONG for _, waited in observed)


async def test_a_request_cancelled_while_queued_is_left_out_of_its_batch() -> None:
    model = GatedModel()
    b = batcher(model, 8, interval=0.0)
    submit(b, 1)
    await turns()
    gone, kept = submit(b, 2, 3)
    await turns()
    gone.cancel()
    await turns()
    await model.finish(0)
    assert model.calls == [[1], [3]]
    await model.finish(1)
    assert kept.result() == 30


async def test_an_exception_fails_only_its_batch() -> None:
    model = Model(fail_on=5)
    b = batcher(model, 4)
    results = await asyncio.gather(*(b.submit({"payload": i}) for i in range(8)), return_exceptions=True)
    assert results[:4] == [0, 10, 20, 30]
    assert all(isinstance(r, BatchError) and "ValueError" in str(r) and "batch of 4" in str(r) for r in results[4:])


async def test_a_failed_running_batch_does_not_hold_up_the_queued_one() -> None:
    model = GatedModel()
    b = batcher(model, 8, interval=0.0)
    [failed] = submit(b, 1)
    await turns()
    [queued] = submit(b, 2)
    await turns()
    await model.finish(0, RuntimeError("out of memory"))
    assert isinstance(failed.exception(), BatchError) and "out of memory" in str(failed.exception())
    await model.finish(1)
    assert queued.result() == 20 and b.running == 0


async def test_a_wrong_length_fails_the_batch_with_a_clear_error() -> None:
    b = batcher(Model(wrong_length=True), 3)
    results = await asyncio.gather(*(b.submit({"payload": i}) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, BatchError) for r in results)
    assert "must return a list of 3 items" in str(results[0]) and "returned 2 items" in str(results[0])


async def test_a_cancelled_batch_fails_its_requests_instead_of_leaving_them_hanging() -> None:
    model = GatedModel()
    b = batcher(model, 8)
    [task] = submit(b, 1)
    await turns()
    await model.finish(0, asyncio.CancelledError())
    assert isinstance(task.exception(), BatchError) and "interrupted" in str(task.exception())
    assert b.running == 0


@pytest.mark.parametrize(("size", "concurrency"), [(0, 1), (1, 0)])
def test_sizes_below_one_are_refused(size: int, concurrency: int) -> None:
    with pytest.raises(ValueError):
        Batcher(Model(), frozenset({"payload"}), size, LONG, concurrency=concurrency)
