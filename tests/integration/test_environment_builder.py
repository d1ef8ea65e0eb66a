"""The environment builder with the real uv, offline: a local index of wheels written here (one per module),
uv's cache in a temporary folder, a fresh envs/ per test.

Each build is a `uv venv` plus an install of a few small wheels: about a second on a quiet machine."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from berth.errors import ConfigError, EnvironmentFailed
from berth.pyenv.builder import INDEX, Environment, EnvironmentBuilder, python_of
from tests.process.package_index import PackageIndex, build_wheel

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PackageIndex]:
    with PackageIndex(tmp_path_factory.mktemp("wheels")) as served:
        served.add("berthdemo", "1.0")
        served.add("berthdemo", "2.0")
        served.add("needs-old-pydantic", "1.0", requires=["pydantic<2"])
        served.add("iniconfig", "99.0")  # berth's environment holds an old one (a test dependency, not the runtime's)
        served.add("needs-new-iniconfig", "1.0", requires=["iniconfig>=99"])
        yield served


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("uv-cache")


class Builds:
    def __init__(self, tmp_path: Path, index: PackageIndex, cache: Path) -> None:
        self.tmp = tmp_path
        self.envs = tmp_path / "envs"
        self.builder = EnvironmentBuilder(self.envs)
        self.variables = {"UV_INDEX_URL": index.url, "UV_CACHE_DIR": str(cache)}
        self.progress: list[str] = []

    def project(self, name: str, **files: str) -> Path:
        folder = self.tmp / name
        folder.mkdir()
        (folder / "predictor.py").write_text(f"# {name}\n")
        for file, text in files.items():
            path = folder / file.replace("__", ".").replace("_DIR_", "/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return folder

    async def prepare(self, project: Path, dotenv: dict[str, str] | None = None,
                      **variables: str) -> tuple[float, Environment | None]:
        started = time.monotonic()
        environment = await self.builder.prepare(project, {**self.variables, **variables}, dotenv or {},
                                                 self.progress.append)
        return time.monotonic() - started, environment

    async def build(self, project: Path, dotenv: dict[str, str] | None = None, **variables: str) -> Environment:
        environment = (await self.prepare(project, dotenv, **variables))[1]
        assert environment is not None, self.progress
        return environment

    def built(self) -> list[str]:
        if not self.envs.is_dir():
            return []
        return sorted(path.name for path in self.envs.iterdir() if not path.name.startswith("."))


@pytest.fixture
def builds(tmp_path: Path, index: PackageIndex, cache: Path) -> Builds:
    return Builds(tmp_path, index, cache)


def run_python(python: Path, code: str) -> str:
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def requirements(text: str) -> dict[str, str]:
    return {"requirements__txt": text}


async def test_a_build_once_then_reused_without_uv(builds: Builds, index: PackageIndex) -> None:
    project = builds.project("p", **requirements("berthdemo==1.0\nclick\n"))
    first = await builds.build(project)
    assert not first.reused
    assert any(line.startswith("installing 1 package(s)") for line in builds.progress)
    assert any("ready in" in line and "berthdemo" in line for line in builds.progress)
    assert (first.path / "build.log").is_file()
    # the pinned package, berth's runtime and what berth holds (click) import in the environment's python
    assert run_python(first.python, "import berthdemo, berth.runtime, click, sys; "
                      "print(berthdemo.__version__, sys.prefix)") == f"1.0 {first.path}"
    requests = len(index.requests)
    builds.progress.clear()
    took, second = await builds.prepare(project)
    assert second == Environment(first.key, first.path, reused=True)
    assert builds.progress == [f"reusing environment {first.key} (requirements.txt unchanged)"]
    assert took < 1.0 and len(index.requests) == requests


async def test_same_requirements_share_a_key_and_another_pin_gets_another(builds: Builds) -> None:
    one = await builds.build(builds.project("one", **requirements("berthdemo==1.0\n")))
    two = await builds.build(builds.project("two", **requirements("berthdemo==1.0\n")))
    assert two.key == one.key and two.reused
    three = await builds.build(builds.project("three", **requirements("berthdemo==2.0\n")))
    assert three.key != one.key and not three.reused
    assert run_python(three.python, "import berthdemo; print(berthdemo.__version__)") == "2.0"
    assert builds.built() == sorted({one.key, three.key})


async def test_requirements_berths_environment_meets_install_nothing(builds: Builds, index: PackageIndex) -> None:
    requests = len(index.requests)
    project = builds.project("met", **requirements("pydantic>=2\nclick\nnot-here; python_version < '3'\n"))
    _, environment = await builds.prepare(project)
    assert environment is None and builds.built() == [] and len(index.requests) == requests
    assert "nothing to install" in builds.progress[-1]
    _, again = await builds.prepare(project)
    assert again is None and "met by berth's own environment (unchanged)" in builds.progress[-1]


async def test_no_requirement_file_no_environment(builds: Builds) -> None:
    assert (await builds.prepare(builds.project("plain")))[1] is None
    assert builds.progress == [] and not builds.envs.exists()


async def test_a_conflict_with_the_runtime_is_refused_before_anything(builds: Builds) -> None:
    project = builds.project("conflict", **requirements("berthdemo==1.0\npydantic<2\n"))
    with pytest.raises(ConfigError) as refused:
        await builds.prepare(project)
    assert refused.value.problems[0].startswith("requirements.txt:2: pydantic<2 conflicts with berth's runtime")
    assert builds.progress == [] and not builds.envs.exists()


async def test_an_unknown_version_fails_with_uvs_own_words(builds: Builds) -> None:
    with pytest.raises(EnvironmentFailed) as failed:
        await builds.prepare(builds.project("unknown", **requirements("berthdemo==9.9\n")))
    assert "there is no version of berthdemo==9.9" in failed.value.message
    assert failed.value.exit_code == 6 and builds.built() == []
    assert not (builds.envs / INDEX).exists() or not any((builds.envs / INDEX).iterdir())


async def test_a_transitive_conflict_with_the_runtime_fails_naming_it(builds: Builds) -> None:
    with pytest.raises(EnvironmentFailed) as failed:
        await builds.prepare(builds.project("transitive", **requirements("needs-old-pydantic\n")))
    assert "pydantic" in failed.value.message and "needs-old-pydantic" in failed.value.message
    assert builds.built() == []


async def test_a_failing_dependencies_script_leaves_nothing(builds: Builds) -> None:
    project = builds.project("script-fails", dependencies__sh="echo about to fail\nexit 3\n")
    with pytest.raises(EnvironmentFailed) as failed:
        await builds.prepare(project)
    assert "running dependencies.sh failed" in failed.value.message and "about to fail" in failed.value.message
    assert "dependencies.sh: about to fail" in builds.progress
    assert builds.built() == []


async def test_two_concurrent_prepares_build_once(builds: Builds) -> None:
    project = builds.project("together", **requirements("berthdemo==2.0\n"))
    first, second = await asyncio.gather(builds.build(project), builds.build(project))
    assert first.key == second.key and sorted([first.reused, second.reused]) == [False, True]
    assert sum(line.startswith("creating environment") for line in builds.progress) == 1
    assert builds.built() == [first.key]


def _descendants() -> list[psutil.Process]:
    return [child for child in psutil.Process().children(recursive=True) if child.is_running()]


async def test_cancelling_a_build_kills_its_processes_and_leaves_nothing(builds: Builds) -> None:
    before = {child.pid for child in _descendants()}
    project = builds.project("slow", dependencies__sh="echo started\nsleep 30\n")
    task = asyncio.ensure_future(builds.prepare(project))
    deadline = time.monotonic() + 20
    while "dependencies.sh: started" not in builds.progress:
        assert time.monotonic() < deadline and not task.done(), builds.progress
        await asyncio.sleep(0.05)
    assert {child.name() for child in _descendants() if child.pid not in before} & {"bash", "sleep"}
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    left = [child for child in _descendants() if child.pid not in before]
    assert left == []
    assert builds.built() == []
    # and the lock is free again: the same project builds (and is interrupted) without waiting
    (project / "dependencies.sh").write_text("echo quick\n")
    took, environment = await builds.prepare(project)
    assert environment is not None and took < 20


async def test_dependencies_script_sees_dotenv_and_the_environment(builds: Builds) -> None:
    script = ('echo "token=$TOKEN_FROM_DOTENV" > "$VIRTUAL_ENV/seen"\n'
              'python -c "import sys; print(sys.prefix)" >> "$VIRTUAL_ENV/seen"\n'
              'pwd >> "$VIRTUAL_ENV/seen"\n')
    project = builds.project("script", dependencies__sh=script, **requirements("berthdemo==1.0\n"))
    environment = await builds.build(project, dotenv={"TOKEN_FROM_DOTENV": "s3cret"})
    seen = (environment.path / "seen").read_text().splitlines()
    assert seen == ["token=s3cret", str(environment.path), str(project)]
    assert "s3cret" not in "\n".join(builds.progress)
    # the script runs once per build: a second prepare reuses
    await builds.prepare(project, dotenv={"TOKEN_FROM_DOTENV": "s3cret"})
    assert builds.progress.count("running dependencies.sh…") == 1


async def test_a_pip_conf_in_the_project_names_the_index(builds: Builds, index: PackageIndex) -> None:
    project = builds.project("pipconf", **requirements("berthdemo==2.0\n"),
                             pip__conf=f"[global]\nindex-url = {index.url}\n")
    builds.variables = {name: value for name, value in builds.variables.items() if name != "UV_INDEX_URL"}
    environment = await builds.build(project)
    assert python_of(builds.envs, environment.key) is not None


async def test_a_wheel_at_a_relative_path_of_the_project_installs(builds: Builds, tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path / "made", "localthing", "0.3")
    project = builds.project("local", **requirements(f"./vendor/{wheel.path.name}\n"))
    (project / "vendor").mkdir()
    (project / "vendor" / wheel.path.name).write_bytes(wheel.path.read_bytes())
    environment = await builds.build(project)
    assert run_python(environment.python, "import localthing; print(localthing.__version__)") == "0.3"


async def test_a_uv_lock_is_installed_as_locked(builds: Builds, index: PackageIndex) -> None:
    project = builds.project("locked", pyproject__toml='[project]\nname = "locked"\nversion = "0.1"\n'
                                                       'requires-python = ">=3.10"\n'
                                                       'dependencies = ["berthdemo"]\n')
    (project / "pyproject.toml").write_text((project / "pyproject.toml").read_text()
                                            .replace('["berthdemo"]', '["berthdemo<2"]'))
    locked = subprocess.run(["uv", "lock"], cwd=project, capture_output=True, text=True, timeout=60,
                            env={**os.environ, **builds.variables})
    assert locked.returncode == 0, locked.stderr
    environment = await builds.build(project)
    assert run_python(environment.python, "import berthdemo; print(berthdemo.__version__)") == "1.0"


# --- bugs found in review: each fails today ----------------------------------------------------------

async def test_an_editable_local_package_is_built_not_dropped(builds: Builds) -> None:
    """`-e ./localpkg` is installed as a plain local package (an editable one would point into a snapshot the
    collector may remove); its build backend must come from the index, which here has none: uv says so."""
    project = builds.project("editable", **requirements("-e ./localpkg\n"),
                             localpkg_DIR_pyproject__toml='[project]\nname = "localpkg"\nversion = "0.1"\n'
                                                          '[build-system]\nrequires = ["hatchling"]\n'
                                                          'build-backend = "hatchling.build"\n',
                             localpkg_DIR_localpkg_DIR___init____py="")
    with pytest.raises(EnvironmentFailed, match=r"(?s)localpkg.*hatchling"):
        await builds.prepare(project)


async def test_an_index_url_line_in_requirements_is_used_to_install(builds: Builds, index: PackageIndex) -> None:
    project = builds.project("indexline", **requirements(f"--index-url {index.url}\nberthdemo==1.0\n"))
    environ = dict(builds.variables)
    del environ["UV_INDEX_URL"]
    builds.variables = environ
    _, environment = await builds.prepare(project, UV_HTTP_RETRIES="0", HTTPS_PROXY="http://127.0.0.1:9",
                                          NO_PROXY="127.0.0.1")
    assert environment is not None


async def test_a_forwarded_pip_index_url_is_used(builds: Builds, index: PackageIndex) -> None:
    project = builds.project("pipvar", **requirements("berthdemo==2.0\n"))
    environ = dict(builds.variables)
    del environ["UV_INDEX_URL"]
    builds.variables = environ
    _, environment = await builds.prepare(project, PIP_INDEX_URL=index.url, UV_HTTP_RETRIES="0",
                                          HTTPS_PROXY="http://127.0.0.1:9", NO_PROXY="127.0.0.1")
    assert environment is not None


async def test_a_very_long_output_line_does_not_break_the_build(builds: Builds) -> None:
    project = builds.project("longline", dependencies__sh="python3 -c \"print('x' * 100000)\"\n")
    _, environment = await builds.prepare(project)
    assert environment is not None


async def test_editing_an_included_requirements_file_rebuilds(builds: Builds) -> None:
    project = builds.project("included", **requirements("-r more.txt\n"), more__txt="berthdemo==1.0\n")
    await builds.prepare(project)
    (project / "more.txt").write_text("berthdemo==2.0\n")
    environment = await builds.build(project)
    assert run_python(environment.python, "import berthdemo; print(berthdemo.__version__)") == "2.0"


async def test_a_script_reading_dotenv_runs_again_when_dotenv_changes(builds: Builds) -> None:
    project = builds.project("dotenv-script", dependencies__sh='echo "$MODEL_NAME" > "$VIRTUAL_ENV/model"\n')
    await builds.prepare(project, dotenv={"MODEL_NAME": "small"})
    second = await builds.build(project, dotenv={"MODEL_NAME": "large"})
    assert (second.path / "model").read_text().strip() == "large"


async def test_a_met_requirement_still_bounds_the_resolve(builds: Builds) -> None:
    project = builds.project("bounded", **requirements("iniconfig<3\nneeds-new-iniconfig\n"))
    try:
        environment = await builds.build(project)
    except EnvironmentFailed as failed:
        assert "iniconfig" in failed.message
        return
    version = run_python(environment.python, "import importlib.metadata as m; print(m.version('iniconfig'))")
    assert version.startswith("2."), f"requirements.txt says iniconfig<3, the environment has {version}"
