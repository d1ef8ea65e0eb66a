"""The pod's start (`python -m berth.runtime.bootstrap`): unpack the code bundle, build the environment into
the shared cache, make the replica's environment, exec the runtime.

The planning is tested in-process with the exec replaced; one test runs the real thing as a process (a
local package index, offline): it builds an environment, becomes the runtime (same pid), serves on TCP and
stops on SIGTERM; a second start reuses the environment."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

from berth.config.schema import RealtimeAPI
from berth.runtime import bootstrap
from berth.runtime.concurrency import VARIABLE as MAX_CONCURRENCY
from berth.runtime.contract import ReplicaArgs
from tests.process.package_index import PackageIndex

PREDICTOR = """
class PythonPredictor:
    def __init__(self, config):
        self.config = config

    def predict(self, payload):
        import os
        return {"echo": payload, "greeting": os.environ.get("GREETING")}
"""

DEMO_PREDICTOR = """
import asyncio
import berthdemo

class PythonPredictor:
    def __init__(self, config):
        pass

    async def predict(self, payload):
        await asyncio.sleep(payload.get("sleep", 0))
        return {"berthdemo": berthdemo.__version__}
"""


def api_spec(limit: int = 7, **predictor: object) -> dict[str, object]:
    spec = {"name": "iris", "kind": "RealtimeAPI", "compute": {"cpu": 2},
            "predictor": {"type": "python", "path": "predictor.py", **predictor},
            "autoscaling": {"max_replica_concurrency": limit}}
    return RealtimeAPI.model_validate(spec).model_dump(mode="json")


def tarball(files: dict[str, str], path: Path) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def pod(tmp_path: Path, files: dict[str, str], spec: dict[str, object] | None = None) -> list[str]:
    """The pod's arguments, with its mounts as folders of tmp_path."""
    code = tmp_path / "code"
    code.mkdir(exist_ok=True)
    tarball(files, code / "code.tar.gz")
    (code / "spec.json").write_text(json.dumps(spec or api_spec()))
    return ["--code", str(code / "code.tar.gz"), "--spec", str(code / "spec.json"), "--work", str(tmp_path / "work"),
            "--envs", str(tmp_path / "envs"), "--port", "8080", "--version", "v1"]


class Exec:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str], dict[str, str]]] = []

    def __call__(self, path: str, argv: list[str], env: dict[str, str]) -> None:
        self.calls.append((path, argv, env))


def test_pod_arguments_are_the_contracts() -> None:
    args = bootstrap.parser().parse_args(bootstrap.pod_args("abc"))
    assert (str(args.code), str(args.spec), str(args.work), str(args.envs), args.port, args.version) == (
        "/srv/berth/code/code.tar.gz", "/srv/berth/code/spec.json", "/srv/berth/work", "/var/cache/berth/envs",
        8080, "abc")
    assert bootstrap.pod_command() == ["python", "-m", "berth.runtime.bootstrap"]
    contract = (Path(__file__).resolve().parents[2] / "deploy" / "README.md").read_text()
    assert json.dumps(bootstrap.pod_args("<version>")) in contract.replace("\n", "")


def test_bootstrap_unpacks_the_code_and_execs_the_runtime_with_the_replicas_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    files = {"predictor.py": PREDICTOR, "berth.yaml": "- name: iris\n", ".env": "GREETING=hi\nSECRET=s3cr3t\n",
             "pkg/data.txt": "x"}
    argv = pod(tmp_path, files, api_spec(env={"SECRET": "from-spec"}))
    monkeypatch.setenv("BERTH_API", "iris")
    monkeypatch.setenv("BERTH_REPLICA_ID", "iris-7d9-abcde")
    monkeypatch.chdir(tmp_path)
    done = Exec()
    assert bootstrap.main(argv, exec_=done, termination_log=tmp_path / "termination-log") == 0
    [(path, command, env)] = done.calls
    project = tmp_path / "work" / "project"
    assert (project / "pkg" / "data.txt").read_text() == "x"
    assert Path.cwd() == project
    assert path == sys.executable and command[:3] == [sys.executable, "-m", "berth.runtime"]
    replica = ReplicaArgs.parse(command[3:])
    assert replica.port == 8080 and replica.host == "0.0.0.0" and replica.project == project
    assert replica.replica_id == "iris-7d9-abcde" and replica.version == "v1"
    assert replica.socket_dir == tmp_path / "work" / "run" and replica.model_cache == tmp_path / "work" / "models"
    # .env below predictor.env, thread caps from compute.cpu, the limit the replica enforces itself
    assert env["GREETING"] == "hi" and env["SECRET"] == "from-spec"
    assert env["OMP_NUM_THREADS"] == "2" and env[MAX_CONCURRENCY] == "7" and env["PYTHONUNBUFFERED"] == "1"
    out = capsys.readouterr().out
    assert "unpacked code.tar.gz" in out and "berth's own environment" in out and "s3cr3t" not in out


def test_a_restart_replaces_what_the_last_start_unpacked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    bootstrap.main(pod(tmp_path, {"predictor.py": PREDICTOR, "old.py": ""}), exec_=Exec())
    bootstrap.main(pod(tmp_path, {"predictor.py": PREDICTOR}), exec_=Exec())
    assert sorted(p.name for p in (tmp_path / "work" / "project").iterdir()) == ["predictor.py"]
    assert [p.name for p in (tmp_path / "work").iterdir() if p.name.startswith(".project")] == []


def test_a_bundle_with_a_path_out_of_the_folder_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    log = tmp_path / "termination-log"
    log.write_text("")
    done = Exec()
    assert bootstrap.main(pod(tmp_path, {"../escape.py": "x"}), exec_=done, termination_log=log) == 1
    assert not done.calls and not (tmp_path / "escape.py").exists()
    assert "cannot unpack the project's code" in log.read_text()
    assert "cannot unpack" in capsys.readouterr().out


def test_without_a_spec_the_pod_fails_with_a_message_in_the_termination_log(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    argv = pod(tmp_path, {"predictor.py": PREDICTOR})
    (tmp_path / "code" / "spec.json").unlink()
    log = tmp_path / "termination-log"
    log.write_text("")
    assert bootstrap.main(argv, exec_=Exec(), termination_log=log) == 1
    assert "cannot read the API spec" in log.read_text() and "spec.json" in log.read_text()


def test_without_a_code_bundle_the_project_baked_in_the_image_is_served(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    baked = tmp_path / "baked"
    baked.mkdir()
    (baked / "predictor.py").write_text(PREDICTOR)
    argv = pod(tmp_path, {"predictor.py": PREDICTOR})
    (tmp_path / "code" / "code.tar.gz").unlink()
    monkeypatch.setenv("BERTH_PROJECT", str(baked))
    monkeypatch.chdir(tmp_path)
    done = Exec()
    assert bootstrap.main(argv, exec_=done) == 0
    assert ReplicaArgs.parse(done.calls[0][1][3:]).project == baked
    monkeypatch.delenv("BERTH_PROJECT")
    assert bootstrap.main(argv, exec_=Exec(), termination_log=tmp_path / "none") == 1


# --- the real thing, as a process --------------------------------------------------------------------


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PackageIndex]:
    with PackageIndex(tmp_path_factory.mktemp("wheels")) as served:
        served.add("berthdemo", "1.0")
        yield served


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "berth.runtime.bootstrap", *argv], env=env,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def wait_ready(process: subprocess.Popen[bytes], port: int, log: Path, deadline: float = 60.0) -> None:
    limit = time.monotonic() + deadline
    while time.monotonic() < limit:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"not ready in {deadline}s:\n{log.read_text()}")


def wait_in_flight(port: int, count: int, deadline: float = 5.0) -> None:
    gauge = f'berth_replica_in_flight_requests{{api_name="iris"}} {float(count)}'
    limit = time.monotonic() + deadline
    while gauge not in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text:
        assert time.monotonic() < limit, f"never {count} in flight"
        time.sleep(0.02)


def stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


def test_a_pod_builds_its_environment_becomes_the_runtime_and_a_restart_reuses_it(
        tmp_path: Path, index: PackageIndex) -> None:
    port = free_port()
    argv = pod(tmp_path, {"predictor.py": DEMO_PREDICTOR, "requirements.txt": "berthdemo==1.0\n"}, api_spec(limit=1))
    argv[argv.index("--port") + 1] = str(port)
    argv += ["--host", "127.0.0.1"]
    env = {**os.environ, "UV_INDEX_URL": index.url, "BERTH_API": "iris"}
    log = tmp_path / "pod.log"
    for start_number in (1, 2):
        process = start(argv, env, log)
        try:
            wait_ready(process, port, log)
            # exec'd: the pod's process is now the runtime itself, in the project's environment
            command = psutil.Process(process.pid).cmdline()
            assert command[1:3] == ["-m", "berth.runtime"], command
            assert command[0].startswith(str(tmp_path / "envs")), command
            answer = httpx.post(f"http://127.0.0.1:{port}/", json={}, timeout=5)
            assert answer.json() == {"berthdemo": "1.0"}
            if start_number == 1:  # max_replica_concurrency 1, enforced by the replica itself
                with ThreadPoolExecutor(1) as pool:
                    slow = pool.submit(httpx.post, f"http://127.0.0.1:{port}/", json={"sleep": 1.5}, timeout=10)
                    wait_in_flight(port, 1)
                    turned = httpx.post(f"http://127.0.0.1:{port}/", json={}, timeout=5)
                    assert turned.status_code == 503 and turned.headers["x-berth-reason"] == "max-replica-concurrency"
                    assert slow.result().status_code == 200
        finally:
            code = stop(process)
        assert code in (0, -signal.SIGTERM), log.read_text()
        text = log.read_text()
        if start_number == 1:
            assert "creating environment" in text and "reusing" not in text, text
    assert "reusing environment" in log.read_text()
    assert len([p for p in (tmp_path / "envs").iterdir() if not p.name.startswith(".")]) == 1
    assert (tmp_path / "envs" / ".uv-cache").is_dir()


def test_prepare_only_builds_into_the_baked_folder_and_a_pod_reuses_it_through_the_cache(
        tmp_path: Path, index: PackageIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    """What `berth build`'s Containerfile runs; then a pod of that image finds the environment baked in."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "predictor.py").write_text(DEMO_PREDICTOR)
    (project / "requirements.txt").write_text("berthdemo==1.0\n")
    monkeypatch.setenv("UV_INDEX_URL", index.url)
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    monkeypatch.chdir(tmp_path)
    baked = tmp_path / "opt-envs"
    assert bootstrap.main(["--prepare-only", "--project", str(project), "--envs", str(baked)]) == 0
    [key] = [p.name for p in baked.iterdir() if not p.name.startswith(".")]
    monkeypatch.setenv("BERTH_PROJECT", str(project))
    monkeypatch.setenv("BERTH_BAKED_ENVS", str(baked))
    monkeypatch.setenv("UV_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing may be fetched now
    argv = pod(tmp_path, {})
    (tmp_path / "code" / "code.tar.gz").unlink()
    done = Exec()
    assert bootstrap.main(argv, exec_=done) == 0
    assert done.calls[0][0] == str(baked / key / "bin" / "python")
    assert (tmp_path / "envs" / key).is_symlink()
