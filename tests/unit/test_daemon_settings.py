"""The daemon's settings as `cluster up` asks for them and `cluster status` shows them, and the port hint."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from berth.cli import cluster
from berth.cli.context import CLIContext
from berth.cli.main import cli
from berth.control.daemon import DaemonSettings
from berth.control.launcher import StartOptions
from berth.control.master import Supervisor, SupervisorSettings, free_port_near
from berth.control.paths import Paths
from berth.errors import Conflict, DaemonStartError


def test_cluster_status_json_without_a_daemon_prints_json_and_exits_5(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--home", str(tmp_path), "cluster", "status", "-o", "json"])
    assert result.exit_code == 5
    body = json.loads(result.stdout)
    assert body["running"] is False and body["home"] == str(tmp_path)
    assert "not running" in body["error"] and "berth cluster up" in body["hint"]


def test_every_cluster_up_option_is_a_setting_the_daemon_reports() -> None:
    """`cluster status` shows every setting: the options of `up`, the rows shown and the daemon's report agree."""
    options = {p.name for p in cluster.up.params if p.name not in ("foreground", "env")}
    shown = {name for name, _, _ in cluster.SETTINGS}
    reported = set(DaemonSettings(paths=Paths(Path("/nowhere"))).effective())
    assert options == shown == reported


def test_the_daemon_reports_its_defaults_and_what_it_was_started_with() -> None:
    settings = DaemonSettings(paths=Paths(Path("/nowhere")), port=9000, gateway={
        "max_body_size": 2**20, "max_header_bytes": 4096, "trusted_proxies": ["10.0.0.0/8"]})
    effective = settings.effective()
    assert effective["port"] == 9000 and effective["max_body_size"] == 2**20
    assert effective["max_header_size"] == 4096 and effective["trusted_proxies"] == ["10.0.0.0/8"]
    assert effective["keep_alive_timeout"] == 75.0 and effective["log_retention"] == 24 * 3600


INFO = {"pid": 10, "host": "127.0.0.1", "port": 8888,
        "settings": {**DaemonSettings(paths=Paths(Path("/nowhere"))).effective()}}


def test_settings_that_differ_are_refused_each_named_with_the_command_that_applies_them() -> None:
    asked = {"max_body_size": (2**20, "--max-body-size 1Mi"), "keep_alive_timeout": (75.0, "--keep-alive-timeout 75"),
             "trusted_proxies": (["10.0.0.0/8"], "--trusted-proxy 10.0.0.0/8")}
    with pytest.raises(Conflict) as info:
        cluster._refuse_other_settings(INFO, asked)
    assert info.value.exit_code == 4
    assert "  max_body_size: running 64Mi, asked 1Mi" in info.value.message.splitlines()
    assert "  trusted_proxies: running none, asked 10.0.0.0/8" in info.value.message.splitlines()
    assert "keep_alive_timeout" not in info.value.message  # asked, but the same
    assert info.value.hint is not None and ("`berth cluster down && berth cluster up --max-body-size 1Mi "
                                            "--keep-alive-timeout 75 --trusted-proxy 10.0.0.0/8`") in info.value.hint


def test_settings_asked_as_they_run_are_accepted() -> None:
    cluster._refuse_other_settings(INFO, {"port": (8888, "--port 8888"), "max_body_size": (64 * 2**20, "x")})
    cluster._refuse_other_settings(INFO, {})


def test_free_port_near_skips_ports_in_use() -> None:
    with socket.socket() as first:
        first.bind(("127.0.0.1", 0))
        first.listen()
        port = first.getsockname()[1]
        suggested = free_port_near("127.0.0.1", port)
        assert suggested is not None and suggested > port
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", suggested))  # it really is free


def hold(port: int) -> socket.socket | None:
    """Listen on `port`; None when something else already does (taken all the same)."""
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen()
    except OSError:
        sock.close()
        return None
    return sock


def test_the_port_in_use_hint_suggests_a_port_that_is_free(tmp_path: Path) -> None:
    port = 8899  # the port the hint used to suggest, whether free or not
    held = [hold(port), hold(port + 1)]  # and the obvious next suggestion is taken too
    try:
        supervisor = Supervisor(SupervisorSettings(paths=Paths(tmp_path), port=port))
        with pytest.raises(DaemonStartError) as info:
            supervisor._bind()
        assert f"port {port} on 127.0.0.1 is already in use" in info.value.message
        found = re.search(r"--port (\d+)", info.value.hint or "")
        # near the one asked for, and not one of the taken ones
        assert found is not None and port + 1 < int(found.group(1)) <= port + 100
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", int(found.group(1))))
    finally:
        for sock in held:
            if sock is not None:
                sock.close()


@pytest.mark.parametrize(("value", "problem"), [("lots", "expected a duration"), ("30s", "at least 1m")])
def test_a_bad_log_retention_is_refused_before_anything_starts(tmp_path: Path, value: str, problem: str) -> None:
    result = CliRunner().invoke(cli, ["--home", str(tmp_path), "cluster", "up", "--log-retention", value])
    assert result.exit_code == 2 and "--log-retention" in result.output and problem in result.output
    assert not (tmp_path / "daemon.log").exists()


def test_the_log_size_cap_is_a_setting_reported_and_handed_to_the_daemon(tmp_path: Path) -> None:
    assert DaemonSettings(paths=Paths(Path("/nowhere"))).effective()["max_log_size"] == 64 * 2**20
    options = StartOptions(max_log_size=2**20)
    assert options.argv()[-2:] == ["--max-log-size", "1048576"]
    assert options.daemon_options()[-2:] == ("--max-log-size", "1048576")
    with pytest.raises(Conflict) as info:
        cluster._refuse_other_settings(INFO, {"max_log_size": (2**20, "--max-log-size 1Mi")})
    assert "  max_log_size: running 64Mi, asked 1Mi" in info.value.message.splitlines()


def test_cluster_up_reads_the_log_size_cap_as_a_quantity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[StartOptions] = []
    monkeypatch.setattr(CLIContext, "ensure_daemon", lambda self, options: started.append(options))
    result = CliRunner().invoke(cli, ["--home", str(tmp_path), "cluster", "up", "--max-log-size", "2Mi"])
    assert result.exit_code == 0, result.output
    assert started[0].max_log_size == 2 * 2**20
    result = CliRunner().invoke(cli, ["--home", str(tmp_path), "cluster", "up", "--max-log-size", "lots"])
    assert result.exit_code == 2 and "--max-log-size" in result.output
