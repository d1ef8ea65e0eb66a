"""Traffic splitters with a real daemon: exact weighted split, a slow shadow that slows nothing,
sticky users, and the deletes a splitter refuses."""

import json
import statistics
import time
from collections import Counter
from pathlib import Path

import httpx
from click.testing import CliRunner

from berth.cli.main import cli
from berth.client import Client
from tests.process.harness import Berth, wait_for, write_project

PREDICTOR = """
import asyncio

class PythonPredictor:
    def __init__(self, config):
        self.tag = config["tag"]
        self.sleep = float(config.get("sleep", 0))

    async def predict(self, payload):
        await asyncio.sleep(self.sleep)
        return {"tag": self.tag, "payload": payload}
"""


def api(name: str, sleep: float = 0, timeout: str = "600s") -> str:
    return f"""
- name: {name}
  kind: RealtimeAPI
  predictor: {{type: python, path: predictor.py, config: {{tag: {name}, sleep: {sleep}}}}}
  networking: {{timeout: {timeout}}}
"""


def splitter(body: str) -> str:
    return f"""
- name: sp
  kind: TrafficSplitter
  networking: {{endpoint: /split}}
{body}"""


def test_ninety_ten_split_is_exact_and_deletes_are_refused_while_used(berth: Berth, tmp_path: Path) -> None:
    spec = api("a") + api("b") + splitter("""
  apis:
    - {name: a, weight: 90}
    - {name: b, weight: 10}
""")
    deployed = berth.run("deploy", str(write_project(tmp_path / "p", spec, PREDICTOR)), "--wait")
    assert "creating sp" in deployed.stdout
    seen: Counter[str] = Counter()
    with httpx.Client(base_url=berth.base_url) as client:
        for n in range(1000):
            response = client.post("/split", json=n)
            assert response.status_code == 200, response.text
            assert response.json()["tag"] == response.headers["x-berth-api"]
            seen[response.headers["x-berth-api"]] += 1
    assert seen == {"a": 900, "b": 100}

    # Asked through the client, not the CLI: each CLI start costs seconds on a busy machine.
    with Client.for_home(berth.home) as daemon:
        listed = {doc["name"]: doc for doc in daemon.list_splitters()}
        assert listed["sp"]["kind"] == "TrafficSplitter" and listed["sp"]["endpoint"] == "/split"
        detail = wait_for(lambda: d if (d := daemon.get_splitter("sp"))["requests"] == 1000 else None, 10,
                          "splitter counts")
    rows = {row["name"]: row for row in detail["apis"]}
    assert (rows["a"]["weight"], rows["a"]["requests"], rows["a"]["2XX"], rows["a"]["status"]) == (90, 900, 900, "live")
    assert (rows["b"]["requests"], rows["b"]["2XX"]) == (100, 100)
    assert "traffic splitter" in berth.run("get").stdout

    refused = berth.run("delete", "a", check=False)
    assert refused.returncode == 4 and "'sp'" in refused.stderr, refused.stderr
    assert "deleted sp" in berth.run("delete", "sp").stdout


def test_a_slow_shadow_does_not_slow_the_primary_and_users_stick(berth: Berth, tmp_path: Path) -> None:
    spec = api("a") + api("b") + api("slow", sleep=1, timeout="5s") + splitter("""
  split_by: header X-User
  apis:
    - {name: a, weight: 50}
    - {name: b, weight: 50}
    - {name: slow, shadow: true}
""")
    berth.run("deploy", str(write_project(tmp_path / "p", spec, PREDICTOR)), "--wait")
    latencies = []
    with httpx.Client(base_url=berth.base_url) as client:
        for n in range(20):
            started = time.monotonic()
            response = client.post("/split", json=n)
            latencies.append(time.monotonic() - started)
            assert response.status_code == 200 and response.json()["tag"] in ("a", "b")
        assert statistics.median(latencies) < 0.2, latencies
        for user in ("alice", "bob", "carol"):
            answers = {client.post("/split", json=1, headers={"X-User": user}).headers["x-berth-api"]
                       for _ in range(5)}
            assert len(answers) == 1, (user, answers)

    def shadow_done() -> dict | None:
        row = next(r for r in daemon.get_splitter("sp")["apis"] if r["shadow"])
        return row if row["2XX"] == 35 and row["in_flight"] == 0 else None

    with Client.for_home(berth.home) as daemon:
        row = wait_for(shadow_done, 15, "the shadow's copies answered")
    assert (row["requests"], row["dropped"], row["timeouts"]) == (35, 0, 0)


def test_a_splitter_of_apis_not_deployed_is_refused(berth: Berth, tmp_path: Path) -> None:
    spec = api("a") + splitter("""
  apis:
    - {name: a, weight: 50}
    - {name: ghost, weight: 50}
""")
    refused = berth.run("deploy", str(write_project(tmp_path / "p", spec, PREDICTOR)), check=False)
    assert refused.returncode == 3 and "'ghost'" in refused.stderr, refused.stderr
    with Client.for_home(berth.home) as daemon:
        assert daemon.list_apis() == [] and daemon.list_splitters() == []  # nothing was changed


def test_a_splitter_in_front_of_a_keyed_api_requires_keys_too(berth: Berth, tmp_path: Path) -> None:
    keyed = api("a").replace("networking: {", "networking: {api_keys: required, ")
    open_splitter = splitter("""
  apis:
    - {name: a, weight: 100}
""")
    refused = berth.run("deploy", str(write_project(tmp_path / "p", keyed + open_splitter, PREDICTOR)),
                        check=False)
    assert refused.returncode == 2 and "'sp'" in refused.stderr and "api_keys" in refused.stderr, refused.stderr
    with Client.for_home(berth.home) as daemon:
        assert daemon.list_apis() == [] and daemon.list_splitters() == []  # nothing was changed

    keyed_splitter = open_splitter.replace("networking: {endpoint: /split}",
                                           "networking: {endpoint: /split, api_keys: required}")
    berth.run("deploy", str(write_project(tmp_path / "q", keyed + keyed_splitter, PREDICTOR)), "--wait")
    created = CliRunner().invoke(cli, ["--home", str(berth.home), "key", "create", "sp", "-o", "json"])
    assert created.exit_code == 0, created.output
    secret = json.loads(created.stdout)["key"]
    with httpx.Client(base_url=berth.base_url) as client:
        missing = client.post("/split", json=1)
        assert missing.status_code == 401 and missing.headers["x-berth-reason"] == "missing-api-key"
        answered = client.post("/split", json=1, headers={"X-API-Key": secret})
        assert answered.status_code == 200 and answered.headers["x-berth-api"] == "a", answered.text
        # The splitter's key is not the API's: straight to the API it is refused.
        assert client.post("/a", json=1, headers={"X-API-Key": secret}).status_code == 401

    # Its keys go with it: deployed again under that name, the splitter starts with none.
    assert "deleted its 1 API key(s) too" in berth.run("delete", "sp").stdout
    berth.run("deploy", str(write_project(tmp_path / "r", keyed + keyed_splitter, PREDICTOR)), "--wait")
    with Client.for_home(berth.home) as daemon, httpx.Client(base_url=berth.base_url) as client:
        assert daemon.list_keys("sp") == []
        old = client.post("/split", json=1, headers={"X-API-Key": secret})
        assert old.status_code == 401 and old.headers["x-berth-reason"] == "invalid-api-key", old.headers
