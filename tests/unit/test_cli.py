"""The CLI without a daemon: environments, `-e/--env`, and every command going through the `Backend` seam."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from berth.backends import environments
from berth.backends.base import APIDocument, Backend, Change, Deletion
from berth.backends.environments import Environment, Provider, Registry
from berth.cli import context, render
from berth.cli.main import cli
from berth.config.loader import SpecFile
from berth.core.status import APIStatus, ReplicaState

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
COMMANDS = [["get"], ["get", "hello"], ["describe", "hello"], ["refresh", "hello"], ["logs", "hello"],
            ["delete", "hello"], ["deploy", str(EXAMPLES / "hello")], ["validate", str(EXAMPLES / "hello")],
            ["cluster", "status"], ["cluster", "down"], ["get", "--since", "1h"], ["get", "hello", "--since", "1h"],
            ["logs", "hello", "--requests"], ["monitor", "baseline", "hello"], ["dashboard"]]


class FakeBackend:
    """Records what the CLI asks; answers with a scripted status."""

    def __init__(self, status: str = APIStatus.LIVE) -> None:
        self.status = status
        self.calls: list[tuple[str, ...]] = []
        self.closed = False

    def ensure_running(self) -> str | None:
        self.calls.append(("ensure_running",))
        return "started the fake backend"

    def deploy(self, spec: SpecFile, verify: bool = False, progress: Any = None) -> list[Change]:
        self.calls.append(("deploy", *(api.name for api in spec.apis)))
        return [Change(api.name, "creating", "v1", f"creating {api.name}") for api in spec.apis]

    def list_apis(self, window: float | None = None) -> list[APIDocument]:
        self.calls.append(("list_apis",) if window is None else ("list_apis", f"{window:g}"))
        return [self._summary("hello")]

    def get_api(self, name: str, window: float | None = None) -> APIDocument:
        self.calls.append(("get_api", name) if window is None else ("get_api", name, f"{window:g}"))
        return {**self._summary(name), "replicas": [], "events": [], "error": "boom", "traceback": "Traceback…"}

    def describe(self, name: str) -> APIDocument:
        self.calls.append(("describe", name))
        return {**self.get_api(name), "serving_version": "v1", "version": "v1", "in_flight": 0, "versions": []}

    def url(self, name: str) -> str:
        return f"http://fake/{name}"

    def logs(self, name: str, follow: bool = False, tail: int = 200) -> Iterator[str]:
        self.calls.append(("logs", name, str(follow), str(tail)))
        yield "a line\n"

    def request_logs(self, name: str, follow: bool = False, tail: int = 200) -> Iterator[dict[str, Any]]:
        self.calls.append(("request_logs", name, str(follow), str(tail)))
        yield {"ts": 0.0, "request_id": "r1", "status": 200, "seconds": 0.01, "replica": None, "reason": None}

    def pin_baseline(self, name: str, since: float | None, until: float | None) -> dict[str, Any]:
        self.calls.append(("pin_baseline", name, str(since), str(until)))
        return {"api": name, "reference": None, "drift": None}

    def unpin_baseline(self, name: str) -> dict[str, Any]:
        self.calls.append(("unpin_baseline", name))
        return {"api": name, "reference": None, "drift": None}

    def refresh(self, name: str) -> Change:
        self.calls.append(("refresh", name))
        return Change(name, "restarting", "v2", f"restarting {name}")

    def delete(self, name: str) -> Deletion:
        self.calls.append(("delete", name))
        return Deletion(name, stopped=True)

    def close(self) -> None:
        self.closed = True

    def _summary(self, name: str) -> APIDocument:
        return {"name": name, "status": self.status, "up_to_date": 1, "requested": 1, "last_update": 0.0,
                "metrics": {}, "url": self.url(name)}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeBackend:
    backend = FakeBackend()
    monkeypatch.setattr(context, "open_backend", lambda env, obj: backend)
    return backend


def berth(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--home", str(home), *args], catch_exceptions=False)


def test_the_fake_is_a_backend() -> None:
    backend: Backend = FakeBackend()  # mypy checks the protocol here
    assert backend.url("x") == "http://fake/x"


def test_env_list_shows_local_as_the_built_in_default(home: Path) -> None:
    result = berth(home, "env", "list")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["name", "provider", "default"]
    assert lines[1].split() == ["local", "local", "*"]
    assert not home.exists()  # listing writes nothing


def test_env_list_json_and_a_second_environment(home: Path) -> None:
    environments.save(home, Registry().with_environment(Environment("prod", Provider.KUBERNETES)))
    result = berth(home, "env", "list", "-o", "json")
    assert json.loads(result.stdout) == [{"name": "local", "provider": "local", "default": True, "settings": {}},
                                         {"name": "prod", "provider": "kubernetes", "default": False, "settings": {}}]


def test_env_default_persists_the_choice(home: Path) -> None:
    environments.save(home, Registry().with_environment(Environment("prod", Provider.KUBERNETES)))
    assert berth(home, "env", "default").output == "local\n"
    result = berth(home, "env", "default", "prod")
    assert result.exit_code == 0 and "default environment: prod" in result.output
    assert environments.load(home).default == "prod"
    assert berth(home, "env", "default").output == "prod\n"
    assert berth(home, "env", "list").output.splitlines()[2].split() == ["prod", "kubernetes", "*"]


def test_env_default_of_an_unknown_name_changes_nothing(home: Path) -> None:
    result = berth(home, "env", "default", "staging")
    assert result.exit_code == 3
    assert "no environment named 'staging' (known: local)" in result.stderr
    assert "berth env list" in result.stderr
    assert not home.exists()


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_every_command_refuses_an_unknown_env_before_doing_anything(home: Path, fake: FakeBackend,
                                                                     args: list[str]) -> None:
    result = berth(home, *args, "-e", "nope")
    assert result.exit_code == 3, result.output
    assert "no environment named 'nope' (known: local)" in result.stderr
    assert fake.calls == []


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_every_command_takes_env(args: list[str]) -> None:
    result = CliRunner().invoke(cli, [*args, "--help"])
    assert "-e, --env NAME" in result.output


def test_a_kubernetes_environment_without_a_kubeconfig_is_a_clear_error(home: Path, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    environments.save(home, Registry().with_environment(Environment("prod", Provider.KUBERNETES)))
    result = berth(home, "get", "-e", "prod")
    assert result.exit_code == 1
    assert "environment 'prod': cannot use the kubeconfig" in result.stderr
    result = berth(home, "cluster", "status", "-e", "prod")
    assert result.exit_code == 1 and "manages the local daemon" in result.stderr


def test_the_default_environment_is_used_without_env(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    environments.save(home, Registry().with_environment(Environment("prod", Provider.KUBERNETES))
                      .with_default("prod"))
    chosen: list[Environment] = []

    def open_backend(env: Environment, obj: Any) -> Backend:
        chosen.append(env)
        return FakeBackend()

    monkeypatch.setattr(context, "open_backend", open_backend)
    assert berth(home, "get").exit_code == 0
    assert berth(home, "get", "-e", "local").exit_code == 0
    assert [env.name for env in chosen] == ["prod", "local"]


def test_get_and_describe_go_through_the_backend(home: Path, fake: FakeBackend) -> None:
    assert "hello" in berth(home, "get").output
    assert "endpoint: http://fake/hello" in berth(home, "get", "hello").output
    assert "endpoint: http://fake/hello" in berth(home, "describe", "hello").output
    assert fake.calls == [("list_apis",), ("get_api", "hello"), ("describe", "hello"), ("get_api", "hello")]
    assert fake.closed


def test_deploy_starts_the_backend_and_prints_its_changes(home: Path, fake: FakeBackend, tmp_path: Path) -> None:
    project = shutil.copytree(EXAMPLES / "hello", tmp_path / "hello")
    result = berth(home, "deploy", str(project), "-o", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [{"api": "hello", "action": "creating", "version": "v1",
                                          "message": "creating hello"}]
    assert "started the fake backend" in result.stderr
    assert fake.calls == [("ensure_running",), ("list_apis",), ("deploy", "hello")]


def test_deploy_wait_stops_at_a_terminal_status(home: Path, fake: FakeBackend, tmp_path: Path) -> None:
    project = shutil.copytree(EXAMPLES / "hello", tmp_path / "hello")
    assert "hello is live at http://fake/hello" in berth(home, "deploy", str(project), "--wait").output
    fake.status = APIStatus.ERROR_OOM
    result = berth(home, "deploy", str(project), "--wait")
    assert result.exit_code == 6
    assert "hello ran out of memory: boom" in result.stderr


def test_refresh_logs_and_delete_go_through_the_backend(home: Path, fake: FakeBackend) -> None:
    assert "restarting hello (version v2)" in berth(home, "refresh", "hello").output
    assert berth(home, "logs", "hello", "--tail", "5").output == "a line\n"
    assert berth(home, "delete", "hello").output == "deleted hello\n"
    assert fake.calls == [("refresh", "hello"), ("logs", "hello", "False", "5"), ("delete", "hello")]


def test_every_status_core_defines_has_a_colour() -> None:
    for status in [*APIStatus, *ReplicaState]:
        assert render.styled(status) != str(status), status
