"""`berth build` (the Containerfile and build folder it writes, the engine it picks, the command it runs or prints)
with fake engines: small executables on PATH that record their argv. And the runtime images' Dockerfiles,
parsed: their entrypoint, port and user are the pod contract's."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from berth import __version__
from berth.cli.build import INDEX_ARGS, MARKER, build
from berth.cli.context import CLIContext
from berth.errors import BerthError
from berth.runtime import bootstrap

REPO = Path(__file__).resolve().parents[2]
SPEC = """\
- name: iris
  kind: RealtimeAPI
  predictor:
    type: python
    path: predictor.py
"""
FAKE = """#!{python}
import json, os, sys
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps(sys.argv) + "\\n")
if sys.argv[1] == "info":
    sys.exit(int(os.environ.get("FAKE_INFO_EXIT", "0")))
print("STEP 1/6: FROM (fake " + os.path.basename(sys.argv[0]) + ")", flush=True)
sys.exit(int(os.environ.get("FAKE_BUILD_EXIT", "0")))
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "Iris Classifier"
    root.mkdir()
    (root / "berth.yaml").write_text(SPEC)
    (root / "predictor.py").write_text("class PythonPredictor:\n    pass\n")
    (root / "requirements.txt").write_text("berthdemo==1.0\n")
    (root / "data").mkdir()
    (root / "data" / "big.bin").write_bytes(b"\0" * 10)
    (root / "notes.tmp").write_text("left out")
    (root / ".berthignore").write_text("*.tmp\n")
    (root / ".env").write_text("SECRET=1\n")
    return root


@pytest.fixture
def engines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty PATH folder: a test puts fake engines in it. The log of their calls is `calls()`."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", str(folder))
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "calls.jsonl"))
    for name in INDEX_ARGS:
        monkeypatch.delenv(name, raising=False)
    return folder


def fake(folder: Path, name: str) -> Path:
    path = folder / name
    path.write_text(FAKE.format(python=sys.executable))
    path.chmod(0o755)
    return path


def calls(tmp_path: Path) -> list[list[str]]:
    log = tmp_path / "calls.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def run(tmp_path: Path, *args: str) -> Result:
    return CliRunner().invoke(build, list(args), obj=CLIContext(home=tmp_path / "home", port=8888))


def test_the_build_folder_holds_the_projects_files_and_a_containerfile_from_the_runtime_image(
        tmp_path: Path, project: Path, engines: Path) -> None:
    result = run(tmp_path, str(project), "--print")
    assert result.exit_code == 0, result.output
    out = project / ".berth-build"
    copied = sorted(p.relative_to(out / "project").as_posix() for p in (out / "project").rglob("*") if p.is_file())
    assert copied == ["data/big.bin", "predictor.py", "requirements.txt"]  # no .env, .berthignore'd, spec file
    text = (out / "Containerfile").read_text()
    assert text.startswith(MARKER)
    assert f"FROM berth/runtime:{__version__}-cpu\n" in text
    assert "COPY --chown=10001:10001 project/ /srv/berth/project/" in text
    assert "python -m berth.runtime.bootstrap --prepare-only --project /srv/berth/project --envs /opt/berth/envs" in text
    assert f"{bootstrap.PROJECT_VARIABLE}=/srv/berth/project" in text
    assert f"{bootstrap.BAKED_ENVS_VARIABLE}=/opt/berth/envs" in text
    assert text.rstrip().splitlines()[-1] == "USER 10001:10001"
    command = shlex.split(result.stdout.strip())
    assert command[:3] == ["docker", "build", "-f"] and command[3] == str(out / "Containerfile")
    assert command[4] == "-t" and command[5].startswith("iris-classifier:") and command[-1] == str(out)
    assert calls(tmp_path) == []


def test_the_same_files_give_the_same_tag_and_a_changed_file_another(
        tmp_path: Path, project: Path, engines: Path) -> None:
    def tag() -> str:
        return shlex.split(run(tmp_path, str(project), "--print").stdout)[5]

    first = tag()
    assert tag() == first
    (project / "predictor.py").write_text("class PythonPredictor:\n    changed = True\n")
    assert tag() != first


def test_docker_builds_it_and_its_output_streams_through(
        tmp_path: Path, project: Path, engines: Path, capfd: pytest.CaptureFixture[str]) -> None:
    fake(engines, "docker")
    result = run(tmp_path, str(project / "berth.yaml"), "--tag", "registry.local/iris:1")
    assert result.exit_code == 0, result.output
    out = project / ".berth-build"
    assert calls(tmp_path) == [
        [str(engines / "docker"), "info", "--format", "{{.ServerVersion}}"],
        [str(engines / "docker"), "build", "-f", str(out / "Containerfile"), "-t", "registry.local/iris:1", str(out)],
    ]
    assert "STEP 1/6: FROM (fake docker)" in capfd.readouterr().out
    assert result.stdout.strip().splitlines()[-1] == "registry.local/iris:1"
    assert "--image registry.local/iris:1" in result.stderr


def test_a_docker_without_a_daemon_is_passed_over_for_podman(
        tmp_path: Path, project: Path, engines: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake(engines, "docker")
    fake(engines, "podman")
    monkeypatch.setenv("FAKE_INFO_EXIT", "1")
    result = run(tmp_path, str(project), "--out", str(tmp_path / "ctx"))
    assert result.exit_code == 0, result.output
    assert "daemon does not answer" in result.stderr
    assert [call[:2] for call in calls(tmp_path)] == [[str(engines / "docker"), "info"],
                                                      [str(engines / "podman"), "build"]]
    assert (tmp_path / "ctx" / "Containerfile").is_file() and not (project / ".berth-build").exists()


def test_buildah_builds_daemonless_with_chroot_isolation_and_index_settings_as_build_args(
        tmp_path: Path, project: Path, engines: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake(engines, "buildah")
    monkeypatch.setenv("UV_INDEX_URL", "http://index.local/simple")
    result = run(tmp_path, str(project), "--engine", "buildah", "--base", "registry.local/runtime:7")
    assert result.exit_code == 0, result.output
    [command] = calls(tmp_path)
    assert command[1:4] == ["bud", "--isolation", "chroot"]
    assert command[command.index("--build-arg") + 1] == "UV_INDEX_URL"  # the value comes from the environment
    assert "http://index.local" not in " ".join(command)
    text = (project / ".berth-build" / "Containerfile").read_text()
    assert "FROM registry.local/runtime:7\n" in text and "ARG UV_INDEX_URL\n" in text


def test_without_an_engine_it_prints_the_command_to_run_and_succeeds(
        tmp_path: Path, project: Path, engines: Path) -> None:
    result = run(tmp_path, str(project))
    assert result.exit_code == 0, result.output
    assert "no container engine" in result.stderr
    assert shlex.split(result.stdout)[:2] == ["docker", "build"]


def test_print_runs_nothing_even_with_an_engine(tmp_path: Path, project: Path, engines: Path) -> None:
    fake(engines, "docker")
    result = run(tmp_path, str(project), "--print", "--engine", "podman")
    assert result.exit_code == 0, result.output
    assert calls(tmp_path) == [] and shlex.split(result.stdout)[:2] == ["podman", "build"]


def test_a_named_engine_that_is_missing_and_a_failed_build_are_errors(
        tmp_path: Path, project: Path, engines: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run(tmp_path, str(project), "--engine", "podman")
    assert isinstance(result.exception, BerthError) and "podman is not installed" in result.exception.message
    fake(engines, "podman")
    monkeypatch.setenv("FAKE_BUILD_EXIT", "3")
    result = run(tmp_path, str(project), "--engine", "podman")
    assert isinstance(result.exception, BerthError) and "podman exited with 3" in result.exception.message


def test_an_api_with_a_gpu_builds_from_the_cuda_image(tmp_path: Path, project: Path, engines: Path) -> None:
    (project / "berth.yaml").write_text(SPEC + "  compute:\n    gpu: 1\n")
    assert run(tmp_path, str(project), "--print").exit_code == 0
    assert f"FROM berth/runtime:{__version__}-cuda\n" in (project / ".berth-build" / "Containerfile").read_text()


def test_a_containerfile_berth_did_not_write_is_left_alone(tmp_path: Path, project: Path, engines: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "Containerfile").write_text("FROM scratch\n")
    result = run(tmp_path, str(project), "--out", str(out), "--print")
    assert isinstance(result.exception, BerthError) and "not written by `berth build`" in result.exception.message
    assert (out / "Containerfile").read_text() == "FROM scratch\n"


def test_berth_build_is_registered() -> None:
    """Needs the registration line in src/berth/cli/main.py."""
    from berth.cli.main import cli

    assert cli.commands.get("build") is build


# --- the runtime images ------------------------------------------------------------------------------


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile: comments dropped, continuation lines joined."""
    found: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        text = (pending + line).strip()
        pending = ""
        keyword, _, rest = text.partition(" ")
        found.append((keyword.upper(), rest.strip()))
    assert not pending, f"{path.name} ends in a continuation"
    return found


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_the_runtime_images_start_the_bootstrap_as_the_pod_contract_says(name: str) -> None:
    steps = instructions(REPO / "deploy" / name)
    last = {keyword: rest for keyword, rest in steps}  # the last of each kind is the one in effect
    assert json.loads(last["ENTRYPOINT"]) == bootstrap.pod_command()
    assert json.loads(last["CMD"]) == bootstrap.pod_args()
    assert last["EXPOSE"] == str(bootstrap.PORT)
    assert last["USER"] == "10001:10001"  # numeric: runAsNonRoot can check it; the Containerfile's USER too
    assert steps[0][0] == "ARG" and steps[1] == ("FROM", "${" + steps[0][1].split("=")[0] + "}")
    default_base = steps[0][1].split("=", 1)[1]
    assert default_base.startswith("python:3.11-slim" if name == "Dockerfile" else "nvidia/cuda:")
    run = " ".join(rest for keyword, rest in steps if keyword == "RUN")
    assert "pip install" in run and "import berth.runtime.bootstrap, uv" in run
    assert ("[onnx]" in run) if name == "Dockerfile" else ("onnxruntime-gpu" in run)
    copied = [rest for keyword, rest in steps if keyword == "COPY"]
    assert copied == ["pyproject.toml README.md /tmp/berth-src/", "src /tmp/berth-src/src"]
    for folder in ("/srv/berth/work", "/var/cache/berth", "/srv/berth/code"):
        assert folder in run  # made (and owned by the berth user) where the pod mounts volumes
    assert all((REPO / part).exists() for part in ("pyproject.toml", "README.md", "src"))
