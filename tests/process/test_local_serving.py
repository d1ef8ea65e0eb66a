"""A real daemon, real replica processes, the real CLI: what a user does, end to end."""

import concurrent.futures
import json
import os
import signal
import socket
from pathlib import Path

import httpx
import psutil
import pytest

from tests.process.harness import EXAMPLES, Berth, wait_for, write_project

ECHO = """
import os

class PythonPredictor:
    def __init__(self, config):
        self.config = config
        print("echo predictor loaded", flush=True)

    def predict(self, payload, query_params):
        if query_params.get("fail"):
            raise RuntimeError("predict exploded")
        return {"pid": os.getpid(), "payload": payload, "tag": self.config.get("tag")}
"""


def echo_spec(name: str = "echo", tag: str = "one", extra: str = "") -> str:
    return f"""
    - name: {name}
      kind: RealtimeAPI
      predictor:
        type: python
        path: predictor.py
        config: {{tag: {tag}}}
    {extra}"""


def test_examples_deploy_predict_get_logs_delete(berth: Berth) -> None:
    starts = []
    for example in ("hello", "iris-classifier", "text"):
        deployed = berth.run("deploy", str(EXAMPLES / example), "--wait")
        assert f"creating {example}" in deployed.stdout and "is live" in deployed.stdout
        starts.append("started the berth daemon" in deployed.stderr)
    assert starts == [True, False, False]  # the first deploy starts the daemon and says so

    iris = berth.run("predict", "iris-classifier", str(EXAMPLES / "iris-classifier" / "sample.json"))
    assert iris.stdout.strip() == "setosa"
    hello = httpx.post(f"{berth.base_url}/hello", json={"name": "berth"})
    assert hello.json() == {"greeting": "hello", "echo": {"name": "berth"}}
    text = httpx.post(f"{berth.base_url}/text", content=(EXAMPLES / "text" / "sample.txt").read_bytes(),
                      headers={"content-type": "text/plain"})
    assert text.text == "4 words: SHIP IT WITH BERTH"

    apis = {api["name"]: api for api in berth.get()}
    assert set(apis) == {"hello", "iris-classifier", "text"}
    assert all(api["status"] == "live" for api in apis.values())
    assert apis["hello"]["metrics"]["2XX"] == 1
    table = berth.run("get").stdout
    assert "iris-classifier" in table and "avg request" in table

    detail = berth.run("get", "hello").stdout
    assert f"endpoint: {berth.base_url}/hello" in detail
    assert "curl -X POST" in detail and "sample.json" in detail
    replica = berth.get("hello")["replicas"][0]
    assert replica["status"] == "ready" and psutil.pid_exists(replica["pid"])

    assert "starting replica" in berth.run("logs", "hello").stdout

    for example in ("hello", "iris-classifier", "text"):
        assert f"deleted {example}" in berth.run("delete", example).stdout
    assert berth.get() == []
    assert not psutil.pid_exists(replica["pid"])
    assert httpx.post(f"{berth.base_url}/hello", json={}).status_code == 404


def test_init_failure_is_an_error_with_its_traceback_never_a_hot_loop(berth: Berth, tmp_path: Path) -> None:
    broken = """
    class PythonPredictor:
        def __init__(self, config):
            print("about to fail", flush=True)
            raise FileNotFoundError("model.pkl is missing")
        def predict(self, payload):
            return payload
    """
    project = write_project(tmp_path / "broken", echo_spec("broken"), broken)
    result = berth.run("deploy", str(project), "--wait", check=False)
    assert result.returncode == 6
    assert "broken failed to start: FileNotFoundError: model.pkl is missing" in result.stderr
    assert 'raise FileNotFoundError("model.pkl is missing")' in result.stderr
    api = berth.get("broken")
    assert api["status"] == "error" and "model.pkl is missing" in api["traceback"]
    logs = berth.run("logs", "broken").stdout
    assert "about to fail" in logs and "FileNotFoundError: model.pkl is missing" in logs
    # backoff: 0.5 s, 1 s, 2 s, ... so within ~2 s there are a few restarts, not hundreds
    wait_for(lambda: berth.get("broken")["replicas"][0]["restarts"] >= 2, 15, "two restarts")
    assert berth.get("broken")["replicas"][0]["restarts"] <= 4


def test_predict_errors_reach_the_client_as_clear_statuses(berth: Berth, tmp_path: Path) -> None:
    berth.run("deploy", str(write_project(tmp_path / "echo", echo_spec(), ECHO)), "--wait")
    url = f"{berth.base_url}/echo"
    failed = httpx.post(f"{url}?fail=1", json={}, headers={"x-request-id": "req-42"})
    assert failed.status_code == 500
    assert failed.json() == {"error": "internal server error", "request_id": "req-42"}
    bad = httpx.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert bad.status_code == 400 and "not valid JSON" in bad.json()["error"]
    def traceback_logged() -> str | None:
        out = berth.run("logs", "echo").stdout
        return out if "predict exploded" in out else None

    logs = wait_for(traceback_logged, 10, "the traceback in the logs")
    assert "req-42" in logs and "Traceback" in logs
    metrics = berth.get("echo")["metrics"]
    assert (metrics["4XX"], metrics["5XX"]) == (1, 1)


def test_a_killed_replica_is_replaced(berth: Berth, tmp_path: Path) -> None:
    berth.run("deploy", str(write_project(tmp_path / "echo", echo_spec(), ECHO)), "--wait")
    old_pid = berth.get("echo")["replicas"][0]["pid"]
    os.kill(old_pid, signal.SIGKILL)

    def replaced() -> bool:
        replica = berth.get("echo")["replicas"][0]
        return replica["status"] == "ready" and replica["pid"] not in (None, old_pid) and replica["restarts"] == 1

    wait_for(replaced, 20, "the killed replica to be restarted")
    assert httpx.post(f"{berth.base_url}/echo", json=1).json()["pid"] != old_pid


def test_concurrent_deploys_start_one_daemon_and_agree(berth: Berth, tmp_path: Path) -> None:
    project = write_project(tmp_path / "echo", echo_spec(), ECHO)
    first, second = berth.popen("deploy", str(project)), berth.popen("deploy", str(project))
    outputs = sorted(process.communicate(timeout=60)[0].strip() for process in (first, second))
    assert (first.returncode, second.returncode) == (0, 0)
    assert outputs == ["creating echo", "echo is up to date"]
    modules = [p.cmdline()[2] for p in berth.processes() if p.cmdline()[1:2] == ["-m"]]
    # One instance: one supervisor, one control plane, one gateway worker (and the replica).
    assert sorted(m for m in modules if m != "berth.runtime") == ["berth.control", "berth.control.daemon",
                                                                   "berth.gateway"]


def test_a_bad_spec_changes_nothing(berth: Berth, tmp_path: Path) -> None:
    project = write_project(tmp_path / "echo", echo_spec(), ECHO)
    berth.run("deploy", str(project), "--wait")
    before = berth.get("echo")
    (project / "berth.yaml").write_text((project / "berth.yaml").read_text() + "  autoscaling: {window: 15s}\n"
                                        "  computee: {cpu: 1}\n")
    result = berth.run("deploy", str(project), check=False)
    assert result.returncode == 2
    assert "autoscaling.window: must be a multiple of 10s (got 15s)" in result.stderr
    assert "computee: unknown field (did you mean 'compute'?)" in result.stderr
    after = berth.get("echo")
    assert (after["version"], after["last_update"]) == (before["version"], before["last_update"])


def test_redeploy_rolls_to_the_new_version_and_stops_the_old(berth: Berth, tmp_path: Path) -> None:
    project = write_project(tmp_path / "echo", echo_spec(tag="one"), ECHO)
    berth.run("deploy", str(project), "--wait")
    old = berth.get("echo")["replicas"][0]
    assert berth.run("deploy", str(project)).stdout.strip() == "echo is up to date"
    (project / "berth.yaml").write_text(echo_spec(tag="two"))
    assert berth.run("deploy", str(project), "--wait").stdout.startswith("updating echo")
    wait_for(lambda: [r["id"] for r in berth.get("echo")["replicas"]] != [old["id"]] and
             len(berth.get("echo")["replicas"]) == 1, 20, "the old replica to stop")
    assert httpx.post(f"{berth.base_url}/echo", json=0).json()["tag"] == "two"
    assert not psutil.pid_exists(old["pid"])
    # editing a project file is a new version too; the deployed snapshot does not change until then
    (project / "predictor.py").write_text(ECHO.replace('"tag": self.config.get("tag")', '"tag": "edited"'))
    assert httpx.post(f"{berth.base_url}/echo", json=0).json()["tag"] == "two"
    berth.run("deploy", str(project), "--wait")
    wait_for(lambda: httpx.post(f"{berth.base_url}/echo", json=0).json()["tag"] == "edited", 20, "the edit")


def test_every_process_of_a_replica_serves(berth: Berth, tmp_path: Path) -> None:
    spec = echo_spec(extra="  predictor:\n        processes_per_replica: 2\n").replace(
        "  predictor:\n        processes_per_replica: 2\n", "")
    spec = spec.replace("config: {tag: one}", "config: {tag: one}\n        processes_per_replica: 2")
    berth.run("deploy", str(write_project(tmp_path / "echo", spec, ECHO)), "--wait")
    pids = {httpx.post(f"{berth.base_url}/echo", json=i).json()["pid"] for i in range(6)}
    assert len(pids) == 2


def test_endpoint_taken_by_another_api_is_refused(berth: Berth, tmp_path: Path) -> None:
    berth.run("deploy", str(write_project(tmp_path / "a", echo_spec("first"), ECHO)))
    other = echo_spec("second", extra="  networking: {endpoint: /first}\n")
    result = berth.run("deploy", str(write_project(tmp_path / "b", other, ECHO)), check=False)
    assert result.returncode == 4
    assert "networking.endpoint: /first is already used by the deployed API 'first'" in result.stderr
    assert [api["name"] for api in berth.get()] == ["first"]


def test_apis_survive_a_daemon_restart(berth: Berth, tmp_path: Path) -> None:
    berth.run("deploy", str(write_project(tmp_path / "echo", echo_spec(), ECHO)), "--wait")
    old_pid = berth.get("echo")["replicas"][0]["pid"]
    assert "stopped" in berth.run("cluster", "down").stdout
    assert not psutil.pid_exists(old_pid)
    berth.run("cluster", "up")
    wait_for(lambda: berth.get("echo")["status"] == "live", 20, "echo to come back")
    assert httpx.post(f"{berth.base_url}/echo", json=5).json()["payload"] == 5


def test_daemon_problems_get_clear_errors(berth: Berth) -> None:
    down = berth.run("get", check=False)
    assert down.returncode == 5 and "the berth daemon is not running" in down.stderr
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(berth.home / "berth.sock"))
    stale.close()
    result = berth.run("get", check=False)
    assert result.returncode == 5 and "stale socket" in result.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", berth.port))
        taken.listen()
        busy = berth.run("cluster", "up", check=False)
    assert busy.returncode == 5 and f"port {berth.port} on 127.0.0.1 is already in use" in busy.stderr
    assert "--port" in busy.stderr
    berth.run("cluster", "up")  # the stale socket is replaced
    assert json.loads(berth.run("cluster", "status", "-o", "json").stdout)["port"] == berth.port


def test_validate_and_missing_files(berth: Berth, tmp_path: Path) -> None:
    assert "is valid" in berth.run("validate", str(EXAMPLES / "hello")).stdout
    missing = berth.run("deploy", str(tmp_path / "nowhere"), check=False)
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr
    project = write_project(tmp_path / "p", echo_spec(), "class Other:\n    pass\n")
    result = berth.run("validate", str(project), check=False)
    assert result.returncode == 2 and "defines no class PythonPredictor (classes found: Other)" in result.stderr


@pytest.mark.parametrize("example", ["hello"])
def test_cortex_yaml_deploys_unchanged(berth: Berth, tmp_path: Path, example: str) -> None:
    cortex = """
    - name: legacy
      kind: RealtimeAPI
      predictor:
        type: python
        path: predictor.py
        image: quay.io/cortexlabs/python-predictor-cpu:0.25.0
      compute:
        cpu: 1
        mem: 200M
      autoscaling:
        min_replicas: 1
        max_replicas: 5
      networking:
        api_gateway: public
    """
    project = write_project(tmp_path / "legacy", cortex, ECHO)
    (project / "berth.yaml").rename(project / "cortex.yaml")
    result = berth.run("deploy", str(project), "--wait")
    assert "predictor.image: ignored locally" in result.stderr
    assert httpx.post(f"{berth.base_url}/legacy", json=1).json()["payload"] == 1


SLOW = """
import time

class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        print(f"working on {payload}", flush=True)
        time.sleep(float(payload))
        return {"slept": payload}
"""


def test_delete_lets_in_flight_requests_finish(berth: Berth, tmp_path: Path) -> None:
    berth.run("deploy", str(write_project(tmp_path / "slow", echo_spec("slow"), SLOW)), "--wait")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(httpx.post, f"{berth.base_url}/slow", json=1.5, timeout=30)
        wait_for(lambda: berth.get("slow")["in_flight"] == 1, 10, "the request to be in flight")
        berth.run("delete", "slow")
        response = pending.result(timeout=30)
    assert response.status_code == 200 and response.json() == {"slept": 1.5}
    assert httpx.post(f"{berth.base_url}/slow", json=0).status_code == 404


def test_logs_follow_prints_new_output(berth: Berth, tmp_path: Path) -> None:
    berth.run("deploy", str(write_project(tmp_path / "slow", echo_spec("slow"), SLOW)), "--wait")
    follower = berth.popen("logs", "slow", "-f")
    try:
        assert follower.stdout is not None
        os.set_blocking(follower.stdout.fileno(), False)
        seen = ""

        def printed() -> bool:
            nonlocal seen
            httpx.post(f"{berth.base_url}/slow", json=0.0)
            seen += follower.stdout.read() or ""  # type: ignore[union-attr]
            return "working on 0.0" in seen

        wait_for(printed, 15, "the predictor's print in `berth logs -f`", interval=0.2)
    finally:
        follower.terminate()
        follower.communicate(timeout=10)


def test_management_socket_is_owner_only(berth: Berth) -> None:
    berth.run("cluster", "up")
    assert (berth.home / "berth.sock").stat().st_mode & 0o777 == 0o600


def test_the_daemon_runs_in_the_foreground_and_stops_on_sigterm(berth: Berth) -> None:
    daemon = berth.popen("cluster", "up", "--foreground")
    try:
        wait_for(lambda: berth.run("cluster", "status", check=False).returncode == 0, 20, "the foreground daemon")
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
        assert berth.run("cluster", "status", check=False).returncode == 5
    finally:
        if daemon.poll() is None:
            daemon.kill()
        daemon.communicate(timeout=10)


def test_the_body_size_limit_is_a_daemon_setting(berth: Berth, tmp_path: Path) -> None:
    bad = berth.run("cluster", "up", "--max-body-size", "lots", check=False)
    assert bad.returncode == 2 and "--max-body-size" in bad.stderr
    berth.run("cluster", "up", "--max-body-size", "2Ki")
    berth.run("deploy", str(write_project(tmp_path / "echo", echo_spec(), ECHO)), "--wait")
    assert httpx.post(f"{berth.base_url}/echo", json="x" * 1000).status_code == 200
    too_big = httpx.post(f"{berth.base_url}/echo", json="x" * 5000)
    assert too_big.status_code == 413 and too_big.headers["x-berth-reason"] == "body-too-large"
