"""Reading spec files: YAML with positions, every problem at once, Cortex compatibility."""

from __future__ import annotations

import copy
import difflib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from berth.config import files
from berth.config.endpoints import EndpointSite, duplicates, endpoint_sites, taken
from berth.config.positions import Marks, Path_, collect_marks, where
from berth.config.project import scan_project
from berth.config.schema import CROSS_FIELD, RealtimeAPI
from berth.config.splitter import TrafficSplitter
from berth.errors import ConfigError, Conflict

SPEC_NAMES = ("berth.yaml", "berth.yml", "cortex.yaml", "cortex.yml")

# Cortex fields that only meant something on AWS or in Docker: accepted, reported, dropped.
IGNORED_FIELDS: dict[tuple[str, ...], str] = {
    ("predictor", "image"): "replicas run in local processes, not container images",
    ("predictor", "tensorflow_serving_image"): "replicas run in local processes",
    ("predictor", "shm_size"): "processes share the host's /dev/shm",
    ("compute", "inf"): "Inferentia chips are not supported",
    ("networking", "api_gateway"): "the gateway is berth's own",
    ("networking", "local_port"): "every API is served by the gateway's port",
    ("node_groups",): "there are no node groups locally",
}

# Enough to unmask rules hidden behind rules of the models they hold; each round removes more.
MAX_REPAIR_ROUNDS = 4
STAND_INS = {"name": "stand-in", "kind": "RealtimeAPI"}


@dataclass(frozen=True)
class SpecFile:
    """A validated spec file: its APIs, where it lives, and what was ignored in it."""

    path: Path
    apis: tuple[RealtimeAPI, ...]
    warnings: tuple[str, ...] = field(default=())
    # Where each API's endpoint is set, to report one another API already uses at its line.
    sites: tuple[EndpointSite, ...] = field(default=(), compare=False)
    splitters: tuple[TrafficSplitter, ...] = field(default=())  # kind: TrafficSplitter entries

    @property
    def root(self) -> Path:
        return self.path.parent


def find_spec(target: Path) -> Path:
    """The spec file for a path that is a spec file or a folder holding one."""
    if target.is_file():
        return target
    if target.is_dir():
        for name in SPEC_NAMES:
            candidate = target / name
            if candidate.is_file():
                return candidate
        raise ConfigError(
            [f"{target}: no berth.yaml (or cortex.yaml) in this folder"],
            hint="create one (see the README's spec reference) or pass the spec file's path",
        )
    raise ConfigError([f"{target}: no such file or folder"])


def load_spec(target: Path | str = ".", deployed: Mapping[str, str] | None = None) -> SpecFile:
    """The spec file at `target`, its files checked. `deployed` ({endpoint: API name}): endpoints
    deployed APIs use, reported with the rest, or alone as a Conflict when the file is otherwise valid."""
    spec_path = find_spec(Path(target)).resolve()
    try:
        text = spec_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{spec_path}: cannot read the file: {exc}"]) from exc
    return parse_spec_text(text, spec_path, check_files=True, deployed=deployed)


def parse_spec_text(text: str, spec_path: Path, check_files: bool = False,
                    deployed: Mapping[str, str] | None = None) -> SpecFile:
    label = spec_path.name
    data, marks = _compose(text, label)
    items, problems = _api_items(data, marks, label)
    root = spec_path.parent
    scan = scan_project(root, spec_path) if check_files else None
    shipped = frozenset(file.relative for file in scan.files) if scan else frozenset()
    warnings: list[str] = []
    apis: list[RealtimeAPI] = []
    splitters: list[TrafficSplitter] = []
    to_fix: list[str] = []
    for index, item in items:
        if item.get("kind") == "TrafficSplitter":  # no predictor, no files: only its own rules
            splitter, found = _validate_api(item, (index,), marks, label, TrafficSplitter)
            problems += found
            if isinstance(splitter, TrafficSplitter):
                splitters.append(splitter)
            continue
        _drop_ignored(item, (index,), marks, label, warnings)
        report = files.check_files(item, root, shipped, (index,), marks, label) if scan else files.FileReport()
        if scan:
            files.relativize(item, root)
        api, found = _validate_api(item, (index,), marks, label)
        problems += [*found, *report.problems]
        to_fix += report.to_fix
        if api is not None:
            apis.append(api)
    sites = endpoint_sites(items, marks, label)
    problems += duplicates(sites) + (scan.problems if scan else [])
    _refuse(problems, taken(sites, deployed or {}), label, to_fix)
    return SpecFile(path=spec_path, apis=tuple(apis), warnings=tuple(warnings), sites=tuple(sites),
                    splitters=tuple(splitters))


def _refuse(problems: list[str], clashes: list[str], label: str, to_fix: list[str]) -> None:
    """Raise every problem at once; endpoints other APIs use alone are a Conflict, not an invalid file."""
    if problems:
        # Name the files to edit: the spec, and predictor files that do not parse.
        fixes = [label] * any(p.startswith(f"{label}:") for p in problems) + list(dict.fromkeys(to_fix))
        what = " and ".join(fixes) if fixes else "the problems above"
        raise ConfigError([*problems, *clashes], hint=f"fix {what} and run the command again; nothing was changed")
    if clashes:
        raise conflict(clashes)


def conflict(clashes: list[str]) -> Conflict:
    """The error for endpoints deployed APIs already use, one line each."""
    if len(clashes) == 1:
        return Conflict(clashes[0], hint="nothing was changed")
    return Conflict(f"{len(clashes)} endpoints are already used by deployed APIs:\n  " + "\n  ".join(clashes),
                    hint="nothing was changed")


def _compose(text: str, label: str) -> tuple[Any, Marks]:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f"{label}:{mark.line + 1}:{mark.column + 1}" if mark else label
        raise ConfigError([f"{at}: invalid YAML: {exc.problem or exc.context}"]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([f"{label}: invalid YAML: {exc}"]) from exc
    finally:
        loader.dispose()
    marks: Marks = {}
    if node is not None:
        collect_marks(node, (), marks)
    return data, marks


def _api_items(
    data: Any, marks: Marks, label: str
) -> tuple[list[tuple[int, dict[str, Any]]], list[str]]:
    if data is None:
        raise ConfigError([f"{label}: the file is empty; expected a list of APIs"])
    if isinstance(data, dict):
        data = [data]  # a single API without the list dash is unambiguous
    if not isinstance(data, list):
        raise ConfigError([f"{label}:1:1: expected a list of APIs (got {type(data).__name__})"])
    items: list[tuple[int, dict[str, Any]]] = []
    problems: list[str] = []
    for index, item in enumerate(data):
        if isinstance(item, dict):
            items.append((index, item))
        else:
            at = where(label, marks, (index,))
            problems.append(f"{at}: expected an API (a mapping with name, kind, predictor...)")
    return items, problems


def _drop_ignored(
    item: dict[str, Any],
    prefix: Path_,
    marks: Marks,
    label: str,
    warnings: list[str],
) -> None:
    for path, why in IGNORED_FIELDS.items():
        parent: Any = item
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if isinstance(parent, dict) and path[-1] in parent:
            del parent[path[-1]]
            dotted = ".".join(path)
            warnings.append(f"{where(label, marks, (*prefix, *path))}: {dotted}: ignored locally ({why})")


def _validate_api(item: dict[str, Any], prefix: Path_, marks: Marks, label: str,
                  model: type[Any] = RealtimeAPI) -> tuple[Any, list[str]]:
    """The API, or every problem in it: pydantic skips a model's cross-field rules while any of its
    fields is invalid, so the invalid values are removed and the rest validated again, keeping
    only rules whose fields were all valid as written."""
    try:
        return model.model_validate(item), []
    except ValidationError as exc:
        errors = exc.errors()
    problems = _describe(errors, prefix, marks, label, removed=set(), model=model)
    removed: set[Path_] = set()
    current = copy.deepcopy(item)
    for _ in range(MAX_REPAIR_ROUNDS):
        fresh = {_remove(current, tuple(error["loc"])) for error in errors if error["loc"]} - removed
        if not fresh:
            break
        removed |= fresh
        # Required top-level fields no rule reads: stand-ins let the API-level rules run.
        current.update({key: value for key, value in STAND_INS.items() if (key,) in fresh})
        try:
            model.model_validate(current)
            break
        except ValidationError as exc:
            errors = exc.errors()
        unmasked = [error for error in errors if error["type"] == CROSS_FIELD]
        problems.extend(p for p in _describe(unmasked, prefix, marks, label, removed, model) if p not in problems)
    return None, problems


def _remove(data: dict[str, Any], loc: Path_) -> Path_:
    """Delete the deepest key on `loc` that the data holds; the path that was actually removed."""
    parent: Any = data
    deepest: tuple[dict[str, Any], str, int] | None = None
    for depth, part in enumerate(loc):
        if isinstance(parent, dict) and part in parent:
            deepest = (parent, str(part), depth)
            parent = parent[part]
        elif isinstance(parent, list) and isinstance(part, int) and 0 <= part < len(parent):
            parent = parent[part]
        else:
            break
    if deepest is None:
        return loc
    container, key, depth = deepest
    del container[key]
    return loc[: depth + 1]


def _describe(errors: list[Any], prefix: Path_, marks: Marks, label: str, removed: set[Path_],
              model: type[BaseModel] = RealtimeAPI) -> list[str]:
    problems = []
    for error in errors:
        loc = tuple(error["loc"])
        if error["type"] == CROSS_FIELD:
            problems.extend(_describe_cross_field(error, loc, prefix, marks, label, removed))
            continue
        at = where(label, marks, (*prefix, *loc))
        dotted = ".".join(str(part) for part in loc) or "api"
        problems.append(f"{at}: {dotted}: {_message(error, loc, model)}")
    return problems


def _describe_cross_field(error: Any, loc: Path_, prefix: Path_, marks: Marks, label: str,
                          removed: set[Path_]) -> list[str]:
    """One line per broken rule, at its first field, unless one of its fields was invalid itself."""
    problems = []
    for message, fields in error["ctx"]["problems"]:
        paths = [(*loc, *(int(part) if part.isdigit() else part for part in field.split("."))) for field in fields]
        if any(_overlap(path, gone) for path in paths for gone in removed):
            continue
        first = paths[0] if paths else loc
        at = where(label, marks, (*prefix, *first))
        dotted = ".".join(str(part) for part in first[:-1]) or "api"
        problems.append(f"{at}: {dotted}: {message}")
    return problems


def _overlap(a: Path_, b: Path_) -> bool:
    shorter = min(len(a), len(b))
    return a[:shorter] == b[:shorter]


def _message(error: Any, loc: Path_, model: type[BaseModel] = RealtimeAPI) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        known = _fields_at(model, loc[:-1])
        guess = difflib.get_close_matches(str(loc[-1]), known, n=1)
        tail = f"did you mean '{guess[0]}'?" if guess else f"expected one of: {', '.join(known)}"
        return f"unknown field ({tail})"
    if kind == "missing":
        return "required field is missing"
    message = str(error["msg"]).removeprefix("Value error, ")
    value = error.get("input")
    if kind != "value_error" and isinstance(value, str | int | float | bool):
        message += f" (got {value!r})"
    return message


def _fields_at(model: type[BaseModel], loc: Path_) -> list[str]:
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue  # an item of a list of models: the model is already unwrapped
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        info = current.model_fields.get(str(part))
        if info is None:
            return []
        current = _model_in(info.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) in (typing.Union, tuple):
        for arg in typing.get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return annotation
