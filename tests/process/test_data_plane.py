"""The data plane outlives the control plane: daemon and gateway kills under load, gateway workers."""

import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests.process.harness import SLEEPY, TWO_REPLICAS, Berth, Load, wait_for, write_project

SPEC = TWO_REPLICAS


def status(berth: Berth) -> dict[str, Any]:
    return json.loads(berth.run("cluster", "status", "-o", "json").stdout)  # type: ignore[no-any-return]


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def two_xx(berth: Berth) -> int:
    return int(berth.get("api")["metrics"]["2XX"])


def test_killing_the_daemon_under_load_fails_no_request_and_it_comes_back_by_itself(
        berth: Berth, tmp_path: Path) -> None:
    berth.run("deploy", str(write_project(tmp_path / "p", SPEC, SLEEPY)), "--wait")
    before = status(berth)
    replicas = sorted(r["pid"] for r in berth.get("api")["replicas"])
    with Load(f"{berth.base_url}/api", clients=4, payload=0.005) as load:
        wait_for(lambda: load.count > 100, 20, "load to flow")
        os.kill(before["pid"], signal.SIGKILL)
        wait_for(lambda: gone(before["pid"]), 10, "the daemon to die")
        sent_at_kill = load.count
        # Nobody runs a berth command: the supervisor restarts the daemon on its own.
        wait_for(lambda: berth.processes() and status_of_new_daemon(berth, before["pid"]), 20,
                 "a new daemon to answer")
        wait_for(lambda: load.count > sent_at_kill + 100, 20, "load to keep flowing")
    assert load.failures() == []
    after = status(berth)
    assert after["gateway_pids"] == before["gateway_pids"]  # the gateway was never restarted
    assert after["supervisor_pid"] == before["supervisor_pid"]
    assert sorted(r["pid"] for r in berth.get("api")["replicas"]) == replicas  # adopted, not restarted
    # Request statistics survive: everything answered before and after the kill is counted.
    wait_for(lambda: two_xx(berth) >= load.count, 10, f"the 2XX count to reach {load.count}")


def status_of_new_daemon(berth: Berth, old_pid: int) -> bool:
    result = berth.run("cluster", "status", "-o", "json", check=False, timeout=10)
    return result.returncode == 0 and json.loads(result.stdout)["pid"] != old_pid


def test_killing_the_gateway_loses_only_what_it_held_and_it_is_replaced_at_once(
        berth: Berth, tmp_path: Path) -> None:
    berth.run("deploy", str(write_project(tmp_path / "p", SPEC, SLEEPY)), "--wait")
    gateway = status(berth)["gateway_pids"][0]
    clients = 4
    with Load(f"{berth.base_url}/api", clients=clients, payload=0.005) as load:
        wait_for(lambda: load.count > 100, 20, "load to flow")
        os.kill(gateway, signal.SIGKILL)
        at_kill = load.count
        wait_for(lambda: load.count > at_kill + 200, 20, "load to flow through the new gateway")
    failures = load.failures()
    # At most the requests in flight at the kill; never a refused connection.
    assert len(failures) <= clients, failures
    assert all(reason != "ConnectError" for _, reason in failures), failures
    replaced = wait_for(lambda: status(berth)["gateway_pids"], 10, "the new gateway to report")
    assert replaced and gateway not in replaced


def test_gateway_workers_share_the_port_and_add_up_their_counts(berth: Berth, tmp_path: Path) -> None:
    berth.run("cluster", "up", "--gateway-workers", "2")
    berth.run("deploy", str(write_project(tmp_path / "p", SPEC, SLEEPY)), "--wait")
    info = wait_for(lambda: (s := status(berth)) and len(s["gateway_pids"]) == 2 and s, 20, "two gateway workers")
    assert info["gateway_workers"] == 2
    sent = 0
    for _ in range(20):  # a new connection each time, so both workers take some
        with httpx.Client() as client:
            assert client.post(f"{berth.base_url}/api", json=0).status_code == 200
        sent += 1
    with Load(f"{berth.base_url}/api", clients=4, payload=0.2) as load:
        # In flight counts add up across workers: four clients, four requests in flight.
        wait_for(lambda: berth.get("api")["in_flight"] == 4, 20, "4 requests in flight across workers")
    wait_for(lambda: two_xx(berth) == sent + load.count, 10, "every request counted once")
    wait_for(lambda: berth.get("api")["in_flight"] == 0, 10, "in flight back to 0")


def test_a_killed_supervisor_takes_its_children_down_and_the_next_command_adopts_the_replicas(
        berth: Berth, tmp_path: Path) -> None:
    berth.run("deploy", str(write_project(tmp_path / "p", SPEC, SLEEPY)), "--wait")
    before = status(berth)
    replicas = sorted(r["pid"] for r in berth.get("api")["replicas"])
    os.kill(before["supervisor_pid"], signal.SIGKILL)
    # Its lifeline closed: the daemon and the gateway stop rather than run unsupervised.
    for pid in (before["pid"], *before["gateway_pids"]):
        wait_for(lambda pid=pid: gone(pid), 40, f"process {pid} to stop without its supervisor")
    assert all(psutil.pid_exists(pid) for pid in replicas)  # the replicas keep running
    berth.run("cluster", "up")
    wait_for(lambda: berth.get("api")["status"] == "live", 30, "the API to be live under a new supervisor")
    assert status(berth)["supervisor_pid"] != before["supervisor_pid"]
    assert sorted(r["pid"] for r in berth.get("api")["replicas"]) == replicas  # adopted, not restarted
    assert httpx.post(f"{berth.base_url}/api", json=0).status_code == 200


def test_networking_timeout_answers_504_and_frees_the_slot(berth: Berth, tmp_path: Path) -> None:
    spec = SPEC.replace("  autoscaling:", "  networking: {timeout: 1s}\n  autoscaling:")
    berth.run("deploy", str(write_project(tmp_path / "p", spec, SLEEPY)), "--wait")
    response = httpx.post(f"{berth.base_url}/api", json=3, timeout=10)
    assert (response.status_code, response.headers["x-berth-reason"]) == (504, "upstream-timeout")
    assert "request_id" in response.json()
    wait_for(lambda: berth.get("api")["in_flight"] == 0, 10, "the timed-out request to leave the in-flight count")
    assert httpx.post(f"{berth.base_url}/api", json=0).status_code == 200


def post_in_background(url: str, payload: object) -> tuple[threading.Thread, list[int]]:
    statuses: list[int] = []

    def send() -> None:
        try:
            statuses.append(httpx.post(url, json=payload, timeout=60).status_code)
        except httpx.HTTPError:
            statuses.append(0)

    thread = threading.Thread(target=send)
    thread.start()
    return thread, statuses


def test_a_stopping_gateway_finishes_what_it_holds(berth: Berth, tmp_path: Path) -> None:
    berth.run("deploy", str(write_project(tmp_path / "p", SPEC, SLEEPY)), "--wait")
    gateway = status(berth)["gateway_pids"][0]
    thread, statuses = post_in_background(f"{berth.base_url}/api", 2)
    wait_for(lambda: berth.get("api")["in_flight"] == 1, 10, "the request to be in flight")
    os.kill(gateway, signal.SIGTERM)
    thread.join(30)
    assert statuses == [200]
    wait_for(lambda: gateway not in status(berth)["gateway_pids"] and status(berth)["gateway_pids"], 20,
             "a new gateway worker")


def test_cluster_down_while_the_daemon_restarts_stops_everything(berth: Berth, tmp_path: Path) -> None:
    berth.run("deploy", str(write_project(tmp_path / "p", SPEC, SLEEPY)), "--wait")
    os.kill(status(berth)["pid"], signal.SIGKILL)
    assert "stopped" in berth.run("cluster", "down").stdout
    wait_for(lambda: not berth.processes(), 30, "every berth process to stop")


def test_a_request_held_for_an_api_at_zero_wakes_it_even_when_the_daemon_was_down(
        berth: Berth, tmp_path: Path) -> None:
    spec = SPEC.replace("min_replicas: 2\n    max_replicas: 2", "min_replicas: 0\n    init_replicas: 0\n"
                        "    max_replicas: 1")
    berth.run("deploy", str(write_project(tmp_path / "p", spec, SLEEPY)))
    daemon = status(berth)["pid"]
    os.kill(daemon, signal.SIGKILL)
    wait_for(lambda: gone(daemon), 10, "the daemon to die")
    thread, statuses = post_in_background(f"{berth.base_url}/api", 0)  # held while no daemon listens
    thread.join(30)
    assert statuses == [200]


def test_a_delete_interrupted_by_a_daemon_kill_still_drains_the_replica(berth: Berth, tmp_path: Path) -> None:
    spec = SPEC.replace("min_replicas: 2\n    max_replicas: 2", "min_replicas: 1\n    max_replicas: 1")
    berth.run("deploy", str(write_project(tmp_path / "p", spec, SLEEPY)), "--wait")
    thread, statuses = post_in_background(f"{berth.base_url}/api", 3)
    wait_for(lambda: berth.get("api")["in_flight"] == 1, 10, "the request to be in flight")
    deleting = berth.popen("delete", "api")
    wait_for(lambda: berth.get("api")["deleting"], 10, "the delete to begin")
    os.kill(status(berth)["pid"], signal.SIGKILL)
    thread.join(30)
    deleting.communicate(timeout=60)
    assert statuses == [200]  # the next daemon drained it rather than killing it
    wait_for(lambda: "api" not in berth.run("get").stdout, 30, "the API to be gone")
