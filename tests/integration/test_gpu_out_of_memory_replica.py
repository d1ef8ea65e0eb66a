"""A predictor that runs out of GPU memory, in a replica (no GPU needed: the error is raised as torch raises it).

In predict (one request, a batch, the inference protocol) the client gets a 500 that says the replica ran
out of GPU memory and what to do; in __init__ the failure the control plane records says the same.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest

from berth.config.schema import RealtimeAPI
from berth.runtime.app import ReplicaApp, ReplicaSettings
from berth.runtime.contract import EXIT_INIT_FAILED, ReplicaArgs, read_failure

# torch.OutOfMemoryError as torch defines it (a RuntimeError of module torch), without torch.
OOM_PREDICTOR = '''
class OutOfMemoryError(RuntimeError):
    pass
OutOfMemoryError.__module__ = "torch"

MESSAGE = "CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of 79.19 GiB"

class PythonPredictor:
    def __init__(self, config):
        if config.get("fail_init"):
            raise OutOfMemoryError(MESSAGE)

    def predict(self, payload):
        items = payload if isinstance(payload, list) else [payload]
        if any(item.get("size", 0) > 100 for item in items):
            raise OutOfMemoryError(MESSAGE)
        if any(item.get("other") for item in items):
            raise ValueError("secret detail")
        return payload
'''


def _api(gpu: float = 0.5, batching: bool = False, **config: Any) -> RealtimeAPI:
    predictor: dict[str, Any] = {"type": "python", "path": "predictor.py", "config": config}
    if batching:
        predictor["server_side_batching"] = {"max_batch_size": 4, "batch_interval": "50ms"}
    return RealtimeAPI.model_validate({"name": "oom", "kind": "RealtimeAPI", "predictor": predictor,
                                       "compute": {"cpu": 1, "gpu": gpu}})


def _app(tmp_path: Path, api: RealtimeAPI) -> ReplicaApp:
    (tmp_path / "predictor.py").write_text(textwrap.dedent(OOM_PREDICTOR))
    return ReplicaApp(ReplicaSettings(api=api, project=tmp_path))


@pytest.mark.parametrize("batching", [False, True], ids=["one request", "batched"])
@pytest.mark.anyio
async def test_predict_out_of_gpu_memory_is_a_500_that_says_so(tmp_path: Path, batching: bool,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    app = _app(tmp_path, _api(0.5, batching))
    await app.load()
    assert app.ready
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://replica") as client:
        ok, failed = await asyncio.gather(client.post("/", json={"size": 1}),
                                          client.post("/", json={"size": 1000}, headers={"x-request-id": "r-9"}))
        if batching:  # the batch fails as a whole: both its requests say why
            assert ok.status_code == 500 and "ran out of GPU memory" in ok.json()["error"]
        else:
            assert ok.status_code == 200 and ok.json() == {"size": 1}
        assert failed.status_code == 500
        error = failed.json()["error"]
        assert failed.json()["request_id"] == "r-9"
        assert error.startswith("the replica ran out of GPU memory in predict (0.5 of GPU 0): try ")
        assert "a bigger GPU share" in error and "a whole GPU (compute.gpu: 1)" in error
        assert "CUDA out of memory. Tried to allocate 20.00 GiB" in error
        if batching:
            assert "try a smaller predictor.server_side_batching.max_batch_size" in error and "a batch of 2" in error
        else:
            assert "try smaller batches (fewer items per request)" in error
        other = await client.post("/", json={"other": True})  # any other failure is as it was
        assert other.status_code == 500
        if batching:
            assert other.json()["error"] == "predict raised ValueError for a batch of 1: secret detail"
        else:
            assert other.json()["error"] == "internal server error"
    logged = [r for r in caplog.records if "ran out of GPU memory" in r.getMessage()]
    assert logged and logged[0].exc_info is not None  # the predictor's traceback goes to the API's log


@pytest.mark.anyio
async def test_the_inference_protocol_says_so_too(tmp_path: Path) -> None:
    app = _app(tmp_path, _api(1))
    await app.load()
    error = app.request_error(sys.modules["berth_predictor"].OutOfMemoryError("CUDA out of memory."))
    assert "the replica ran out of GPU memory in predict" in str(error)
    assert app.request_error(KeyError("x")).__class__ is KeyError


@pytest.mark.anyio
async def test_init_out_of_gpu_memory_is_recorded_as_such(tmp_path: Path) -> None:
    failures: list[BaseException] = []
    app = _app(tmp_path, _api(1, fail_init=True))
    app.on_fatal = failures.append
    await app.load()
    assert not app.ready and len(failures) == 1
    message = app.init_failure(failures[0])
    assert message.startswith("the replica ran out of GPU memory in __init__")
    assert "a GPU with more memory" in message and "OutOfMemoryError: CUDA out of memory" in message


def test_the_replica_process_writes_the_failure_the_control_plane_reads(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "predictor.py").write_text(textwrap.dedent(OOM_PREDICTOR))
    sockets = tmp_path / "s"
    sockets.mkdir()
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(_api(0.5, fail_init=True).model_dump(mode="json")))
    args = ReplicaArgs(spec=spec, project=project, socket_dir=sockets)
    done = subprocess.run(args.command(sys.executable), cwd=project, capture_output=True, text=True, timeout=60,
                          env={**_environ(), "CUDA_VISIBLE_DEVICES": "1"})
    assert done.returncode == EXIT_INIT_FAILED, done.stderr
    failure = read_failure(sockets)
    assert failure is not None
    assert failure.error.startswith("the replica ran out of GPU memory in __init__ (0.5 of GPU 1): try ")
    assert "raise OutOfMemoryError(MESSAGE)" in failure.traceback
    assert "the predictor failed to initialise: the replica ran out of GPU memory" in done.stderr


def _environ() -> dict[str, str]:
    import os

    return dict(os.environ)
