"""`berth cluster up` against a running daemon, and `cluster status`, with real processes."""

from __future__ import annotations

import json
import re
import socket

from tests.process.harness import Berth


def test_cluster_up_with_other_settings_than_the_running_daemon_exits_4_naming_each(berth: Berth) -> None:
    berth.run("cluster", "up", "--max-body-size", "2Ki", "--keep-alive-timeout", "5", "--max-log-size", "2Mi")
    other = berth.run("cluster", "up", "--max-body-size", "1Mi", "--keep-alive-timeout", "5", check=False)
    assert other.returncode == 4, other.stderr
    assert "max_body_size: running 2Ki, asked 1Mi" in other.stderr
    assert "keep_alive_timeout" not in other.stderr.split("settings apply")[0]  # asked, but the same
    # BERTH_PORT counts as asked (the harness sets it): the command that applies them keeps it
    assert (f"berth cluster down && berth cluster up --port {berth.port} --max-body-size 1Mi "
            "--keep-alive-timeout 5`") in other.stderr
    moved = berth.run("--port", str(berth.port + 1), "cluster", "up", check=False)
    assert moved.returncode == 4 and f"port: running {berth.port}, asked {berth.port + 1}" in moved.stderr
    same = berth.run("cluster", "up", "--max-body-size", "2Ki")  # as it runs (and BERTH_PORT, the same port)
    assert "already running" in same.stdout
    assert "already running" in berth.run("cluster", "up").stdout  # nothing asked: nothing differs
    status = berth.run("cluster", "status").stdout
    assert re.search(r"--max-body-size +2Ki", status) and re.search(r"--keep-alive-timeout +5s", status)
    assert re.search(r"--log-retention +24h", status) and re.search(rf"--port +{berth.port}", status)
    assert re.search(r"--max-log-size +2Mi", status)  # through the supervisor to the daemon
    settings = json.loads(berth.run("cluster", "status", "-o", "json").stdout)["settings"]
    assert settings["max_body_size"] == 2048 and settings["keep_alive_timeout"] == 5.0


def test_a_port_in_use_gets_a_free_port_suggested(berth: Berth) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", berth.port))
        taken.listen()
        busy = berth.run("cluster", "up", check=False)
        assert busy.returncode == 5 and f"port {berth.port} on 127.0.0.1 is already in use" in busy.stderr
        found = re.search(r"berth cluster up --port (\d+)", busy.stderr)
        assert found is not None and berth.port < int(found.group(1)) <= berth.port + 100
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", int(found.group(1))))


def test_cluster_status_json_says_when_no_daemon_runs_and_a_stale_socket_is_logged(berth: Berth) -> None:
    result = berth.run("cluster", "status", "-o", "json", check=False)
    assert result.returncode == 5 and json.loads(result.stdout)["running"] is False
    stale = socket.socket(socket.AF_UNIX)  # what a killed daemon leaves
    stale.bind(str(berth.home / "berth.sock"))
    stale.close()
    berth.run("cluster", "up")
    log = (berth.home / "daemon.log").read_text()
    assert f"removing the stale management socket {berth.home / 'berth.sock'}" in log
    assert json.loads(berth.run("cluster", "status", "-o", "json").stdout)["running"] is True
