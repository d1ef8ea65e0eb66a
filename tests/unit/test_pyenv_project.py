"""What a project folder asks to have installed: the files found, conda refused, pip.conf in uv's words,
and the input key (the files that decide a build, and nothing else)."""

from __future__ import annotations

from pathlib import Path

import pytest

from berth.errors import ConfigError
from berth.pyenv.project import ProjectDependencies, check_project, forwarded
from berth.pyenv.requirements import BaseEnvironment

BASE = BaseEnvironment(installed={"pydantic": "2.7.1", "click": "8.1.7", "berth": "0.1.0"},
                       runtime=frozenset({"pydantic", "berth"}))
PYPROJECT = '[project]\nname = "p"\nversion = "1"\ndependencies = {deps}\n'


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "berth.yaml").write_text("- name: api\n")
    (folder / "predictor.py").write_text("class PythonPredictor: ...\n")
    return folder


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


@pytest.mark.parametrize(("files", "found", "texts", "lock", "script"), [
    ({}, (), [], False, False),
    ({"requirements.txt": "berthdemo==1.0\n# c\nclick\n"}, ("requirements.txt",), ["berthdemo==1.0", "click"],
     False, False),
    ({"pyproject.toml": PYPROJECT.format(deps='["berthdemo>=1", "click"]')}, ("pyproject.toml",),
     ["berthdemo>=1", "click"], False, False),
    ({"pyproject.toml": PYPROJECT.format(deps="[]")}, (), [], False, False),
    ({"pyproject.toml": "[tool.ruff]\nline-length = 100\n"}, (), [], False, False),
    ({"pyproject.toml": PYPROJECT.format(deps='["berthdemo"]'), "uv.lock": "version = 1\n"}, ("uv.lock",), [],
     True, False),
    ({"uv.lock": "version = 1\n"}, (), [], False, False),  # a lock without its pyproject is not a project's
    ({"dependencies.sh": "echo hi\n"}, ("dependencies.sh",), [], False, True),
    ({"requirements.txt": "click\n", "pyproject.toml": PYPROJECT.format(deps='["numpy"]'), "dependencies.sh": ""},
     ("requirements.txt", "pyproject.toml", "dependencies.sh"), ["click", "numpy"], False, True),
])
def test_find_reads_the_files_a_project_holds(project: Path, files: dict[str, str], found: tuple[str, ...],
                                              texts: list[str], lock: bool, script: bool) -> None:
    wants = ProjectDependencies.find(write(project, files))
    assert wants.files == found and wants.empty is (not found)
    assert [line.text for line in wants.requirements] == texts
    assert (wants.lock is not None, wants.script is not None) == (lock, script)


def test_conda_packages_are_refused_with_what_to_do_instead(project: Path) -> None:
    write(project, {"conda-packages.txt": "numpy\n", "requirements.txt": "click\n"})
    with pytest.raises(ConfigError) as refused:
        ProjectDependencies.find(project)
    assert refused.value.exit_code == 2
    assert "conda-packages.txt" in refused.value.message
    assert "requirements.txt" in (refused.value.hint or "") and "dependencies.sh" in (refused.value.hint or "")


def test_invalid_pyproject_is_a_config_error(project: Path) -> None:
    write(project, {"pyproject.toml": "[project\n"})
    with pytest.raises(ConfigError, match=r"pyproject\.toml: not valid TOML"):
        ProjectDependencies.find(project)


def test_check_names_every_conflicting_line(project: Path) -> None:
    write(project, {"requirements.txt": "click\npydantic<2\nberth==0.0.1\n"})
    with pytest.raises(ConfigError) as refused:
        ProjectDependencies.find(project).check(BASE)
    assert refused.value.problems == [
        "requirements.txt:2: pydantic<2 conflicts with berth's runtime, which runs pydantic 2.7.1",
        "requirements.txt:3: berth==0.0.1 conflicts with berth's runtime, which runs berth 0.1.0"]
    assert "nothing was changed" in (refused.value.hint or "")


def test_check_project_reads_dotenv_and_conflicts_before_anything_is_built(project: Path) -> None:
    write(project, {".env": "A=1\nthis line is broken\n"})
    with pytest.raises(ConfigError, match=r"\.env:2"):
        check_project(project)
    write(project, {".env": "A=1\n", "requirements.txt": "pydantic<2\n"})
    with pytest.raises(ConfigError, match=r"requirements\.txt:1: pydantic<2"):
        check_project(project)


@pytest.mark.parametrize(("text", "expected"), [
    ("[global]\nindex-url = http://a/simple\n", {"UV_INDEX_URL": "http://a/simple"}),
    ("[global]\nextra-index-url =\n    http://b/simple\n    http://c/simple\ntrusted-host = b c\n",
     {"UV_EXTRA_INDEX_URL": "http://b/simple http://c/simple", "UV_INSECURE_HOST": "b c"}),
    ("[global]\nindex-url = http://a/simple\n[install]\nindex-url = http://i/simple\nfind-links = /wheels\n",
     {"UV_INDEX_URL": "http://i/simple", "UV_FIND_LINKS": "/wheels"}),  # [install] is the more specific
    ("[global]\ntimeout = 60\n", {}),
])
def test_pip_conf_is_translated_into_uv_variables(project: Path, text: str, expected: dict[str, str]) -> None:
    assert ProjectDependencies.find(write(project, {"pip.conf": text})).index_variables() == expected


def test_no_pip_conf_no_variables_and_a_broken_one_is_a_config_error(project: Path) -> None:
    assert ProjectDependencies.find(project).index_variables() == {}
    write(project, {"pip.conf": "index-url = http://a/simple\n"})  # no section
    with pytest.raises(ConfigError, match=r"pip\.conf: not a valid ini file"):
        ProjectDependencies.find(project).index_variables()


def test_forwarded_keeps_what_says_where_packages_come_from() -> None:
    shell = {"UV_INDEX_URL": "u", "UV_CACHE_DIR": "c", "PIP_INDEX_URL": "p", "HTTPS_PROXY": "x",
             "SSL_CERT_FILE": "s", "HOME": "/root", "PATH": "/bin", "AWS_SECRET_ACCESS_KEY": "no", "PIP_USER": "1"}
    assert forwarded(shell) == {"UV_INDEX_URL": "u", "UV_CACHE_DIR": "c", "PIP_INDEX_URL": "p",
                                "HTTPS_PROXY": "x", "SSL_CERT_FILE": "s"}


# --- the input key ----------------------------------------------------------------------------------

def key(project: Path, base: BaseEnvironment = BASE) -> str:
    return ProjectDependencies.find(project).input_key(base)


@pytest.mark.parametrize(("name", "text"), [
    ("requirements.txt", "click\nnumpy\n"),
    ("requirements.txt", "click  \n"),  # bytes decide, not meaning: at worst a resolve more
    ("dependencies.sh", "echo other\n"),
    ("uv.toml", "index-url = 'http://x/simple'\n"),
    ("pip.conf", "[global]\nindex-url = http://x/simple\n"),
    ("pyproject.toml", PYPROJECT.format(deps='["numpy"]')),
])
def test_the_input_key_changes_with_each_file_that_decides_the_build(project: Path, name: str, text: str) -> None:
    write(project, {"requirements.txt": "click\n", "dependencies.sh": "echo hi\n"})
    before = key(project)
    write(project, {name: text})
    assert key(project) != before


@pytest.mark.parametrize(("name", "text"), [
    ("predictor.py", "class PythonPredictor:\n    x = 1\n"),
    ("berth.yaml", "- name: other\n"),
    (".env", "SECRET=1\n"),
    ("README.md", "hello\n"),
    ("pyproject.toml", "[tool.ruff]\nline-length = 99\n"),  # no dependencies: not one of the build's files
])
def test_the_input_key_ignores_files_that_do_not_decide_the_build(project: Path, name: str, text: str) -> None:
    write(project, {"requirements.txt": "click\n"})
    before = key(project)
    write(project, {name: text})
    assert key(project) == before


def test_the_input_key_is_the_same_for_two_folders_with_the_same_files(tmp_path: Path) -> None:
    first = write(tmp_path / "a", {"requirements.txt": "click\n", "predictor.py": "A = 1\n"})
    second = write(tmp_path / "b", {"requirements.txt": "click\n", "predictor.py": "B = 2\n"})
    assert key(first) == key(second)


def test_the_input_key_changes_with_berths_environment(project: Path) -> None:
    write(project, {"requirements.txt": "click\n"})
    upgraded = BaseEnvironment(installed={**BASE.installed, "click": "8.1.8"}, runtime=BASE.runtime)
    assert key(project) != key(project, upgraded)


def test_the_input_key_changes_with_an_included_requirements_file(project: Path) -> None:
    write(project, {"requirements.txt": "-r base.txt\n-c pins.txt\n", "base.txt": "berthdemo\n",
                    "pins.txt": "berthdemo==1.0\n"})
    before = key(project)
    write(project, {"pins.txt": "berthdemo==2.0\n"})
    assert key(project) != before


def test_a_pip_conf_that_is_not_utf8_is_a_config_error(project: Path) -> None:
    (project / "pip.conf").write_bytes(b"[global]\nindex-url = http://caf\xe9/simple\n")
    with pytest.raises(ConfigError, match=r"pip\.conf"):
        ProjectDependencies.find(project).index_variables()


def test_a_large_requirements_file_is_read_quickly(project: Path) -> None:
    import time

    write(project, {"requirements.txt": "".join(f"package-{n}>={n % 7}.0  # {n}\n" for n in range(20_000))})
    started = time.monotonic()
    wants = ProjectDependencies.find(project)
    assert len(wants.requirements) == 20_000 and wants.requirements[-1].number == 20_000
    assert BASE.conflicts(wants.requirements) == []
    assert time.monotonic() - started < 20  # generous: a busy 2-core machine
