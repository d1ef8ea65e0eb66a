"""Streamed request bodies (`body_stream`) and streams out of a batched predict, through a real uvicorn."""

from __future__ import annotations

import asyncio
import concurrent.futures
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from berth.runtime.app import ReplicaApp
from tests.integration.streaming_server import make_app, serving

UPLOAD = '''
class PythonPredictor:
    def __init__(self, config):
        self.largest = 0

    async def predict(self, body_stream, query_params):
        if query_params.get("echo"):
            return self.echo(body_stream)
        total = chunks = 0
        async for chunk in body_stream:
            self.largest = max(self.largest, len(chunk))
            total, chunks = total + len(chunk), chunks + 1
        return {"bytes": total, "chunks": chunks}

    async def echo(self, body_stream):
        async for chunk in body_stream:
            yield chunk.upper()
'''

BATCHED = '''
import time

class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        time.sleep(0.3)  # the requests that come meanwhile form the next batch
        return [self.count(item) for item in payload]

    def count(self, item):
        for i in range(int(item["n"])):
            yield f"{item['name']}{i} "
'''


def body(size: int, piece: int = 65536) -> Iterator[bytes]:
    for start in range(0, size, piece):
        yield b"a" * min(piece, size - start)


def test_a_body_stream_reads_the_body_as_it_comes(tmp_path: Path) -> None:
    app = make_app(tmp_path, UPLOAD)
    with serving(app) as url:
        response = httpx.post(url, content=body(20 * 2**20), timeout=30)
        assert response.json()["bytes"] == 20 * 2**20 and response.json()["chunks"] > 1
        # Read chunk by chunk: never the whole body at once.
        assert app.instance.largest <= 2**20
        echoed = httpx.post(f"{url}/?echo=1", content=b"stream me", timeout=30)
        assert echoed.content == b"STREAM ME"
        assert httpx.get(f"{url}/stats").json()["in_flight"] == 0


def test_the_inference_protocol_refuses_a_body_stream_predict_clearly(tmp_path: Path) -> None:
    app = make_app(tmp_path, UPLOAD + "    model_metadata = {'inputs': [], 'outputs': []}\n")
    with serving(app) as url:
        request = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
        response = httpx.post(f"{url}/v2/models/stream/infer", json=request, timeout=30)
        assert response.status_code == 400, response.text
        assert "body_stream" in response.json()["error"] and "own endpoint" in response.json()["error"]
        malformed = httpx.post(f"{url}/v2/models/stream/infer", content=b"{not json" + b"x" * 2**20, timeout=30)
        assert malformed.status_code == 400 and "body_stream" in malformed.json()["error"]  # refused unread
        assert httpx.get(f"{url}/stats").json()["in_flight"] == 0


def test_each_request_of_a_batch_streams_its_own_generator(tmp_path: Path) -> None:
    app = make_app(tmp_path, BATCHED, server_side_batching={"max_batch_size": 4, "batch_interval": 0.2})
    with serving(app) as url, concurrent.futures.ThreadPoolExecutor(4) as pool:
        names = ["a", "b", "c", "d"]
        futures = [pool.submit(httpx.post, url, json={"name": name, "n": 3}, timeout=30) for name in names]
        texts = [future.result().text for future in futures]
        assert texts == [f"{name}0 {name}1 {name}2 " for name in names]
        batches = httpx.get(f"{url}/stats").json()["batch_size"]["count"]
        assert batches < 4  # they were batched


def load_failure(tmp_path: Path, source: str, **predictor: object) -> str:
    failures: list[BaseException] = []
    (tmp_path / "predictor.py").write_text(textwrap.dedent(source))
    app = make_app(tmp_path, source, **predictor)
    app.on_fatal = failures.append
    asyncio.run(app.load())
    assert failures and not app.ready
    return app.init_failure(failures[0])


def test_a_sync_predict_cannot_take_a_body_stream(tmp_path: Path) -> None:
    message = load_failure(tmp_path, "class PythonPredictor:\n    def predict(self, body_stream):\n        pass\n")
    assert "async def predict(self, body_stream)" in message


def test_body_stream_and_payload_are_exclusive(tmp_path: Path) -> None:
    source = "class PythonPredictor:\n    async def predict(self, body_stream, payload):\n        pass\n"
    assert "both payload and body_stream" in load_failure(tmp_path, source)


def test_batching_cannot_take_a_body_stream(tmp_path: Path) -> None:
    source = "class PythonPredictor:\n    async def predict(self, body_stream):\n        pass\n"
    message = load_failure(tmp_path, source, server_side_batching={"max_batch_size": 2, "batch_interval": 0.1})
    assert "server_side_batching" in message and "body_stream" in message


@pytest.mark.parametrize("decl", ["async def predict(self, body_stream):\n        yield b''",
                                  "async def predict(self, body_stream, headers):\n        return 1"])
def test_async_predicts_with_a_body_stream_load(tmp_path: Path, decl: str) -> None:
    app = make_app(tmp_path, f"class PythonPredictor:\n    {decl}\n")
    asyncio.run(app.load())
    assert isinstance(app, ReplicaApp) and app.ready


GENERATOR_PREDICT = '''
import asyncio, time

class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, query_params):
        for i in range(3):
            time.sleep(0.05)
            yield f"s{i} "
'''

ASYNC_GENERATOR_PREDICT = '''
import asyncio

class PythonPredictor:
    def __init__(self, config):
        pass

    async def predict(self, query_params):
        for i in range(3):
            await asyncio.sleep(0.05)
            yield {"i": i}
'''


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(("source", "text"), [(GENERATOR_PREDICT, "s0 s1 s2 "),
                                              (ASYNC_GENERATOR_PREDICT, '{"i":0}\n{"i":1}\n{"i":2}\n')])
def test_predict_itself_may_be_a_generator(tmp_path: Path, source: str, text: str, threads: int) -> None:
    app = make_app(tmp_path, source, threads_per_process=threads)
    with serving(app) as url:
        assert httpx.post(url, timeout=30).text == text
        stats = httpx.get(f"{url}/stats").json()
        # One observation per stream: the call plus the time spent producing its items.
        assert stats["predict"]["count"] == 1 and stats["predict"]["sum"] >= 0.14
        assert stats["requests"]["2XX"] == 1 and stats["in_flight"] == 0


THREAD_BOUND = '''
import threading

class PythonPredictor:
    def __init__(self, config):
        self.local = threading.local()
        self.inits = 0
        self.failures = int(config.get("failures", 0))  # init_thread fails this often on a pool thread

    def init_thread(self):
        self.inits += 1
        if self.failures and threading.current_thread().name.startswith("predict"):
            self.failures -= 1
            raise RuntimeError("the device is busy")
        self.local.session = f"session-{threading.get_ident()}"  # as a library bound to its thread

    PREDICT

    def tokens(self):
        for i in range(3):
            yield f"{self.local.session == f'session-{threading.get_ident()}'} "
'''
SYNC_PREDICT = """def predict(self, query_params):
        if query_params.get("stream"):
            return self.tokens()
        return {"session": self.local.session, "inits": self.inits}"""


@pytest.mark.parametrize(("predict", "threads", "inits"), [(SYNC_PREDICT, 1, 2),
                                                          ("async " + SYNC_PREDICT, 2, 3)])
def test_a_sync_stream_finds_init_thread_done_on_the_thread_that_makes_its_items(
        tmp_path: Path, predict: str, threads: int, inits: int) -> None:
    app = make_app(tmp_path, THREAD_BOUND.replace("PREDICT", predict), threads_per_process=threads)
    with serving(app) as url:
        assert httpx.post(url, timeout=30).json()["inits"] == 1  # the loop's thread only, until a stream
        streams = [httpx.post(f"{url}/?stream=1", timeout=30).text for _ in range(4)]
        assert streams == ["True True True "] * 4
        assert httpx.post(url, timeout=30).json()["inits"] == inits  # each pool thread once, not per stream


def test_init_thread_failing_for_a_stream_is_its_500_and_the_next_stream_tries_again(tmp_path: Path) -> None:
    app = make_app(tmp_path, THREAD_BOUND.replace("PREDICT", SYNC_PREDICT), threads_per_process=1,
                   config={"folder": str(tmp_path), "failures": 1})
    with serving(app) as url:
        failed = httpx.post(f"{url}/?stream=1", timeout=30)
        assert failed.status_code == 500 and failed.json()["request_id"]
        assert httpx.post(f"{url}/?stream=1", timeout=30).text == "True True True "
        assert httpx.get(f"{url}/stats").json()["in_flight"] == 0
