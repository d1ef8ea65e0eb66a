"""The management API's deploy route in-process, as uvicorn drives it (ASGI spec 2.3: a disconnect is heard
while the response streams), with the real deployer and environment builder (real uv, a local index).

`Accept: application/x-ndjson` answers a line per progress message, then `{"results": [...]}` or
`{"error": {...}}`; a client that goes away cancels the deploy: the build's processes die, nothing is deployed."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from berth.client import Client
from berth.config.loader import SpecFile
from berth.config.schema import RealtimeAPI
from berth.control.deploy import Deployer
from berth.control.management import ManagementAPI
from berth.control.paths import Paths
from berth.control.snapshot import GRACE_SECONDS, collect_snapshots
from berth.errors import BerthError, ConfigError, Conflict, DaemonUnavailable, EnvironmentFailed
from berth.pyenv.builder import Environment, Progress
from tests.integration.test_deploy_ordering import DeployWorld
from tests.process.package_index import PackageIndex

pytestmark = pytest.mark.anyio

API: dict[str, Any] = {"name": "api", "kind": "RealtimeAPI", "predictor": {"type": "python", "path": "predictor.py"},
       "autoscaling": {"min_replicas": 0, "init_replicas": 0}}


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PackageIndex]:
    with PackageIndex(tmp_path_factory.mktemp("wheels")) as served:
        served.add("berthdemo", "1.0")
        yield served


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("uv-cache")


class Sent:
    """What the app sent, as it sent it."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.changed = asyncio.Event()

    async def __call__(self, message: MutableMapping[str, Any]) -> None:
        self.messages.append(dict(message))
        self.changed.set()

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])

    @property
    def chunks(self) -> list[bytes]:
        return [m["body"] for m in self.messages if m["type"] == "http.response.body" and m["body"]]

    @property
    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for chunk in self.chunks for line in chunk.splitlines() if line.strip()]

    @property
    def complete(self) -> bool:
        return any(m["type"] == "http.response.body" and not m.get("more_body") for m in self.messages)

    async def until(self, text: str, deadline: float = 30.0) -> None:
        ends = time.monotonic() + deadline
        while not any(text in chunk.decode() for chunk in self.chunks):
            assert time.monotonic() < ends, f"{text!r} never came: {self.lines}"
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), timeout=max(0.01, ends - time.monotonic()))


class StreamWorld:
    def __init__(self, tmp_path: Path, index: PackageIndex, cache: Path) -> None:
        self.world = DeployWorld(tmp_path)
        self.store = self.world.store
        self.management = ManagementAPI(
            self.world.store, self.world.reconciler, self.world.reconciler.wait_for, self.world.gateways,  # type: ignore[arg-type]
            self.world.deployer, self.world.paths, lambda: {"host": "127.0.0.1", "port": 8888}, lambda: None,
            self.world.clock)
        self.project = self.world.project
        self.variables = {"UV_INDEX_URL": index.url, "UV_CACHE_DIR": str(cache)}

    def files(self, **files: str) -> None:
        for name, text in files.items():
            (self.project / name.replace("__", ".")).write_text(text)

    def body(self, project: Path | None = None) -> dict[str, Any]:
        return {"spec_file": str((project or self.project) / "berth.yaml"), "apis": [API], "verify": False,
                "variables": self.variables}

    async def post(self, body: dict[str, Any], sent: Sent, gone: asyncio.Event | None = None,
                   stream: bool = True) -> None:
        """POST /v1/apis the way uvicorn calls the app; `gone` set: the client disconnects."""
        raw = json.dumps(body).encode()
        headers = [(b"host", b"berth"), (b"content-type", b"application/json"),
                   (b"content-length", str(len(raw)).encode())]
        if stream:
            headers.append((b"accept", b"application/x-ndjson"))
        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
                 "method": "POST", "scheme": "http", "path": "/v1/apis", "raw_path": b"/v1/apis",
                 "query_string": b"", "root_path": "", "headers": headers, "client": ("127.0.0.1", 50000),
                 "server": ("berth", 80)}
        delivered = False
        never = gone or asyncio.Event()

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": raw, "more_body": False}
            await never.wait()
            return {"type": "http.disconnect"}

        await self.management.app(scope, receive, sent)

    async def deploy(self, body: dict[str, Any] | None = None) -> Sent:
        sent = Sent()
        await asyncio.wait_for(self.post(body or self.body(), sent), timeout=60)
        assert sent.status == 200 and sent.complete
        return sent


@pytest.fixture
def subject(tmp_path: Path, index: PackageIndex, cache: Path) -> StreamWorld:
    return StreamWorld(tmp_path, index, cache)


async def test_progress_lines_come_one_by_one_before_the_result(subject: StreamWorld) -> None:
    subject.files(requirements__txt="berthdemo==1.0\n")
    sent = await subject.deploy()
    *progress, last = sent.lines
    assert all(set(line) == {"progress"} for line in progress)
    assert any(line["progress"].startswith("installing 1 package(s)") for line in progress)
    assert len(sent.chunks) == len(sent.lines)  # each its own chunk, sent as it happened
    [result] = last["results"]
    assert result["action"] == "creating" and result["api"] == "api"
    record = subject.store.get_api("api")
    assert record is not None and record.environment and record.version == result["version"]
    again = await subject.deploy()
    assert [line["progress"] for line in again.lines[:-1]] == [
        f"reusing environment {record.environment} (requirements.txt unchanged)"]
    assert again.lines[-1]["results"][0]["action"] == "up to date"


async def test_a_project_without_requirements_streams_only_the_result(subject: StreamWorld) -> None:
    sent = await subject.deploy()
    assert [list(line) for line in sent.lines] == [["results"]]
    record = subject.store.get_api("api")
    assert record is not None and record.environment == ""


@pytest.mark.parametrize(("files", "kind", "says"), [
    ({"requirements__txt": "berthdemo==9.9\n"}, "EnvironmentFailed", "no version of berthdemo==9.9"),
    ({"requirements__txt": "click\npydantic<2\n"}, "ConfigError", "requirements.txt:2: pydantic<2 conflicts"),
    ({"conda-packages__txt": "numpy\n"}, "ConfigError", "conda-packages.txt: berth does not use conda"),
    ({".env": "TOKEN=abc123secret\nTOKEN2 abc123secret\n"}, "ConfigError", ".env:2: not a NAME=value line"),
])
async def test_an_error_is_the_last_line_with_its_kind_and_nothing_is_deployed(
        subject: StreamWorld, files: dict[str, str], kind: str, says: str) -> None:
    subject.files(**files)
    sent = await subject.deploy()
    error = sent.lines[-1]["error"]
    assert error["kind"] == kind and error["hint"]
    assert says in error["error"] + "\n".join(error.get("problems", []))
    assert "abc123secret" not in b"".join(sent.chunks).decode()
    assert subject.store.get_api("api") is None and subject.store.events("api", limit=10) == []


async def test_without_ndjson_the_answer_is_json_and_an_error_its_status(subject: StreamWorld) -> None:
    subject.files(requirements__txt="berthdemo==9.9\n")
    transport = httpx.ASGITransport(app=subject.management.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://berth") as http:
        response = await http.post("/v1/apis", json=subject.body(), timeout=60)
    assert response.status_code == 422 and response.json()["kind"] == "EnvironmentFailed"
    assert subject.store.get_api("api") is None


def _build_processes(before: set[int]) -> list[str]:
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.pid not in before and child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
                found.append(f"{child.pid} {child.name()}")
        except psutil.NoSuchProcess:
            continue
    return found


async def test_a_client_gone_during_the_build_kills_it_and_deploys_nothing(subject: StreamWorld) -> None:
    before = {child.pid for child in psutil.Process().children(recursive=True)}
    subject.files(requirements__txt="berthdemo==1.0\n", dependencies__sh="echo started\nsleep 30\n")
    sent, gone = Sent(), asyncio.Event()
    call = asyncio.ensure_future(subject.post(subject.body(), sent, gone))
    await sent.until("dependencies.sh: started")
    assert any(line.endswith((" bash", " sleep")) for line in _build_processes(before))
    gone.set()
    await asyncio.wait_for(call, timeout=10)
    ends = time.monotonic() + 10
    while _build_processes(before):
        assert time.monotonic() < ends, _build_processes(before)
        await asyncio.sleep(0.05)
    assert not sent.complete  # the answer was cut, not finished
    await asyncio.sleep(0.2)  # the cancelled deploy has nothing left that could still apply
    assert subject.store.get_api("api") is None
    envs = subject.world.paths.envs
    assert [p.name for p in envs.iterdir() if not p.name.startswith(".")] == []
    # the daemon keeps serving: the same API deploys (no build script this time)
    (subject.project / "dependencies.sh").unlink()
    again = await subject.deploy()
    assert again.lines[-1]["results"][0]["action"] == "creating"


# --- bugs found in review ---------------------------------------------------------------------------

class GatedBuilder:
    """A builder whose projects holding a file `gate` wait for the test before their (empty) build ends."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()

    async def prepare(self, project: Path, variables: Mapping[str, str], dotenv: Mapping[str, str],
                      progress: Progress) -> Environment | None:
        if (project / "gate").exists():
            self.waiting.set()
            await self.gate.wait()
        return None


def gated(subject: StreamWorld) -> GatedBuilder:
    builder = GatedBuilder()
    world = subject.world
    world.deployer = Deployer(world.store, world.reconciler, world.paths, world.clock, builder)  # type: ignore[arg-type]
    return builder


async def test_a_long_build_keeps_its_snapshot_from_the_collector(subject: StreamWorld) -> None:
    builder = gated(subject)
    subject.files(gate="")
    deploy = asyncio.ensure_future(subject.world.deployer.deploy(str(subject.project / "berth.yaml"), [API]))
    await asyncio.wait_for(builder.waiting.wait(), timeout=10)
    snapshots = subject.world.paths.snapshots
    # What the daemon's housekeeping keeps: the store's, and the snapshots of deploys still building.
    keep = subject.store.snapshots_in_use() | set(subject.world.deployer.in_flight)
    collect_snapshots(snapshots, keep, now=time.time() + GRACE_SECONDS + 60)
    builder.gate.set()
    await deploy
    record = subject.store.get_api("api")
    assert record is not None and (snapshots / record.snapshot / "predictor.py").is_file()


async def test_the_later_of_two_deploys_of_an_api_wins(subject: StreamWorld, tmp_path: Path) -> None:
    builder = gated(subject)
    subject.files(gate="")  # the first deploy: a slow build
    later = tmp_path / "later"
    later.mkdir()
    (later / "berth.yaml").write_text("# the specs are passed in\n")
    (later / "predictor.py").write_text("class PythonPredictor:\n    later = True\n")
    deployer = subject.world.deployer
    first = asyncio.ensure_future(deployer.deploy(str(subject.project / "berth.yaml"), [API]))
    await asyncio.wait_for(builder.waiting.wait(), timeout=10)
    second = await deployer.deploy(str(later / "berth.yaml"), [API])  # issued later, done first
    builder.gate.set()
    with pytest.raises(Conflict, match="a later deploy, refresh or delete was applied"):
        await first
    record = subject.store.get_api("api")
    assert record is not None and record.version == second[0].version


# --- what a deployed version's replicas start with --------------------------------------------------

class Spawns:
    def __init__(self, subject: StreamWorld) -> None:
        self.calls: list[tuple[dict[str, str], str | None]] = []
        supervisor = subject.world.supervisor
        original = supervisor.spawn

        def spawn(replica: Any, spec: Any, project: Path, env: Any, now: float, python: str | None = None) -> None:
            self.calls.append((dict(env), python))
            original(replica, spec, project, env, now, python)

        supervisor.spawn = spawn  # type: ignore[method-assign]


async def test_a_replica_runs_in_the_environment_with_dotenv_below_predictor_env(subject: StreamWorld) -> None:
    spawns = Spawns(subject)
    subject.files(requirements__txt="berthdemo==1.0\n", **{".env": "FROM_DOTENV=dv-7f3a\nBOTH=dv-both\n"})
    body = subject.body()
    body["apis"] = [{**API, "autoscaling": {}, "predictor": {**API["predictor"], "env": {"BOTH": "spec"}}}]
    sent = await subject.deploy(body)
    assert "results" in sent.lines[-1]
    await subject.world.tick()
    [(env, python)] = spawns.calls
    record = subject.store.get_api("api")
    assert record is not None
    folder = subject.world.paths.envs / record.environment
    assert python == str(folder / "bin" / "python")
    assert env["VIRTUAL_ENV"] == str(folder) and env["PATH"].startswith(str(folder / "bin"))
    assert (env["FROM_DOTENV"], env["BOTH"]) == ("dv-7f3a", "spec")
    shown = " ".join(event.message for event in subject.store.events("api", limit=50)) + str(sent.lines)
    assert "dv-" not in shown


async def test_a_replica_whose_environment_is_gone_fails_to_start_saying_so(subject: StreamWorld) -> None:
    spawns = Spawns(subject)
    subject.files(requirements__txt="berthdemo==1.0\n")
    body = subject.body()
    body["apis"] = [{**API, "autoscaling": {}}]
    await subject.deploy(body)
    record = subject.store.get_api("api")
    assert record is not None
    (subject.world.paths.envs / record.environment / "built.json").unlink()
    await subject.world.tick()
    assert spawns.calls == []
    events = [event.message for event in subject.store.events("api", limit=50)]
    assert any(f"Python environment {record.environment} is missing" in message for message in events), events


async def test_an_include_outside_the_project_is_named_before_building(subject: StreamWorld) -> None:
    (subject.project.parent / "common.txt").write_text("berthdemo==1.0\n")
    subject.files(requirements__txt="-r ../common.txt\n")
    sent = await subject.deploy()
    last = sent.lines[-1]
    assert "results" in last or (last["error"]["kind"] == "ConfigError"
                                 and "requirements.txt:1" in str(last["error"])), last


# --- the client's side of the stream ----------------------------------------------------------------

def client_answered(tmp_path: Path, answer: httpx.Response, seen: list[httpx.Request]) -> Client:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer

    client = Client(Paths(tmp_path / "home"))
    client._http = httpx.Client(transport=httpx.MockTransport(handler), base_url="http://berth")
    return client


def spec_file(tmp_path: Path) -> SpecFile:
    return SpecFile(tmp_path / "berth.yaml", (RealtimeAPI.model_validate(API),))


def ndjson(*lines: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, content=b"".join(json.dumps(line).encode() + b"\n" for line in lines),
                          headers={"content-type": "application/x-ndjson"})


def test_the_client_hears_progress_then_results_and_forwards_index_settings(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UV_INDEX_URL", "http://127.0.0.1:1/simple")
    monkeypatch.setenv("BERTH_TEST_NOT_FORWARDED", "x")
    seen: list[httpx.Request] = []
    result = {"api": "api", "action": "creating", "version": "v1", "message": "creating api"}
    client = client_answered(tmp_path, ndjson({"progress": "resolving 1 requirement(s)…"}, {"results": [result]}),
                             seen)
    heard: list[str] = []
    assert client.deploy(spec_file(tmp_path), progress=heard.append) == [result]
    assert heard == ["resolving 1 requirement(s)…"]
    body = json.loads(seen[0].content)
    assert body["variables"]["UV_INDEX_URL"] == "http://127.0.0.1:1/simple"
    assert "BERTH_TEST_NOT_FORWARDED" not in body["variables"]
    assert seen[0].headers["accept"] == "application/x-ndjson"


@pytest.mark.parametrize(("error", "kind", "code"), [
    ({"error": "the Python environment could not be built", "hint": "fix it", "kind": "EnvironmentFailed"},
     EnvironmentFailed, 6),
    ({"error": "bad", "hint": "h", "kind": "ConfigError", "problems": ["requirements.txt:2: pydantic<2 ..."]},
     ConfigError, 2),
])
def test_the_client_raises_the_streamed_error(tmp_path: Path, error: dict[str, Any], kind: type[BerthError],
                                             code: int) -> None:
    client = client_answered(tmp_path, ndjson({"progress": "resolving"}, {"error": error}), [])
    with pytest.raises(kind) as raised:
        client.deploy(spec_file(tmp_path))
    assert raised.value.exit_code == code


def test_a_stream_cut_before_the_result_says_the_daemon_stopped(tmp_path: Path) -> None:
    client = client_answered(tmp_path, ndjson({"progress": "resolving"}), [])
    with pytest.raises(DaemonUnavailable, match="stopped answering in the middle of the deploy"):
        client.deploy(spec_file(tmp_path))


def test_the_client_understands_a_daemon_that_answers_json(tmp_path: Path) -> None:
    result = {"api": "api", "action": "creating", "version": "v1", "message": "creating api"}
    client = client_answered(tmp_path, httpx.Response(200, json=[result]), [])
    assert client.deploy(spec_file(tmp_path)) == [result]


async def test_symlinked_requirements_and_dotenv_inside_the_project_are_read(subject: StreamWorld) -> None:
    shared = subject.project / "config"
    shared.mkdir()
    (shared / "requirements.txt").write_text("berthdemo==1.0\n")
    (shared / "env").write_text("LINKED=yes\n")
    (subject.project / "requirements.txt").symlink_to(Path("config") / "requirements.txt")
    (subject.project / ".env").symlink_to(Path("config") / "env")
    sent = await subject.deploy()
    assert "results" in sent.lines[-1], sent.lines[-1]
    record = subject.store.get_api("api")
    assert record is not None and record.environment
    assert (subject.world.paths.snapshots / record.snapshot / ".env").read_text() == "LINKED=yes\n"


async def test_a_dotenv_symlinked_out_of_the_project_is_refused_naming_it(subject: StreamWorld) -> None:
    outside = subject.project.parent / "secrets.env"
    outside.write_text("TOKEN=abc123secret\n")
    (subject.project / ".env").symlink_to(outside)
    sent = await subject.deploy()
    error = sent.lines[-1]["error"]
    assert error["kind"] == "ConfigError" and ".env: symlink to" in error["error"]
    assert "abc123secret" not in json.dumps(sent.lines) and subject.store.get_api("api") is None
