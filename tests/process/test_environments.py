"""Per-API Python environments built with uv at deploy time, against a local index of wheels made in the test.

The daemon is started without any index setting (`berth cluster up`); each `berth deploy` carries
UV_INDEX_URL / UV_CACHE_DIR in its own environment, which the CLI forwards to the daemon's build.
"""

from __future__ import annotations

import concurrent.futures
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.process.harness import Berth, wait_for, write_project
from tests.process.package_index import PackageIndex, build_wheel

VERSION = """
import berthdemo

class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        return {"version": berthdemo.__version__}
"""

PLAIN = """
class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        return {"plain": True}
"""


def spec(name: str, extra: str = "") -> str:
    return f"""
    - name: {name}
      kind: RealtimeAPI
      predictor:
        type: python
        path: predictor.py
    {extra}"""


def project(folder: Path, name: str, requirements: str | None = None, predictor: str = VERSION,
            extra: str = "") -> Path:
    write_project(folder, spec(name, extra), predictor)
    if requirements is not None:
        (folder / "requirements.txt").write_text(requirements)
    return folder


def says_reused(stderr: str) -> bool:
    """A deploy's progress says its environment was there already."""
    return re.search(r"^environment: .*\breus(ed|ing)\b", stderr, re.M) is not None


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PackageIndex]:
    with PackageIndex(tmp_path_factory.mktemp("wheels")) as served:
        served.add("berthdemo", "1.0")
        served.add("berthdemo", "2.0")
        served.add("wants-old-pydantic", "1.0", requires=["pydantic<2"])
        yield served


class Indexed:
    """A berth instance whose daemon knows no index; its deploys name the local one."""

    def __init__(self, berth: Berth, index: PackageIndex, cache: Path) -> None:
        self.berth = berth
        self.index = index
        self.env = {**berth.env, "UV_INDEX_URL": index.url, "UV_CACHE_DIR": str(cache), "UV_NO_CONFIG": "1"}
        self.envs = berth.home / "envs"

    def deploy(self, folder: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
        """`berth deploy FOLDER --wait ARGS` with the index in its environment, and the seconds it took."""
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "berth", "deploy", str(folder), "--wait", *args],
                                env=self.env, capture_output=True, text=True, timeout=120)
        return result, time.monotonic() - started

    def ok(self, folder: Path) -> subprocess.CompletedProcess[str]:
        result, _ = self.deploy(folder)
        assert result.returncode == 0, f"deploy exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        return result

    def built(self) -> list[Path]:
        """The environments under $BERTH_HOME/envs (its dot-folders are bookkeeping, not environments)."""
        return sorted(p for p in self.envs.iterdir() if not p.name.startswith(".")) if self.envs.exists() else []

    def post(self, api: str, payload: object = 0) -> Any:
        response = httpx.post(f"{self.berth.base_url}/{api}", json=payload, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture
def indexed(berth: Berth, index: PackageIndex, tmp_path_factory: pytest.TempPathFactory) -> Indexed:
    for name in [name for name in berth.env if name.startswith(("UV_", "PIP_"))]:
        del berth.env[name]  # the host's own index settings (PIP_FIND_LINKS, ...) stay out of these tests
    berth.run("cluster", "up")  # started here, so only the deploy command's environment names the index
    return Indexed(berth, index, tmp_path_factory.getbasetemp() / "uv-cache")


def test_conflicting_versions_of_one_package_serve_side_by_side(indexed: Indexed, tmp_path: Path) -> None:
    # three deploys at once, two of them asking for the same thing: two environments, each built once
    wants = {"one": "berthdemo==1.0\n", "uno": "berthdemo==1.0\n", "two": "berthdemo==2.0\n"}
    with concurrent.futures.ThreadPoolExecutor(len(wants)) as pool:
        deploys = {name: pool.submit(indexed.deploy, project(tmp_path / name, name, requirements))
                   for name, requirements in wants.items()}
        results = {name: future.result()[0] for name, future in deploys.items()}
    for name, result in results.items():
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"
        assert "environment: " in result.stderr  # progress of the build
    assert indexed.post("one") == indexed.post("uno") == {"version": "1.0"}
    assert indexed.post("two") == {"version": "2.0"}
    assert len(indexed.built()) == 2
    assert sum("+ berthdemo==1.0" in results[name].stderr for name in ("one", "uno")) == 1  # installed once
    for env in indexed.built():
        assert (env / "bin" / "python").exists() and (env / "build.log").exists()


def test_the_same_requirements_reuse_one_environment_in_well_under_a_second(indexed: Indexed,
                                                                               tmp_path: Path) -> None:
    indexed.ok(project(tmp_path / "warm", "warm", predictor=PLAIN))  # replica start paths warmed up
    cold, cold_seconds = indexed.deploy(project(tmp_path / "a", "a", "berthdemo==1.0\n"))
    assert cold.returncode == 0, cold.stderr
    assert len(indexed.built()) == 1

    requests_before = len(indexed.index.requests)
    # another project with the same requirements, then a plain one: the difference is the environment's part
    reused, reused_seconds = indexed.deploy(project(tmp_path / "b", "b", "berthdemo==1.0\n"))
    plain, plain_seconds = indexed.deploy(project(tmp_path / "c", "c", predictor=PLAIN))
    assert (reused.returncode, plain.returncode) == (0, 0), reused.stderr + plain.stderr
    assert says_reused(reused.stderr), reused.stderr
    assert len(indexed.built()) == 1
    assert indexed.index.requests[requests_before:] == []  # nothing resolved or downloaded
    assert indexed.post("b") == {"version": "1.0"}
    assert reused_seconds < plain_seconds + 1.0, (reused_seconds, plain_seconds, cold_seconds)

    # a changed predictor with unchanged requirements: a new version, the same environment
    (tmp_path / "a" / "predictor.py").write_text(VERSION.replace('{"version"', '{"edited": True, "version"'))
    redeployed = indexed.ok(tmp_path / "a")
    assert says_reused(redeployed.stderr) and len(indexed.built()) == 1
    wait_for(lambda: indexed.post("a") == {"edited": True, "version": "1.0"}, 20, "the edited predictor")
    print(f"deploy --wait: cold environment {cold_seconds:.2f}s, reused {reused_seconds:.2f}s, "
          f"no requirements {plain_seconds:.2f}s")


def test_a_failing_requirement_is_the_resolvers_error_and_changes_nothing(indexed: Indexed,
                                                                          tmp_path: Path) -> None:
    folder = project(tmp_path / "demo", "demo", "berthdemo==1.0\n")
    indexed.ok(folder)
    before = indexed.berth.get("demo")
    (folder / "requirements.txt").write_text("berthdemo==9.9\n")
    failed, _ = indexed.deploy(folder)
    assert failed.returncode == 6, failed.stdout + failed.stderr
    assert "berthdemo==9.9" in failed.stderr and "no version of berthdemo" in failed.stderr, failed.stderr
    after = indexed.berth.get("demo")
    assert (after["version"], after["last_update"], after["status"]) == (before["version"],
                                                                        before["last_update"], "live")
    assert [r["id"] for r in after["replicas"]] == [r["id"] for r in before["replicas"]]
    assert indexed.post("demo") == {"version": "1.0"}
    assert len(indexed.built()) == 1  # the failed build left nothing behind


def test_what_berth_cannot_honour_is_refused_before_anything_changes(indexed: Indexed, tmp_path: Path) -> None:
    conda = project(tmp_path / "conda", "conda", predictor=PLAIN)
    (conda / "conda-packages.txt").write_text("conda-forge::numpy\n")
    for command in (["validate", str(conda)], ["deploy", str(conda)]):
        result = subprocess.run([sys.executable, "-m", "berth", *command], env=indexed.env, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        # what to do instead: the packages go to requirements.txt
        assert "conda-packages.txt" in result.stderr and "requirements.txt" in result.stderr, result.stderr

    # a requirement that contradicts berth's runtime pins
    direct = project(tmp_path / "direct", "direct", "# berth's runtime needs pydantic 2\nberthdemo==1.0\npydantic<2\n")
    refused, _ = indexed.deploy(direct)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "requirements.txt:3" in refused.stderr and "pydantic" in refused.stderr, refused.stderr
    assert indexed.berth.get() == [] and indexed.built() == []

    # the same contradiction one step away, in a dependency's metadata: the resolver says why
    indirect = project(tmp_path / "indirect", "indirect", "wants-old-pydantic==1.0\n")
    refused, _ = indexed.deploy(indirect)
    assert refused.returncode == 6, refused.stdout + refused.stderr
    assert "pydantic" in refused.stderr and "wants-old-pydantic" in refused.stderr, refused.stderr
    assert indexed.berth.get() == [] and indexed.built() == []


SECRET = """
import os

class PythonPredictor:
    def __init__(self, config):
        print("predictor up", flush=True)

    def predict(self, payload):
        return {name: os.environ.get(name) for name in ("SECRET_TOKEN", "QUOTED", "SHARED")}
"""


def test_dotenv_values_reach_the_predictor_and_never_a_log(indexed: Indexed, tmp_path: Path) -> None:
    folder = write_project(tmp_path / "secret", spec("secret").replace(
        "path: predictor.py", "path: predictor.py\n        env: {SHARED: from-spec}"), SECRET)
    (folder / ".env").write_text("SECRET_TOKEN=tok-fine-0\nnot a binding tok-broken-9d2\n")
    broken, _ = indexed.deploy(folder)
    assert broken.returncode == 2 and ".env:2" in broken.stderr, broken.stdout + broken.stderr
    assert "tok-" not in broken.stdout + broken.stderr  # a parse error names the line, never its text
    assert indexed.berth.get() == []
    (folder / ".env").write_text("# secrets\nSECRET_TOKEN=tok-5f1e9c-hush\nexport QUOTED=\"two words-7a3\"\n"
                                 "SHARED=from-dotenv-b81\n")
    deployed = indexed.ok(folder)
    assert indexed.post("secret") == {"SECRET_TOKEN": "tok-5f1e9c-hush", "QUOTED": "two words-7a3",
                                      "SHARED": "from-spec"}
    outputs = {
        "deploy": deployed.stdout + deployed.stderr,
        "logs": indexed.berth.run("logs", "secret").stdout,
        "get": indexed.berth.run("get", "secret").stdout + indexed.berth.run("get", "secret", "-o", "json").stdout,
        "describe": indexed.berth.run("describe", "secret").stdout
        + indexed.berth.run("describe", "secret", "-o", "json").stdout,
        "daemon.log": (indexed.berth.home / "daemon.log").read_text(),
    }
    assert "predictor up" in outputs["logs"]
    for where, text in outputs.items():
        for value in ("tok-5f1e9c-hush", "two words-7a3", "from-dotenv-b81"):
            assert value not in text, f"a .env value in the {where} output"

    # a changed .env is a new version
    (folder / ".env").write_text("SECRET_TOKEN=tok-rotated-22\n")
    assert indexed.ok(folder).stdout.startswith("updating secret")
    wait_for(lambda: indexed.post("secret")["SECRET_TOKEN"] == "tok-rotated-22", 20, "the rotated token")


def test_dependencies_sh_runs_once_per_environment_not_per_replica(indexed: Indexed, tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"
    folder = project(tmp_path / "deps", "deps", predictor=PLAIN,
                     extra="  autoscaling: {min_replicas: 2, max_replicas: 2, init_replicas: 2}\n")
    (folder / "dependencies.sh").write_text(f"echo hello-from-dependencies\necho ran >> {marker}\n")
    indexed.ok(folder)
    assert len(indexed.berth.get("deps")["replicas"]) == 2
    old = {r["id"] for r in indexed.berth.get("deps")["replicas"]}
    assert indexed.berth.run("refresh", "deps").stdout.startswith("restarting deps")
    wait_for(lambda: len([r for r in indexed.berth.get("deps")["replicas"] if r["status"] == "ready"]) == 2
             and not {r["id"] for r in indexed.berth.get("deps")["replicas"]} & old, 60, "both replicas replaced")
    assert marker.read_text() == "ran\n"
    logs = indexed.berth.run("logs", "deps").stdout
    assert re.search(r"^\[environment\] .*hello-from-dependencies$", logs, re.M), logs


CORTEX = """
- name: legacy
  kind: RealtimeAPI
  predictor:
    type: python
    path: predictor.py
  compute:
    cpu: 1
    mem: 200M
"""


def test_a_cortex_project_with_its_requirements_deploys_unchanged(indexed: Indexed, tmp_path: Path) -> None:
    folder = tmp_path / "legacy"
    folder.mkdir()
    (folder / "cortex.yaml").write_text(CORTEX)
    (folder / "predictor.py").write_text(VERSION)
    (folder / "requirements.txt").write_text("berthdemo==1.0\n")
    indexed.ok(folder)
    assert indexed.post("legacy") == {"version": "1.0"}


LINKED = """
import linked_a, linked_b

class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        return [linked_a.__version__, linked_b.__version__]
"""


def test_a_project_names_its_own_index_in_uv_toml_or_pip_conf(indexed: Indexed, tmp_path: Path) -> None:
    for name in ("UV_INDEX_URL", "UV_NO_CONFIG"):  # the project's file is all that names the index
        del indexed.env[name]
    files = {"uv.toml": f'[[index]]\nurl = "{indexed.index.url}"\ndefault = true\n',
             "pip.conf": f"[global]\nindex-url = {indexed.index.url}\n"}
    for number, (file, text) in enumerate(files.items()):
        api = f"private{number}"
        (project(tmp_path / api, api, "berthdemo==2.0\n") / file).write_text(text)
        indexed.env["UV_CACHE_DIR"] = str(tmp_path / f"cache{number}")  # nothing known before: the index is asked
        asked = len(indexed.index.requests)
        indexed.ok(tmp_path / api)
        assert any("/simple/berthdemo/" in request for request in indexed.index.requests[asked:]), file
        assert indexed.post(api) == {"version": "2.0"}


def test_pip_conf_find_links_name_every_folder(indexed: Indexed, tmp_path: Path) -> None:
    build_wheel(tmp_path / "links-a", "linked-a", "1.0")
    build_wheel(tmp_path / "links-b", "linked-b", "2.0")
    folder = project(tmp_path / "linked", "linked", "linked-a==1.0\nlinked-b==2.0\n", predictor=LINKED)
    (folder / "pip.conf").write_text(f"[global]\nfind-links =\n    {tmp_path / 'links-a'}\n"
                                     f"    {tmp_path / 'links-b'}\n")
    indexed.ok(folder)
    assert indexed.post("linked") == ["1.0", "2.0"]


def test_pip_index_url_in_the_deploy_environment_is_the_index(indexed: Indexed, tmp_path: Path) -> None:
    """What pip users have set: the build (uv, which reads no PIP_* variable) must use it all the same."""
    folder = project(tmp_path / "pipuser", "pipuser", "berthdemo==2.0\n")
    del indexed.env["UV_INDEX_URL"]
    indexed.env.update({"PIP_INDEX_URL": indexed.index.url, "UV_CACHE_DIR": str(tmp_path / "cache")})
    indexed.ok(folder)
    assert indexed.post("pipuser") == {"version": "2.0"}
