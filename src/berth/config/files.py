"""Checks of the files a spec names, made on the raw API so they are reported with the field errors.

A deploy copies the project folder (the folder holding berth.yaml) and replicas read only that copy,
so every local path the spec names must lie inside the project and be among the files a deploy
copies; the predictor file must also parse and define its class.
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from berth.config.positions import Marks, Path_, dotted, where
from berth.config.signature import batching_conflict

MODEL_KEYS = ("models", "multi_model_reloading")  # Cortex v0.25 used the second name
CLASS_NAMES = {"python": "PythonPredictor", "onnx": "ONNXPredictor"}


@dataclass(frozen=True)
class NamedPath:
    """One local path a spec names: where it is in the API, what it is, and what to do when it is outside."""

    loc: Path_  # relative to the API
    value: str
    kind: str  # "predictor", "python_path" or "model"

    @property
    def field(self) -> str:
        return dotted(self.loc)


@dataclass
class FileReport:
    problems: list[str] = field(default_factory=list)
    to_fix: list[str] = field(default_factory=list)  # files besides the spec the user must edit


# What to do about a path outside the project, by kind.
MOVE_OUT = {
    "predictor": "move the file into it, or load it from an absolute path given in predictor.config",
    "python_path": "move the modules into it, or add their folder to sys.path from an absolute path given "
                   "in predictor.config",
    "model": "move the model into it, give an s3:// URI, or load it from an absolute path given in "
             "predictor.config",
}


def named_paths(item: dict[str, Any]) -> list[NamedPath]:
    """Every local path in a raw API's predictor; s3:// URIs and values of the wrong type are left out."""
    predictor = item.get("predictor")
    if not isinstance(predictor, dict):
        return []
    found = [NamedPath(("predictor", key), predictor[key], kind)
             for key, kind in (("path", "predictor"), ("python_path", "python_path"))
             if isinstance(predictor.get(key), str) and predictor[key]]
    key = next((key for key in MODEL_KEYS if key in predictor), None)
    models = predictor.get(key) if key else None
    if not isinstance(models, dict):
        return found
    base: Path_ = ("predictor", str(key))
    candidates: list[tuple[Path_, object]] = [((*base, "path"), models.get("path")),
                                              ((*base, "dir"), models.get("dir"))]
    if isinstance(models.get("paths"), list):
        candidates += [((*base, "paths", index, "path"), entry.get("path"))
                       for index, entry in enumerate(models["paths"]) if isinstance(entry, dict)]
    found += [NamedPath(loc, value, "model") for loc, value in candidates if isinstance(value, str) and value]
    return found


def inside(root: Path, value: str) -> Path | None:
    """The path `value` names when it lies in the project folder `root` (resolved), else None.

    Judged first on the path as written, since a symlink inside the project that leads out is the
    project scan's to report; then resolved, so an absolute path through a symlinked parent folder
    of the project still counts as inside.
    """
    written = Path(os.path.normpath(root / value))
    if written.is_relative_to(root):
        return written
    try:
        resolved = written.resolve()
    except (OSError, RuntimeError):  # a symlink loop: outside as far as this can tell; the scan names it
        return None
    return resolved if resolved.is_relative_to(root) else None


def relativize(item: dict[str, Any], root: Path) -> None:
    """Rewrite absolute paths inside the project relative to it, so replicas read the deployed copy."""
    for named in named_paths(item):
        if "://" in named.value or not Path(named.value).is_absolute():
            continue
        path = inside(root, named.value)
        if path is not None:
            _set(item, named.loc, path.relative_to(root).as_posix() or ".")


def _set(item: dict[str, Any], loc: Path_, value: str) -> None:
    parent: Any = item
    for part in loc[:-1]:
        parent = parent[part]
    parent[loc[-1]] = value


def check_files(item: dict[str, Any], root: Path, shipped: frozenset[PurePosixPath], prefix: Path_,
                marks: Marks, label: str) -> FileReport:
    """Every problem with the files one raw API names. `shipped`: the files a deploy copies."""
    report = FileReport()
    for named in named_paths(item):
        at = f"{where(label, marks, (*prefix, *named.loc))}: {named.field}"
        if "://" in named.value:
            if named.kind != "model" or not named.value.startswith("s3://") or len(named.value) <= len("s3://"):
                report.problems.append(f"{at}: {named.value}: remote models must be s3://bucket/key URIs")
            continue
        path = inside(root, named.value)
        if path is None:
            report.problems.append(
                f"{at}: {named.value} is outside the project folder {root} (the folder holding {label}), "
                f"and a deploy copies only that folder: {MOVE_OUT[named.kind]}")
            continue
        problem = _missing(named, path, root, shipped, label)
        if problem:
            report.problems.append(f"{at}: {problem}")
        elif named.kind == "predictor":
            _check_source(item, path, root, at, report)
    return report


def _missing(named: NamedPath, path: Path, root: Path, shipped: frozenset[PurePosixPath], label: str) -> str | None:
    relative = PurePosixPath(path.relative_to(root).as_posix())
    if not path.exists() or (named.kind == "predictor" and not path.is_file()):
        what = "folder" if named.kind == "python_path" else "file" if named.kind == "predictor" else ""
        return (f"{what} not found: {path} (paths are relative to the folder holding {label})").lstrip()
    if named.kind == "python_path" and not path.is_dir():
        return f"not a folder: {path}"
    copied = relative in shipped or any(relative in file.parents for file in shipped)
    if not copied and relative != PurePosixPath("."):
        return (f"{relative} is not copied by a deploy, which leaves out hidden names (starting with '.'), "
                f"what .berthignore lists, and empty folders: rename it or take it out of .berthignore, or load "
                f"it from an absolute path given in predictor.config")
    return None


def _check_source(item: dict[str, Any], path: Path, root: Path, at: str, report: FileReport) -> None:
    """The predictor parses and defines the class its type needs."""
    display = path.relative_to(root).as_posix()
    try:
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as exc:
        position, field_name = at.rsplit(": ", 1)
        report.problems.append(f"{display}:{exc.lineno or 1}:{exc.offset or 1}: syntax error in the predictor: "
                               f"{exc.msg} (the file {field_name} names at {position})")
        report.to_fix.append(display)
        return
    except (OSError, UnicodeDecodeError) as exc:
        report.problems.append(f"{at}: cannot read {path}: {exc}")
        return
    kind = item["predictor"].get("type")
    class_name = CLASS_NAMES.get(kind) if isinstance(kind, str) else None
    classes = [node.name for node in tree.body if isinstance(node, ast.ClassDef)]
    if class_name is not None and class_name not in classes:
        found = ", ".join(classes) if classes else "none"
        report.problems.append(f"{at}: {path.name} defines no class {class_name} (classes found: {found})")
    elif class_name is not None and item["predictor"].get("server_side_batching") is not None:
        conflict = batching_conflict(source, class_name)
        if conflict:
            report.problems.append(f"{at}: {conflict}")
