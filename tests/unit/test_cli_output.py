"""What the CLI prints and how it exits: `--wait`'s causes and codes, JSON after waiting and while watching,
tracebacks without berth's frames, unknown names, tables at 80 columns."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from rich.console import Console, Group

from berth.backends.base import APIDocument, Change
from berth.cli import context, inspect, render
from berth.cli.describe import _decisions, _replicas
from berth.cli.main import cli
from berth.cli.tracebacks import BERTH_PACKAGE, marker
from berth.config.loader import SpecFile
from berth.core.status import APIStatus
from berth.errors import BerthError, Conflict, NotFound
from tests.unit.test_cli import EXAMPLES, FakeBackend

BERTH_FRAME = f'  File "{BERTH_PACKAGE}runtime/app.py", line 118, in load\n    self._load_sync()\n'
USER_FRAME = '  File "/snap/predictor.py", line 6, in __init__\n    helper()\n    ^^^^^^^^\n'
TRACEBACK = f"Traceback (most recent call last):\n{BERTH_FRAME}{BERTH_FRAME}{USER_FRAME}RuntimeError: boom\n"


class ScriptedBackend(FakeBackend):
    """Answers `get_api` with the documents of a script, one a call, the last one for ever."""

    def __init__(self, *documents: dict[str, Any]) -> None:
        super().__init__()
        self.script = list(documents)
        self.deploy_error: BerthError | None = None
        self.log_lines: list[str] = ["a line\n"]

    def deploy(self, spec: SpecFile, verify: bool = False, progress: Any = None) -> list[Change]:
        if self.deploy_error is not None:
            raise self.deploy_error
        return super().deploy(spec)

    def get_api(self, name: str) -> APIDocument:
        if name != "hello":
            raise NotFound(f"no API named {name!r}")
        document = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        return {**self._summary(name), "replicas": [], "events": [], "error": None, "traceback": None, **document}

    def logs(self, name: str, follow: bool = False, tail: int = 200) -> Iterator[str]:
        if name != "hello":
            raise NotFound(f"no API named {name!r}")
        yield from self.log_lines

    def refresh(self, name: str) -> Change:
        raise NotFound(f"no API named {name!r}")


def use(monkeypatch: pytest.MonkeyPatch, backend: FakeBackend) -> FakeBackend:
    monkeypatch.setattr(context, "open_backend", lambda env, obj: backend)
    return backend


def run(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--home", str(home), *args], catch_exceptions=False)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return Path(shutil.copytree(EXAMPLES / "hello", tmp_path / "hello"))


# --- deploy --wait: a code and a hint for each cause ---------------------------------------------
def test_wait_that_runs_out_of_timeout_exits_7(tmp_path: Path, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, ScriptedBackend({"status": APIStatus.UPDATING}))
    result = run(tmp_path, "deploy", str(project), "--wait", "--timeout", "0.1")
    assert result.exit_code == 7, result.output
    assert "not live after 0.1s: hello is updating" in result.stderr
    assert "it may still become live" in result.stderr and "fix the predictor" not in result.stderr


def test_wait_that_sees_compute_unavailable_exits_8_with_what_is_short(
        tmp_path: Path, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    error = "compute unavailable: replica a-1 needs 4 cpu, 1.5 of 2 free"
    use(monkeypatch, ScriptedBackend({"status": APIStatus.COMPUTE_UNAVAILABLE, "error": error}))
    result = run(tmp_path, "deploy", str(project), "--wait")
    assert result.exit_code == 8, result.output
    assert "error: hello does not fit this machine: replica a-1 needs 4 cpu, 1.5 of 2 free" in result.stderr
    assert "compute unavailable: compute unavailable" not in result.stderr
    assert "lower its compute" in result.stderr and "fix the predictor" not in result.stderr


def test_wait_that_sees_a_failed_init_exits_6_with_the_users_frames(
        tmp_path: Path, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    failed = {"status": APIStatus.ERROR, "error": "RuntimeError: boom", "traceback": TRACEBACK}
    use(monkeypatch, ScriptedBackend({"status": APIStatus.UPDATING}, failed))
    result = run(tmp_path, "deploy", str(project), "--wait")
    assert result.exit_code == 6, result.output
    assert "error: hello failed to start: RuntimeError: boom" in result.stderr
    assert "hello is error" not in result.stderr
    assert "fix the predictor and deploy again" in result.stderr
    assert "/snap/predictor.py" in result.stderr and "runtime/app.py" not in result.stderr
    assert marker(2) in result.stderr
    verbose = run(tmp_path, "deploy", str(project), "--wait", "--verbose")
    assert verbose.exit_code == 6 and "runtime/app.py" in verbose.stderr


def test_wait_that_sees_out_of_memory_says_to_raise_mem(tmp_path: Path, project: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    error = "out of memory: 900 MiB resident, limit 512Mi"
    use(monkeypatch, ScriptedBackend({"status": APIStatus.ERROR_OOM, "error": error}))
    result = run(tmp_path, "deploy", str(project), "--wait")
    assert result.exit_code == 6
    assert "error: hello ran out of memory: 900 MiB resident, limit 512Mi" in result.stderr
    assert "raise compute.mem" in result.stderr and "fix the predictor" not in result.stderr


def test_wait_that_sees_a_rollback_exits_6(tmp_path: Path, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    error = "rollout of version v2 failed (RuntimeError: boom); version v1 keeps serving"
    use(monkeypatch, ScriptedBackend({"status": APIStatus.ERROR, "error": error}))
    result = run(tmp_path, "deploy", str(project), "--wait")
    assert result.exit_code == 6
    assert f"error: hello: {error}" in result.stderr


# --- deploy --wait -o json: one document, once waiting is over ----------------------------------
def test_deploy_wait_json_prints_the_final_state(tmp_path: Path, project: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, ScriptedBackend({"status": APIStatus.UPDATING}, {"status": APIStatus.LIVE}))
    result = run(tmp_path, "deploy", str(project), "--wait", "-o", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [{"api": "hello", "action": "creating", "version": "v1",
                                          "message": "creating hello", "status": "live",
                                          "url": "http://fake/hello", "error": None}]


def test_deploy_wait_json_on_failure_is_json_too(tmp_path: Path, project: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, ScriptedBackend({"status": APIStatus.ERROR, "error": "RuntimeError: boom"}))
    result = run(tmp_path, "deploy", str(project), "--wait", "-o", "json")
    assert result.exit_code == 6
    [document] = json.loads(result.stdout)
    assert document["status"] == "error" and document["error"] == "RuntimeError: boom"
    assert "hello failed to start" in result.stderr


# --- the other codes a command can exit with ------------------------------------------------------
def test_exit_codes_of_the_backends_errors(tmp_path: Path, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = ScriptedBackend({"status": APIStatus.LIVE})
    use(monkeypatch, backend)
    assert run(tmp_path, "get", "hello").exit_code == 0
    assert run(tmp_path, "predict", "hello", str(tmp_path / "missing.json")).exit_code == 1
    assert run(tmp_path, "get", "nope").exit_code == 3
    backend.deploy_error = Conflict("endpoint /hello is used by API other", hint="pick another endpoint")
    result = run(tmp_path, "deploy", str(project))
    assert result.exit_code == 4 and "endpoint /hello is used by API other" in result.stderr
    (project / "berth.yaml").write_text("- name: hello\n  kind: RealtimeAPI\n  predictor: {type: python}\n")
    assert run(tmp_path, "validate", str(project)).exit_code == 2


# --- get -w: JSON lines, and each refresh when not on a terminal ----------------------------------
def _interrupt_after(monkeypatch: pytest.MonkeyPatch, sleeps: int) -> None:
    calls = []

    def sleep(seconds: float) -> None:
        calls.append(seconds)
        if len(calls) >= sleeps:
            raise KeyboardInterrupt

    monkeypatch.setattr(inspect.time, "sleep", sleep)


def test_get_watch_json_streams_one_document_a_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, ScriptedBackend({"status": APIStatus.UPDATING}, {"status": APIStatus.LIVE}))
    _interrupt_after(monkeypatch, 3)
    result = run(tmp_path, "get", "hello", "-w", "-o", "json")
    assert result.exit_code == 130
    lines = result.stdout.splitlines()
    assert [json.loads(line)["status"] for line in lines] == ["updating", "live", "live"]


def test_get_watch_to_a_file_prints_each_refresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, ScriptedBackend({"status": APIStatus.UPDATING}, {"status": APIStatus.LIVE}))
    _interrupt_after(monkeypatch, 2)
    result = run(tmp_path, "get", "-w")
    assert result.exit_code == 130
    assert result.stdout.count("--- ") == 2
    assert result.stdout.count("up-to-date") == 2
    assert "\x1b[" not in result.stdout  # no cursor movement: a plain log of refreshes


# --- tracebacks: the user's frames; berth's only with --verbose -----------------------------------
def test_logs_hide_berths_frames_unless_verbose(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = ScriptedBackend({"status": APIStatus.LIVE})
    # Split mid-line, as a followed stream arrives.
    text = "starting\nERROR the predictor failed to initialise\n" + TRACEBACK + "next line\n"
    backend.log_lines = [text[:70], text[70:150], text[150:]]
    use(monkeypatch, backend)
    result = run(tmp_path, "logs", "hello")
    assert result.exit_code == 0
    assert result.stdout == ("starting\nERROR the predictor failed to initialise\n"
                             f"Traceback (most recent call last):\n{marker(2)}\n{USER_FRAME}RuntimeError: boom\n"
                             "next line\n")
    assert run(tmp_path, "logs", "hello", "--verbose").stdout == text


def test_get_api_hides_berths_frames_unless_verbose(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, ScriptedBackend({"status": APIStatus.ERROR, "error": "RuntimeError: boom",
                                      "traceback": TRACEBACK}))
    shown = run(tmp_path, "get", "hello").stdout
    assert "/snap/predictor.py" in shown and "runtime/app.py" not in shown and marker(2) in shown
    assert "runtime/app.py" in run(tmp_path, "get", "hello", "-v").stdout


# --- unknown names and bad numbers ----------------------------------------------------------------
@pytest.mark.parametrize("command", ["refresh", "logs", "get"])
def test_an_unknown_api_lists_the_deployed_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                command: str) -> None:
    use(monkeypatch, ScriptedBackend({"status": APIStatus.LIVE}))
    result = run(tmp_path, command, "nope")
    assert result.exit_code == 3
    assert "no API named 'nope' (deployed: hello)" in result.stderr


def test_a_negative_tail_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = use(monkeypatch, ScriptedBackend({"status": APIStatus.LIVE}))
    result = run(tmp_path, "logs", "hello", "--tail", "-1")
    assert result.exit_code == 2
    assert "-1 is not in the range x>=0" in result.stderr
    assert backend.calls == []


# --- tables fit 80 columns, headers whole ---------------------------------------------------------
def _render(table: Any, width: int = 80) -> list[str]:
    console = Console(width=width, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(table)
    console.file.close()
    return console.export_text().splitlines()


def _api(name: str, status: str) -> dict[str, Any]:
    return {"name": name, "status": status, "up_to_date": 0, "requested": 10, "last_update": time.time() - 4000,
            "metrics": {"avg_request_seconds": 0.27, "2XX": 123456, "4XX": 12, "5XX": 3}}


@pytest.mark.parametrize("name", ["hello", "an-api-name-of-thirty-letters-"])
def test_the_api_table_fits_80_columns_with_whole_headers(name: str) -> None:
    apis = [_api(name, APIStatus.ERROR_OOM), _api("gpu", APIStatus.COMPUTE_UNAVAILABLE)]
    lines = _render(render.api_table(apis, time.time(), 80))
    assert all(len(line) <= 80 for line in lines)
    text = "\n".join(lines)
    assert "…" not in text
    for word in ("api", "status", "up-to-date", "requested", "last", "update", "avg", "request", "2XX", "5XX"):
        assert word in lines[0].split() + lines[1].split(), word


def test_the_replica_table_fits_80_columns() -> None:
    replicas = [{"id": "adde6e-dd68aa", "status": "initializing", "pid": 1234567, "restarts": 12, "age": 5000,
                 "last_error": "RuntimeError: boom in init " * 3}]
    lines = _render(render.replica_table(replicas, 80))
    assert all(len(line) <= 80 for line in lines)
    assert lines[0].split() == ["replica", "status", "pid", "restarts", "age", "last", "error"]


def test_the_autoscaler_table_fits_80_columns() -> None:
    decision = {"at": time.time() - 30, "avg_in_flight": 0.3333, "target_replica_concurrency": 1,
                "raw_recommendation": 0.3333, "current_replicas": 1, "downscale_factor_floor": 0,
                "upscale_factor_ceil": 10, "recommendation": 1, "downscale_stabilization_floor": 1,
                "upscale_stabilization_ceil": None, "request": 1}
    lines = _render(_decisions([decision], time.time(), 80))
    assert all(len(line) <= 80 for line in lines) and "…" not in "\n".join(lines)
    assert lines[1].split() == ["ago", "flight", "target", "raw", "now", "floor", "ceil", "recom.", "floor",
                                "ceil", "request"]


def _replica(note: str | None) -> dict[str, Any]:
    return {"id": "adde6e-dd68aa", "status": "initializing", "pid": 1234567, "restarts": 12, "age": 5000,
            "last_error": note, "version": "adde6e4f37", "gpus": [[0, 0.5]], "mem": 2**30,
            "rss": 2**29, "cpu": 0.5, "pending_reason": None}


def test_the_describe_replica_table_fits_80_columns_with_its_notes_below() -> None:
    lines = _render(Group(*_replicas([_replica("RuntimeError: boom in init"), _replica(None)], 80)))
    assert all(len(line) <= 80 for line in lines) and "…" not in "\n".join(lines)
    assert lines[0].split() == ["replica", "version", "status", "pid", "restarts", "age", "compute", "rss"]
    assert "adde6e4f37 " in lines[1]
    assert [line.split()[-2:] for line in lines[1:4]] == [["0.5cpu", "512Mi"], ["1Gi"], ["gpu0:0.5"]]  # wrapped
    assert lines[-1] == "  adde6e-dd68aa: RuntimeError: boom in init"
    wide = _render(Group(*_replicas([_replica("RuntimeError: boom in init")], 160)), width=160)
    assert wide[0].split()[-1] == "note" and wide[1].rstrip().endswith("RuntimeError: boom in init")
