"""Every exit code the README documents, from the real CLI against a real daemon, and what `--wait`,
`-o json`, `get -w` and `berth logs` print along the way."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

from tests.process.harness import Berth, write_project

ECHO = """
class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        return payload
"""

INIT_RAISES = """
def helper():
    raise RuntimeError("boom in init")

class PythonPredictor:
    def __init__(self, config):
        helper()

    def predict(self, payload):
        return payload
"""

SLOW_INIT = """
import time

class PythonPredictor:
    def __init__(self, config):
        time.sleep(60)

    def predict(self, payload):
        return payload
"""


def spec(name: str, endpoint: str | None = None, compute: str = "") -> str:
    lines = [f"- name: {name}", "  kind: RealtimeAPI", "  predictor:", "    type: python", "    path: predictor.py"]
    if endpoint:
        lines.append(f"  networking: {{endpoint: {endpoint}}}")
    if compute:
        lines.append(f"  compute: {compute}")
    return "\n".join(lines) + "\n"


def test_without_a_daemon(berth: Berth, tmp_path: Path) -> None:
    assert berth.run("get", check=False).returncode == 5
    assert berth.run("logs", "echo", check=False).returncode == 5
    bad = write_project(tmp_path / "bad", "- name: bad\n  kind: RealtimeAPI\n  predictor: {type: python}\n", ECHO)
    result = berth.run("validate", str(bad), check=False)
    assert result.returncode == 2, result.stderr
    result = berth.run("logs", "echo", "--tail", "-1", check=False)
    assert result.returncode == 2 and "-1 is not in the range x>=0" in result.stderr
    assert not berth.processes()  # nothing above started the daemon


def test_exit_codes_0_1_3_4_and_json_after_waiting(berth: Berth, tmp_path: Path) -> None:
    echo = write_project(tmp_path / "echo", spec("echo"), ECHO)
    result = berth.run("deploy", str(echo), "--wait", "-o", "json", timeout=120)
    assert result.returncode == 0, result.stderr
    [document] = json.loads(result.stdout)  # one document, printed after waiting
    assert document["api"] == "echo" and document["status"] == "live"
    assert document["url"] == f"{berth.base_url}/echo"

    result = berth.run("predict", "echo", str(tmp_path / "missing.json"), check=False)
    assert result.returncode == 1 and "no such file" in result.stderr
    for command in (["get", "nope"], ["refresh", "nope"], ["logs", "nope"], ["describe", "nope"]):
        result = berth.run(*command, check=False)
        assert result.returncode == 3, (command, result.stderr)
        assert "no API named 'nope' (deployed: echo)" in result.stderr, command

    taken = write_project(tmp_path / "taken", spec("other", endpoint="/echo"), ECHO)
    result = berth.run("deploy", str(taken), check=False)
    assert result.returncode == 4, result.stderr
    assert "/echo" in result.stderr


def test_wait_exits_6_for_a_failed_init_with_the_users_frames(berth: Berth, tmp_path: Path) -> None:
    project = write_project(tmp_path / "initraise", spec("initraise"), INIT_RAISES)
    result = berth.run("deploy", str(project), "--wait", timeout=120, check=False)
    assert result.returncode == 6, result.stderr
    assert "error: initraise failed to start: RuntimeError: boom in init" in result.stderr
    assert "initraise is error" not in result.stderr
    assert "fix the predictor and deploy again" in result.stderr
    assert 'raise RuntimeError("boom in init")' in result.stderr

    logs = berth.run("logs", "initraise").stdout
    assert "predictor.py" in logs and "berth frames hidden; --verbose shows them" in logs
    assert "berth/runtime/" not in logs
    assert "berth/runtime/" in berth.run("logs", "initraise", "--verbose").stdout
    berth.run("delete", "initraise")


def test_wait_exits_7_when_the_timeout_runs_out(berth: Berth, tmp_path: Path) -> None:
    project = write_project(tmp_path / "slow", spec("slow"), SLOW_INIT)
    result = berth.run("deploy", str(project), "--wait", "--timeout", "1", "-o", "json", timeout=120, check=False)
    assert result.returncode == 7, result.stderr
    assert "not live after 1s: slow is updating" in result.stderr
    assert "fix the predictor" not in result.stderr
    assert json.loads(result.stdout)[0]["status"] == "updating"
    berth.run("delete", "slow")


def test_exit_8_for_what_does_not_fit_this_machine(berth: Berth, tmp_path: Path) -> None:
    project = write_project(tmp_path / "huge", spec("huge", compute="{cpu: 10000}"), ECHO)
    result = berth.run("deploy", str(project), "--wait", "--timeout", "60", timeout=120, check=False)
    assert result.returncode == 8, result.stderr
    assert "fix the predictor" not in result.stderr
    assert "compute unavailable: compute unavailable" not in result.stderr


def _lines(process: subprocess.Popen[str], count: int, until: str | None = None, timeout: float = 30) -> list[str]:
    """Lines until `count` of them start with `until` (any line when None); the process is killed at the
    deadline, which ends the read."""
    assert process.stdout is not None
    deadline = threading.Timer(timeout, process.kill)
    deadline.start()
    lines: list[str] = []
    try:
        while len([line for line in lines if until is None or line.startswith(until)]) < count:
            line = process.stdout.readline()
            assert line, f"get -w printed no more within {timeout}s: {lines}"
            lines.append(line)
    finally:
        deadline.cancel()
    return lines


def test_get_watch_streams_json_lines_and_plain_refreshes(berth: Berth, tmp_path: Path) -> None:
    echo = write_project(tmp_path / "echo", spec("echo"), ECHO)
    berth.run("deploy", str(echo), "--wait", timeout=120)
    watching = berth.popen("get", "echo", "-w", "-o", "json")
    try:
        lines = _lines(watching, 2)
        assert [json.loads(line)["status"] for line in lines] == ["live", "live"]
    finally:
        watching.kill()
        watching.communicate()
    watching = berth.popen("get", "-w")
    try:
        lines = _lines(watching, 2, until="--- ")
        assert sum(line.split()[:1] == ["echo"] for line in lines) == 1  # the first refresh, whole
        assert not any("\x1b[" in line for line in lines)
    finally:
        watching.kill()
        watching.communicate()
