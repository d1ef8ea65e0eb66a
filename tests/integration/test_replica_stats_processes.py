"""A real replica (`python -m berth.runtime`) with two processes: each answers GET /stats for itself."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from berth.runtime.contract import ReplicaArgs, socket_path

PREDICTOR = """
import os

class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        return {"label": f"pid-{os.getpid()}", "n": payload}
"""


@pytest.fixture
def replica(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    (tmp_path / "predictor.py").write_text(textwrap.dedent(PREDICTOR))
    spec = {"name": "multi", "kind": "RealtimeAPI",
            "predictor": {"type": "python", "path": "predictor.py", "processes_per_replica": 2},
            "monitoring": {"model_type": "classification", "key": "label"}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    args = ReplicaArgs(spec=tmp_path / "spec.json", project=tmp_path, socket_dir=tmp_path / "run",
                       replica_id="multi-1", version="v9")
    # Its own session, so that the cleanup reaches the sibling process too, whatever happened.
    process = subprocess.Popen(args.command(sys.executable), start_new_session=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # a sibling left behind


def _client(tmp_path: Path, index: int) -> httpx.Client:
    transport = httpx.HTTPTransport(uds=str(socket_path(tmp_path / "run", index)))
    return httpx.Client(transport=transport, base_url="http://replica", timeout=10)


def _wait_ready(client: httpx.Client, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the replica exited with code {process.returncode}"
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"the replica process was not ready within {timeout}s")


def test_each_process_reports_its_own_stats_and_none_is_lost(tmp_path: Path,
                                                              replica: subprocess.Popen[bytes]) -> None:
    clients = [_client(tmp_path, 0), _client(tmp_path, 1)]
    for client in clients:
        _wait_ready(client, replica)
    sent = {0: 7, 1: 4}
    for index, count in sent.items():
        for n in range(count):
            assert clients[index].post("/", json=n).status_code == 200
    stats = [client.get("/stats").json() for client in clients]
    assert [s["process"] for s in stats] == [0, 1]
    assert stats[0]["incarnation"] != stats[1]["incarnation"]
    pids = [int(s["incarnation"].split("-")[0]) for s in stats]
    assert pids[0] == replica.pid and pids[1] != replica.pid
    for index, s in enumerate(stats):
        assert s["version"] == "v9" and s["init_seconds"] is not None
        assert s["requests"] == {"2XX": sent[index], "4XX": 0, "5XX": 0}
        assert s["predict"]["count"] == sent[index]
        assert s["predictions"]["classes"] == {f"pid-{pids[index]}": sent[index]}
    assert sum(s["requests"]["2XX"] for s in stats) == sum(sent.values())
    for client in clients:
        client.close()
    replica.send_signal(signal.SIGTERM)  # process 0 forwards it to its sibling: both drain and exit
    assert replica.wait(20) in (0, -signal.SIGTERM)  # uvicorn re-raises the stop signal once drained
    deadline = time.monotonic() + 20
    while _alive(pids[1]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pids[1]), "the sibling process outlived its replica"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_replica_started_by_the_supervisor_reports_its_version(tmp_path: Path) -> None:
    from berth.control.replica import Replica
    from berth.control.supervisor import Supervisor

    (tmp_path / "predictor.py").write_text(textwrap.dedent(PREDICTOR))
    spec = {"name": "versioned", "kind": "RealtimeAPI", "predictor": {"type": "python", "path": "predictor.py"}}
    replica = Replica(id="versioned-1", api="versioned", version="v-abc", socket_dir=tmp_path / "run",
                      log_path=tmp_path / "logs" / "replica.log", processes=1, created_at=time.time())
    Supervisor(tmp_path / "models").spawn(replica, spec, tmp_path, dict(os.environ), time.time())
    assert replica.popen is not None
    try:
        with _client(tmp_path, 0) as client:
            _wait_ready(client, replica.popen)
            assert client.get("/stats").json()["version"] == "v-abc"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(replica.popen.pid, signal.SIGKILL)  # its own session: started that way by the supervisor
        replica.popen.wait(10)
