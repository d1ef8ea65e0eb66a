"""Loading the user's predictor class and calling it with the arguments it declares, on the right threads."""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from berth.errors import PredictorLoadError
from berth.runtime.contract import BODY_STREAM, streams_request_body

PREDICT_ARGS = frozenset({"payload", "query_params", "headers", "batch_id", BODY_STREAM})
POST_PREDICT_ARGS = (PREDICT_ARGS - {BODY_STREAM}) | {"response"}
INIT_ARGS = frozenset({"config", "python_client", "onnx_client", "job_spec"})
CLASS_NAME = "PythonPredictor"
POST_PREDICT_BACKLOG = 1000  # post_predict calls waiting at most, per process

log = logging.getLogger("berth.replica")


@dataclass(frozen=True)
class BoundMethod:
    """A predictor method and the injectable argument names it declares."""

    func: Callable[..., Any]
    args: frozenset[str]
    is_async: bool

    def call(self, values: Mapping[str, Any]) -> Any:
        return self.func(**{name: values[name] for name in self.args})


def load_class(path: Path, python_path: Path, class_name: str = CLASS_NAME) -> type:
    """Import `path` as a module and return its predictor class (PythonPredictor or ONNXPredictor)."""
    if str(python_path) not in sys.path:
        sys.path.insert(0, str(python_path))
    if not path.is_file():
        raise PredictorLoadError(f"predictor file not found: {path}")
    spec = importlib.util.spec_from_file_location("berth_predictor", path)
    if spec is None or spec.loader is None:
        raise PredictorLoadError(f"cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules["berth_predictor"] = module
    spec.loader.exec_module(module)  # user code: its exceptions propagate with their traceback
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        found = [name for name, value in vars(module).items() if isinstance(value, type)
                 and value.__module__ == module.__name__]
        raise PredictorLoadError(
            f"{path.name} defines no class {class_name} (classes found: {', '.join(found) or 'none'})"
        )
    return cls


def construct(cls: type, config: Mapping[str, Any], clients: Mapping[str, Any] | None = None) -> Any:
    """Instantiate the predictor, passing only the constructor arguments it names."""
    available = {"config": dict(config), "python_client": None, "onnx_client": None, "job_spec": None,
                 **(clients or {})}
    names = _declared(cls.__init__, INIT_ARGS, "__init__")  # type: ignore[misc]
    return cls(**{name: available[name] for name in names})


def bind(instance: Any, name: str, allowed: frozenset[str]) -> BoundMethod | None:
    method = getattr(instance, name, None)
    if method is None:
        return None
    if not callable(method):
        raise PredictorLoadError(f"{CLASS_NAME}.{name} must be a method")
    args = _declared(method, allowed, name)
    return BoundMethod(func=method, args=args, is_async=inspect.iscoroutinefunction(method))


def bind_init_thread(instance: Any) -> Callable[[], Any] | None:
    """The optional `init_thread(self)`: per-thread set-up for libraries bound to the thread that made them."""
    method = getattr(instance, "init_thread", None)
    if method is None:
        return None
    if not callable(method):
        raise PredictorLoadError(f"{CLASS_NAME}.init_thread must be a method")
    _declared(method, frozenset(), "init_thread")
    return method  # type: ignore[no-any-return]


async def on_every_thread(executor: ThreadPoolExecutor, threads: int, func: Callable[[], Any]) -> None:
    """Run `func` once on each of the pool's `threads` threads, starting those not started yet.

    Each call waits at a barrier until all have started, so no thread can take a second call:
    the pool then holds exactly `threads` threads, and a pool's threads live as long as it does.
    The first exception is raised once every call has ended.
    """
    barrier = threading.Barrier(threads)

    def once() -> None:
        try:
            func()
        finally:
            barrier.wait()

    loop = asyncio.get_running_loop()
    await asyncio.gather(*(loop.run_in_executor(executor, once) for _ in range(threads)))


class PostPredictWorker:
    """`post_predict` calls on one background thread of their own, in the order requests finished.

    Never on the request path: with one predict thread that thread is the event loop's, and a slow
    `post_predict` there would hold up every request behind it. Its exceptions go to the log with
    the request's id and never reach a client. At most `backlog` calls wait: a post_predict slower
    than the traffic would otherwise grow memory without bound (waiting on the request path
    cannot help: the connection serves its next request once the response is sent), so beyond
    that calls are skipped, with a warning at most once a second.
    """

    def __init__(self, method: BoundMethod, backlog: int = POST_PREDICT_BACKLOG) -> None:
        self.method = method
        self.backlog = backlog
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="post_predict")
        self.room = threading.Semaphore(backlog)  # released by the worker thread, taken by the loop's
        self.skipped = 0
        self._warned = 0.0

    def submit(self, values: Mapping[str, Any], request_id: str) -> None:
        if not self.room.acquire(blocking=False):
            self._skip(request_id)
            return
        self.executor.submit(self._run, values, request_id)

    def _run(self, values: Mapping[str, Any], request_id: str) -> None:
        try:
            self.method.call(values)
        except Exception:
            log.exception("request %s: post_predict raised", request_id)
        finally:
            self.room.release()

    def _skip(self, request_id: str) -> None:
        self.skipped += 1
        now = time.monotonic()
        if now - self._warned >= 1.0:
            self._warned = now
            log.warning("request %s: post_predict skipped: %d calls already wait for it, which is slower than "
                        "the requests (%d skipped so far)", request_id, self.backlog, self.skipped)

    async def close(self) -> None:
        """Let the queued calls finish (the replica drains), off the event loop."""
        await asyncio.to_thread(self.executor.shutdown, True)


def bind_predict(instance: Any) -> BoundMethod:
    method = bind(instance, "predict", PREDICT_ARGS)
    if method is None:
        raise PredictorLoadError(f"{CLASS_NAME} has no predict method")
    if streams_request_body(method.args):
        check_body_stream(method)
    return method


def check_body_stream(method: BoundMethod) -> None:
    """A streamed request body is read on the event loop: only an async predict can consume it."""
    if not (method.is_async or inspect.isasyncgenfunction(method.func)):
        raise PredictorLoadError(
            f"{CLASS_NAME}.predict declares {BODY_STREAM}, an async iterator of the request body's chunks, but it is "
            f"a plain def: make it `async def predict(self, {BODY_STREAM})` and read it with `async for chunk in "
            f"{BODY_STREAM}`")
    if "payload" in method.args:
        raise PredictorLoadError(
            f"{CLASS_NAME}.predict declares both payload and {BODY_STREAM}, but the body can be read only once: "
            f"keep {BODY_STREAM} (and parse the chunks yourself) or payload")


def _declared(func: Callable[..., Any], allowed: frozenset[str], label: str) -> frozenset[str]:
    params = inspect.signature(func).parameters
    names = [p.name for p in params.values() if p.name != "self"
             and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    unknown = [name for name in names if name not in allowed]
    required_unknown = [name for name in unknown if params[name].default is inspect.Parameter.empty]
    if required_unknown:
        raise PredictorLoadError(
            f"{CLASS_NAME}.{label} declares {', '.join(required_unknown)}, which berth cannot supply; "
            f"it may declare any of: {', '.join(sorted(allowed))}"
        )
    return frozenset(name for name in names if name in allowed)
