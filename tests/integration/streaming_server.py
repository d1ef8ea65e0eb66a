"""A ReplicaApp under a real uvicorn (httptools, TCP) in a thread: timing, backpressure and disconnects show."""

from __future__ import annotations

import asyncio
import socket
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn

from berth.config.schema import RealtimeAPI
from berth.runtime.app import ReplicaApp, ReplicaSettings


def make_app(folder: Path, source: str, **predictor: object) -> ReplicaApp:
    (folder / "predictor.py").write_text(textwrap.dedent(source))
    api = RealtimeAPI.model_validate({
        "name": "stream", "kind": "RealtimeAPI",
        "predictor": {"type": "python", "path": "predictor.py", "config": {"folder": str(folder)}, **predictor},
    })
    return ReplicaApp(ReplicaSettings(api=api, project=folder))


@contextmanager
def serving(app: ReplicaApp, timeout: float = 15) -> Iterator[str]:
    """The app on 127.0.0.1:<free port> until the block ends; yields its base URL once it is ready."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, http="httptools", loop="asyncio",
                                           lifespan="on", log_level="warning"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not (server.started and app.ready):
        assert thread.is_alive() and time.monotonic() < deadline, "the replica did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        assert not thread.is_alive(), "the replica did not stop"
