"""API keys with a real daemon, gateway and replica: create, use, revoke, expire, rate-limit, list, delete."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import httpx
from click.testing import CliRunner, Result

from berth.cli.main import cli
from berth.client import Client
from tests.process.harness import Berth, wait_for, write_project

SPEC = """
- name: iris
  kind: RealtimeAPI
  predictor:
    type: python
    path: predictor.py
  autoscaling:
    min_replicas: 1
    max_replicas: 1
  networking:
    api_keys: required
"""

# Counts the calls it gets: refused requests must not move the count.
COUNTING = """
import itertools

class PythonPredictor:
    def __init__(self, config):
        self.calls = itertools.count(1)

    def predict(self, payload, headers):
        return {"calls": next(self.calls),
                "saw_key": any(name.lower() in ("authorization", "x-api-key") for name in headers.keys())}
"""


def deploy(berth: Berth, tmp_path: Path) -> None:
    berth.run("deploy", str(write_project(tmp_path / "p", SPEC, COUNTING)), "--wait")


def key(berth: Berth, *args: str) -> Result:
    """`berth key ...` in-process, against the real daemon: a subprocess per call costs over a second here."""
    return CliRunner().invoke(cli, ["--home", str(berth.home), "key", *args])


def create(berth: Berth, *args: str) -> dict[str, Any]:
    result = key(berth, "create", "iris", *args, "-o", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def post(client: httpx.Client, berth: Berth, headers: dict[str, str] | None = None) -> httpx.Response:
    return client.post(f"{berth.base_url}/iris", json=1, headers=headers or {})


def test_a_key_works_and_revoked_expired_wrong_and_missing_keys_do_not(berth: Berth, tmp_path: Path) -> None:
    deploy(berth, tmp_path)
    ci = create(berth, "--name", "ci")
    short = create(berth, "--expires", "2s")
    assert short["name"] == "key-2" and ci["key"].startswith("bk_")
    with httpx.Client(timeout=10) as client:
        ok = post(client, berth, {"Authorization": f"Bearer {ci['key']}"})
        assert ok.status_code == 200, ok.text
        assert ok.json() == {"calls": 1, "saw_key": False}  # the replica never sees the key
        assert post(client, berth, {"X-API-Key": ci["key"]}).json()["calls"] == 2
        refused = {
            "missing-api-key": post(client, berth),
            "invalid-api-key": post(client, berth, {"X-API-Key": ci["key"][:-3] + "abc"}),
        }
        assert key(berth, "revoke", "iris", "ci").exit_code == 0
        refused["revoked-api-key"] = post(client, berth, {"X-API-Key": ci["key"]})  # right after revoke returns
        served = [2]  # the replica's calls so far: the short key serves until it expires

        def short_refused() -> httpx.Response | None:
            response = post(client, berth, {"X-API-Key": short["key"]})
            if response.status_code == 200:
                served.append(response.json()["calls"])
                return None
            return response

        refused["expired-api-key"] = wait_for(short_refused, timeout=10, what="the 2s key to expire", interval=0.2)
        for reason, response in refused.items():
            assert (response.status_code, response.headers["x-berth-reason"]) == (401, reason), response.text
            assert response.headers["www-authenticate"] == "Bearer" and "berth key" in response.json()["error"]
        # No refused request reached the replica: the next call it gets follows the last one served.
        third = create(berth, "--name", "third")
        assert post(client, berth, {"X-API-Key": third["key"]}).json()["calls"] == served[-1] + 1

    listed = key(berth, "list", "iris")
    listed_json = key(berth, "list", "-o", "json")
    for created in (ci, short, third):
        secret = created["key"].rsplit("_", 1)[-1]
        assert secret not in listed.output and secret not in listed_json.stdout
    rows = {row["name"]: row for row in json.loads(listed_json.stdout)}
    assert rows["ci"]["revoked_at"] is not None and rows["key-2"]["expires_at"] is not None
    assert "ci" in listed.stdout and "key-2" in listed.stdout
    # Per-key counts reach the daemon and the exposition (by name, never the key).
    wait_for(lambda: json.loads(key(berth, "list", "iris", "-o", "json").stdout)[0]["requests"] == 3,
             timeout=10, what="ci's three requests (two served, one refused) in `berth key list`")
    metrics = httpx.get(f"{berth.base_url}/_berth/metrics", timeout=10).text
    assert 'berth_api_key_requests_total{api_name="iris",code_class="2XX",key="ci"} 2.0' in metrics
    assert ci["key"] not in metrics


def test_rate_limit_errors_and_delete(berth: Berth, tmp_path: Path) -> None:
    deploy(berth, tmp_path)
    limited = create(berth, "--name", "slow", "--rate", "1/m")
    with httpx.Client(timeout=10) as client:
        headers = {"X-API-Key": limited["key"]}
        assert post(client, berth, headers).status_code == 200
        over = post(client, berth, headers)
        assert (over.status_code, over.headers["x-berth-reason"]) == (429, "rate-limited")
        assert 1 <= int(over.headers["retry-after"]) <= 60
    # Bad input: exit 2 with what was expected, unknown API exit 3, a name taken exit 4.
    bad = key(berth, "create", "iris", "--expires", "soon")
    assert bad.exit_code == 2 and "such as 30d" in bad.stderr
    bad = key(berth, "create", "iris", "--rate", "100")
    assert bad.exit_code == 2 and "such as 100/s" in bad.stderr
    unknown = key(berth, "create", "nope")
    assert unknown.exit_code == 3 and "no API named 'nope'" in unknown.stderr
    taken = key(berth, "create", "iris", "--name", "slow")
    assert taken.exit_code == 4 and "already has a key named 'slow'" in taken.stderr
    assert key(berth, "revoke", "iris", "nope").exit_code == 3
    # The pretty form prints the key once, alone on stdout, and how to use it.
    pretty = key(berth, "create", "iris")
    assert pretty.stdout.strip().startswith("bk_") and len(pretty.stdout.strip().splitlines()) == 1
    assert "Authorization: Bearer" in pretty.stderr
    deleted = berth.run("delete", "iris")
    assert "2 API key(s)" in deleted.stdout
    assert json.loads(key(berth, "list", "-o", "json").stdout) == []


def test_keys_and_their_counts_survive_a_daemon_restart(berth: Berth, tmp_path: Path) -> None:
    deploy(berth, tmp_path)
    kept, other = create(berth, "--name", "kept"), create(berth, "--name", "other")
    with httpx.Client(timeout=10) as client:
        assert post(client, berth, {"X-API-Key": kept["key"]}).status_code == 200
        wait_for(lambda: json.loads(key(berth, "list", "iris", "-o", "json").stdout)[0]["requests"] == 1,
                 timeout=10, what="kept's request to be counted")
        old_pid = daemon_pid(berth)
        os.kill(old_pid, signal.SIGKILL)
        # The supervisor restarts it; its first table must carry the stored keys, or every key would fail.
        wait_for(lambda: daemon_pid(berth) != old_pid, timeout=15, what="a new daemon")
        assert key(berth, "revoke", "iris", "other").exit_code == 0  # returns once the gateway holds its table
        assert post(client, berth, {"X-API-Key": kept["key"]}).status_code == 200
        assert post(client, berth, {"X-API-Key": other["key"]}).headers["x-berth-reason"] == "revoked-api-key"
    rows = {r["name"]: r for r in json.loads(key(berth, "list", "iris", "-o", "json").stdout)}
    assert rows["kept"]["revoked_at"] is None and rows["other"]["revoked_at"] is not None
    wait_for(lambda: json.loads(key(berth, "list", "iris", "-o", "json").stdout)[0]["requests"] == 2,
             timeout=10, what="kept's count to go on from 1 (nothing lost, nothing counted twice)")


def daemon_pid(berth: Berth) -> int:
    with Client.for_home(berth.home) as daemon:
        return int(daemon.info()["pid"])
