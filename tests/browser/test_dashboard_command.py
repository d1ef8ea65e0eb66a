"""`berth dashboard`: the address it prints, when it opens a browser, and the real command against a real daemon."""

from __future__ import annotations

import httpx
import pytest

from berth.cli.dashboard import dashboard_url, should_open
from tests.process.harness import Berth


@pytest.mark.parametrize(("host", "url"), [
    ("127.0.0.1", "http://127.0.0.1:8888/_berth/"),
    ("0.0.0.0", "http://127.0.0.1:8888/_berth/"),
    ("::", "http://[::1]:8888/_berth/"),
    ("fe80::1", "http://[fe80::1]:8888/_berth/"),
    ("berth.example", "http://berth.example:8888/_berth/"),
])
def test_the_address_is_one_a_browser_here_reaches(host: str, url: str) -> None:
    assert dashboard_url(host, 8888) == url


@pytest.mark.parametrize(("choice", "tty", "environ", "platform", "opens"), [
    (True, False, {}, "linux", True),             # --open: always tried
    (False, True, {"DISPLAY": ":0"}, "linux", False),  # --no-open: never
    (None, False, {"DISPLAY": ":0"}, "linux", False),  # piped: a script wants the address only
    (None, True, {}, "linux", False),              # a terminal without a graphical session (ssh)
    (None, True, {"DISPLAY": ":0"}, "linux", True),
    (None, True, {"WAYLAND_DISPLAY": "wayland-0"}, "linux", True),
    (None, True, {}, "darwin", True),
])
def test_a_browser_is_opened_only_when_asked_or_when_one_can_be_shown(choice: bool | None, tty: bool,
                                                                      environ: dict[str, str], platform: str,
                                                                      opens: bool) -> None:
    assert should_open(choice, tty, environ, platform) is opens


def test_the_command_prints_the_dashboard_of_the_running_daemon(berth: Berth) -> None:
    down = berth.run("dashboard", check=False)
    assert down.returncode == 5 and "not running" in down.stderr and "berth cluster up" in down.stderr
    berth.run("cluster", "up")
    result = berth.run("dashboard", "--no-open")
    url = result.stdout.strip()
    assert url == f"http://127.0.0.1:{berth.port}/_berth/"
    page = httpx.get(url, timeout=10)
    assert page.status_code == 200 and "<title>berth dashboard</title>" in page.text
