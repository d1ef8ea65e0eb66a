"""Which threads run `__init__`, `init_thread`, `predict` and `post_predict`, in-process."""

import asyncio
import logging
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.testclient import TestClient

from berth.runtime.app import ReplicaApp
from berth.runtime.predictor import BoundMethod, PostPredictWorker
from tests.integration.test_runtime_app import make_app, wait_ready
from tests.robustness.harness import Quiet, until

THREADS = """
import threading, time

class PythonPredictor:
    def __init__(self, config):
        self.init = [threading.get_ident()]
        self.init_thread_calls = []
        self.predict_threads = set()

    def init_thread(self):
        self.init_thread_calls.append(threading.get_ident())

    {kind}def predict(self, payload):
        self.predict_threads.add(threading.get_ident())
        {pause}
        return payload
"""


@asynccontextmanager
async def serving(app: ReplicaApp) -> AsyncIterator[httpx.AsyncClient]:
    """The app in this test's event loop, loaded as its lifespan would."""
    await app.load()
    assert app.ready
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://replica") as client:
            yield client
    finally:
        app.executor.shutdown(wait=False)
        worker = getattr(app, "post_worker", None)
        if worker is not None:
            await worker.close()


@pytest.mark.anyio
async def test_init_thread_runs_once_on_each_pool_thread_before_predict(tmp_path: Path) -> None:
    app = make_app(tmp_path, THREADS.format(kind="", pause="time.sleep(0.05)"), threads_per_process=3)
    async with serving(app) as client:
        responses = await asyncio.gather(*(client.post("/", json=i) for i in range(9)))
        assert [r.json() for r in responses] == list(range(9))
    instance = app.instance
    pool = {thread.ident for thread in threading.enumerate() if thread.name.startswith("predict")}
    calls = instance.init_thread_calls
    assert len(calls) == 3 and set(calls) == pool  # once per thread, on every thread of the pool
    assert len(instance.init) == 1 and instance.init[0] in pool  # __init__: once, on one pool thread
    assert instance.predict_threads <= set(calls) and len(instance.predict_threads) > 1


@pytest.mark.anyio
@pytest.mark.parametrize(("kind", "threads"), [("", 1), ("async ", 1), ("async ", 3)])
async def test_init_thread_runs_on_the_event_loop_when_predict_does(tmp_path: Path, kind: str, threads: int) -> None:
    app = make_app(tmp_path, THREADS.format(kind=kind, pause="pass"), threads_per_process=threads)
    async with serving(app) as client:
        assert (await client.post("/", json=1)).json() == 1
    loop_thread = threading.get_ident()
    assert app.instance.init_thread_calls == [loop_thread]
    assert app.instance.predict_threads == {loop_thread}
    if threads == 1:
        assert app.instance.init == [loop_thread]  # one thread: __init__ runs where predict runs


@pytest.mark.parametrize("threads", [1, 2])
def test_a_failing_init_thread_fails_the_start(tmp_path: Path, threads: int) -> None:
    source = """
    class PythonPredictor:
        def __init__(self, config):
            pass
        def init_thread(self):
            raise RuntimeError("no device context")
        def predict(self, payload):
            return 1
    """
    failures: list[BaseException] = []
    app = make_app(tmp_path, source, threads_per_process=threads)
    app.on_fatal = failures.append
    with TestClient(app) as client:
        wait_ready(client)
        assert client.get("/readyz").status_code == 503
        assert client.post("/", json={}).status_code == 503
    assert len(failures) == 1 and "no device context" in str(failures[0])


SLOW_POST = """
import threading

class PythonPredictor:
    def __init__(self, config):
        self.gate = threading.Event()
        self.post = []
        self.post_threads = set()

    def predict(self, payload):
        return payload

    def post_predict(self, response, payload):
        self.post_threads.add(threading.get_ident())
        if payload == "fail":
            raise ValueError("post_predict broke")
        if payload == "slow":
            self.gate.wait(5)  # a slow post_predict: as long as the test holds the gate (at most 5 s)
        self.post.append(payload)
"""


@asynccontextmanager
async def over_a_socket(app: ReplicaApp, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The app behind a real uvicorn on a unix socket, whose event loop turns between requests."""
    sock = str(tmp_path / "replica.sock")
    server = Quiet(uvicorn.Config(app, uds=sock, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        await until(lambda: server.started and app.ready, message="replica ready")
        async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=sock), base_url="http://replica") as client:
            yield client
    finally:
        server.should_exit = True
        await task


@pytest.mark.anyio
async def test_a_slow_post_predict_does_not_delay_the_next_request(tmp_path: Path) -> None:
    app = make_app(tmp_path, SLOW_POST)  # one thread: predict runs on the event loop's thread
    async with over_a_socket(app, tmp_path) as client:
        assert (await client.post("/", json="slow")).text == "slow"
        started = time.perf_counter()
        assert (await client.post("/", json="next")).text == "next"
        took = time.perf_counter() - started
        assert not app.instance.gate.is_set() and app.instance.post == []  # the first still runs
        assert took < 0.5, f"the next request waited {took:.2f}s for post_predict"
        app.instance.gate.set()
        await _until(lambda: len(app.instance.post) == 2)
    assert app.instance.post == ["slow", "next"]  # in the order the requests finished
    assert len(app.instance.post_threads) == 1 and threading.get_ident() not in app.instance.post_threads


@pytest.mark.anyio
async def test_post_predict_errors_are_logged_with_the_request_id(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    app = make_app(tmp_path, SLOW_POST, threads_per_process=2)
    with caplog.at_level(logging.ERROR, logger="berth.replica"):
        async with serving(app) as client:
            failed = await client.post("/", json="fail", headers={"x-request-id": "post-1"})
            assert failed.status_code == 200 and failed.text == "fail"
            assert (await client.post("/", json="after")).status_code == 200
            await _until(lambda: app.instance.post == ["after"])
    assert "request post-1: post_predict raised" in caplog.text and "post_predict broke" in caplog.text


def test_post_predict_calls_beyond_the_backlog_are_skipped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    gate, done = threading.Event(), []

    def post_predict(response: object) -> None:
        gate.wait(5)
        done.append(response)

    worker = PostPredictWorker(BoundMethod(post_predict, frozenset({"response"}), False), backlog=2)
    with caplog.at_level(logging.WARNING, logger="berth.replica"):
        for index in range(4):
            worker.submit({"response": index}, f"r{index}")
    gate.set()
    asyncio.run(worker.close())  # waits for the calls that were queued
    assert done == [0, 1] and worker.skipped == 2
    assert "request r2: post_predict skipped" in caplog.text and "request r3" not in caplog.text  # once a second


async def _until(condition: object, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def teardown_module() -> None:
    sys.modules.pop("berth_predictor", None)
