"""The files a spec names: inside the project folder, copied by a deploy, and reported with the field errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from berth.config import load_spec
from berth.errors import ConfigError

PREDICTOR = "class PythonPredictor:\n    def predict(self, payload):\n        return payload\n"


def project(folder: Path, spec: str, files: dict[str, str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "berth.yaml").write_text(textwrap.dedent(spec).lstrip("\n"))
    for name, text in (files if files is not None else {"predictor.py": PREDICTOR}).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def refused(folder: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_spec(folder)
    return info.value


def api(predictor_lines: str, name: str = "iris") -> str:
    """One API, unindented: lines 1-4 are its head, its predictor's lines follow from line 5."""
    head = f"- name: {name}\n  kind: RealtimeAPI\n  predictor:\n    type: python\n"
    return head + textwrap.indent(predictor_lines, " " * 4)


def test_the_readmes_three_problem_example_reports_all_three(tmp_path: Path) -> None:
    # The file behind README's "Validation" example: a misspelt field, a bad window, a missing file.
    root = project(tmp_path / "iris", """
        - name: iris
          kind: RealtimeAPI
          predictor:
            type: python
            path: predictr.py
            threads_per_proces: 3
          autoscaling:
            min_replicas: 1
            window: 15s
        """)
    error = refused(root)
    assert error.problems == [
        "berth.yaml:6:5: predictor.threads_per_proces: unknown field (did you mean 'threads_per_process'?)",
        "berth.yaml:9:5: autoscaling.window: must be a multiple of 10s (got 15s)",
        f"berth.yaml:5:5: predictor.path: file not found: {root}/predictr.py "
        "(paths are relative to the folder holding berth.yaml)",
    ]
    assert error.hint == "fix berth.yaml and run the command again; nothing was changed"


@pytest.mark.parametrize(
    ("lines", "field", "value", "advice"),
    [
        ("path: ../predictor.py\n", "5:5: predictor.path", "../predictor.py",
         "move the file into it, or load it from an absolute path given in predictor.config"),
        ("path: predictor.py\npython_path: ../lib\n", "6:5: predictor.python_path", "../lib",
         "move the modules into it"),
        ("path: predictor.py\nmodels:\n  path: ../model.onnx\n", "7:7: predictor.models.path", "../model.onnx",
         "move the model into it, give an s3:// URI"),
        ("path: predictor.py\nmodels:\n  dir: sub/../../models\n", "7:7: predictor.models.dir",
         "sub/../../models", "move the model into it"),
        ("path: predictor.py\nmodels:\n  paths:\n    - {name: a, path: ../model.onnx}\n",
         "8:21: predictor.models.paths.0.path", "../model.onnx", "move the model into it"),
        ("path: predictor.py\nmulti_model_reloading:\n  path: ../model.onnx\n",
         "7:7: predictor.multi_model_reloading.path", "../model.onnx", "move the model into it"),
    ],
    ids=["path", "python_path", "models.path", "models.dir", "models.paths", "multi_model_reloading"],
)
def test_paths_leaving_the_project_are_refused(tmp_path: Path, lines: str, field: str, value: str,
                                               advice: str) -> None:
    (tmp_path / "predictor.py").write_text(PREDICTOR)  # present, but outside the project
    (tmp_path / "model.onnx").write_text("")
    (tmp_path / "lib").mkdir()
    (tmp_path / "models").mkdir()
    root = project(tmp_path / "iris", api(lines), {"predictor.py": PREDICTOR, "sub/keep": ""})
    (problem,) = refused(root).problems
    assert problem == (f"berth.yaml:{field}: {value} is outside the project folder {root} (the folder holding "
                       f"berth.yaml), and a deploy copies only that folder: {problem.split('folder: ')[1]}")
    assert advice in problem


def test_absolute_paths_outside_are_refused_like_relative_ones(tmp_path: Path) -> None:
    outside = tmp_path / "predictor.py"
    outside.write_text(PREDICTOR)
    root = project(tmp_path / "iris", api(f"path: {outside}\n"))
    (problem,) = refused(root).problems
    assert problem.startswith(f"berth.yaml:5:5: predictor.path: {outside} is outside the project folder {root}")


def test_absolute_paths_inside_are_kept_relative_so_replicas_read_the_deployed_copy(tmp_path: Path) -> None:
    root = (tmp_path / "iris").resolve()
    project(root, api(f"path: {root}/src/predictor.py\npython_path: {root}/src\nmodels:\n"
                      f"  paths:\n    - {{name: a, path: {root}/model.onnx}}\n    - {{name: b, path: s3://b/k}}\n"),
            {"src/predictor.py": PREDICTOR, "model.onnx": ""})
    predictor = load_spec(root).apis[0].predictor
    assert (predictor.path, predictor.python_path) == ("src/predictor.py", "src")
    assert predictor.models is not None and predictor.models.paths is not None
    assert [p.path for p in predictor.models.paths] == ["model.onnx", "s3://b/k"]


def test_a_path_through_the_project_and_back_stays_inside(tmp_path: Path) -> None:
    root = project(tmp_path / "iris", api("path: src/../predictor.py\npython_path: .\n"))
    assert load_spec(root).apis[0].name == "iris"


def test_a_predictor_a_deploy_would_not_copy_is_refused(tmp_path: Path) -> None:
    root = project(tmp_path / "iris", api("path: .hidden/predictor.py\n") + api("path: skip/p.py\n", "b"),
                   {".hidden/predictor.py": PREDICTOR, "skip/p.py": PREDICTOR, ".berthignore": "skip/\n"})
    hidden, ignored = refused(root).problems
    assert hidden.startswith("berth.yaml:5:5: predictor.path: .hidden/predictor.py is not copied by a deploy")
    assert ignored.startswith("berth.yaml:10:5: predictor.path: skip/p.py is not copied by a deploy")


def test_a_missing_python_path_folder_is_reported(tmp_path: Path) -> None:
    root = project(tmp_path / "iris", api("path: predictor.py\npython_path: lib\n"))
    assert refused(root).problems == [f"berth.yaml:6:5: predictor.python_path: folder not found: {root}/lib "
                                      "(paths are relative to the folder holding berth.yaml)"]


def test_a_syntax_error_says_to_fix_the_predictor_file_at_its_line(tmp_path: Path) -> None:
    root = project(tmp_path / "iris", api("path: src/predictor.py\n"),
                   {"src/predictor.py": "class PythonPredictor:\n    def predict(self\n"})
    error = refused(root)
    assert error.problems == ["src/predictor.py:2:16: syntax error in the predictor: '(' was never closed "
                              "(the file predictor.path names at berth.yaml:5:5)"]
    assert error.hint == "fix src/predictor.py and run the command again; nothing was changed"


def test_every_kind_of_problem_is_reported_with_the_field_errors(tmp_path: Path) -> None:
    spec = (api("path: broken.py\n", "a") + "  autoscaling:\n    window: 15s\n"
            + api("path: helper.py\n", "b") + "  autoscaling:\n    min_replicas: 3\n    max_replicas: 2\n"
            + api("path: missing.py\n", "a") + "  compute:\n    cpu: lots\n"
            + api("path: helper.py\n", "d") + "  networking:\n    endpoint: /b\n")
    root = project(tmp_path / "p", spec, {"broken.py": "def (\n", "helper.py": "class Helper:\n    pass\n"})
    (root / "data").symlink_to(tmp_path)
    error = refused(root)
    assert [problem.split(": ")[0] for problem in error.problems] == [
        "berth.yaml:7:5",  # window
        "broken.py:1:5",  # syntax error
        "berth.yaml:14:5",  # min_replicas > max_replicas, with the other APIs' field errors
        "berth.yaml:12:5",  # no class PythonPredictor
        "berth.yaml:22:5",  # compute.cpu
        "berth.yaml:20:5",  # missing file
        "berth.yaml:27:5",  # no class PythonPredictor
        "berth.yaml:16:3",  # name 'a' twice, though that API has a field error
        "berth.yaml:29:5",  # endpoint /b twice
        "data",  # symlink out of the project
    ]
    assert "defines no class PythonPredictor (classes found: Helper)" in error.problems[3]
    assert "'a' is defined twice" in error.problems[7]
    assert "/b is also the endpoint of 'b'" in error.problems[8]
    assert error.hint == "fix berth.yaml and broken.py and run the command again; nothing was changed"
