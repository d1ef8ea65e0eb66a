"""The README and the code cannot drift apart silently: every spec field, CLI flag and exit code it
documents exists, and everything the examples import is installed by `pip install -e '.[examples]'`."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
from click.testing import CliRunner
from packaging.requirements import Requirement
from pydantic import BaseModel

import berth.errors
from berth.cli.main import cli
from berth.config.schema import RealtimeAPI

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def _section(title: str) -> str:
    start = README.index(f"\n## {title}")
    end = README.find("\n## ", start + 4)
    return README[start:end if end != -1 else None]


# --- spec fields ------------------------------------------------------------------------------
def _documented_fields() -> set[str]:
    """Field paths of the README's annotated spec, commented-out alternatives (`# paths: ...`) included."""
    block = re.search(r"```yaml\n(.*?)```", _section("The spec (`berth.yaml`)"), re.S)
    assert block is not None, "the spec section has no yaml block"
    stack: list[tuple[int, str]] = []
    fields: set[str] = set()
    for line in block.group(1).splitlines():
        found = re.match(r"^(\s*)(?:- )?(#\s*)?([a-z_]+):", line)
        if found is None:
            continue
        indent = len(found.group(1)) + (2 if line.lstrip().startswith("- ") else 0)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([name for _, name in stack] + [found.group(3)])
        fields.add(path)
        stack.append((indent, found.group(3)))
    return fields


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) is tuple:  # a list of items (models.paths) is documented inline
        return None
    for arg in get_args(annotation):
        model = _nested_model(arg)
        if model is not None:
            return model
    return None


def _schema_fields(model: type[BaseModel], prefix: str = "") -> set[str]:
    fields: set[str] = set()
    for name, info in model.model_fields.items():
        path = prefix + name
        fields.add(path)
        nested = _nested_model(info.annotation)
        if nested is not None:
            fields |= _schema_fields(nested, path + ".")
    return fields


def test_every_spec_field_is_documented_and_every_documented_field_exists() -> None:
    documented, schema = _documented_fields(), _schema_fields(RealtimeAPI)
    assert documented - schema == set(), "the README documents fields the schema does not have"
    assert schema - documented == set(), "the schema has fields the README does not document"


# --- CLI flags --------------------------------------------------------------------------------
def _cli_rows() -> list[tuple[list[str], set[str]]]:
    rows = []
    for line in _section("The CLI").splitlines():
        cells = line.split("|")
        if len(cells) < 4 or not cells[1].strip().startswith("`berth "):
            continue
        usage = cells[1].strip().strip("`")
        command = [word for word in usage.split()[1:] if re.fullmatch(r"[a-z]+", word)]
        command = command[:2] if command[:1] in (["cluster"], ["env"], ["monitor"], ["key"]) else command[:1]
        flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*|-[a-zA-Z])(?![\w-])", cells[1] + cells[2]))
        rows.append((command, flags))
    return rows


@pytest.mark.parametrize(("command", "flags"), _cli_rows(), ids=lambda value: " ".join(sorted(value)))
def test_every_documented_flag_is_in_the_commands_help(command: list[str], flags: set[str]) -> None:
    result = CliRunner().invoke(cli, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    missing = {flag for flag in flags if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", result.output)}
    assert missing == set(), f"`berth {' '.join(command)} --help` lacks flags the README documents"


def test_the_cli_table_documents_every_command() -> None:
    documented = {" ".join(command) for command, _ in _cli_rows()}
    for name, command in cli.commands.items():
        subcommands = getattr(command, "commands", None)
        expected = {f"{name} {sub}" for sub in subcommands} if subcommands else {name}
        assert expected <= documented, f"`berth {name}` is not in the README's CLI table"


# --- exit codes -------------------------------------------------------------------------------
def _documented_exit_codes() -> dict[int, str]:
    sentence = re.search(r"Exit codes: (.*?)\.\n", _section("The CLI"), re.S)
    assert sentence is not None, "the CLI section has no `Exit codes:` sentence"
    text = " ".join(sentence.group(1).split())
    return {int(code): meaning.strip() for code, meaning in re.findall(r"(?:^|, )(\d+) ((?:[^,(]|\([^)]*\))+)", text)}


def _error_classes(cls: type[berth.errors.BerthError]) -> list[type[berth.errors.BerthError]]:
    return [cls] + [sub for child in cls.__subclasses__() for sub in _error_classes(child)]


def test_documented_exit_codes_are_exactly_the_error_trees() -> None:
    in_code = {cls.exit_code for cls in _error_classes(berth.errors.BerthError)} | {0}
    assert set(_documented_exit_codes()) == in_code


def test_every_documented_exit_code_is_asserted_by_a_test() -> None:
    sources = "\n".join(path.read_text() for path in (REPO / "tests").rglob("test_*.py")
                        if path.name != Path(__file__).name)
    untested = [code for code in _documented_exit_codes() if code > 1 and not re.search(
        rf"(?:exit_code|returncode|\.code)\s*==\s*{code}\b|exit(?:_code)?={code}\b|expect_exit={code}\b", sources)]
    assert untested == [], "exit codes the README documents that no test asserts"


# --- the examples' dependencies ---------------------------------------------------------------
def _own_requirements(path: Path) -> bool:
    """An example with its own requirements.txt gets its own environment at deploy: [examples] need not."""
    return any((folder / "requirements.txt").is_file() for folder in path.parents if REPO / "examples" in folder.parents)


def _example_imports() -> set[str]:
    modules: set[str] = set()
    # build_*.py regenerate a shipped artifact and say what they need themselves (skl2onnx).
    sources = [path.read_text() for path in (REPO / "examples").rglob("*.py")
               if not path.name.startswith("build_") and not _own_requirements(path)]
    for readme in (REPO / "examples").rglob("README.md"):
        sources += re.findall(r"```python\n(.*?)```", readme.read_text(), re.S)
    for source in sources:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules.add(node.module.split(".")[0])
    return {module for module in modules if module not in sys.stdlib_module_names and module != "berth"}


def _installed_by(extras: set[str]) -> set[str]:
    """Distributions (normalised names) `pip install berth[extras]` brings, from pyproject and installed metadata."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    todo = [Requirement(line) for line in project["dependencies"]]
    for extra in extras:
        todo += [Requirement(line) for line in project["optional-dependencies"][extra]]
    seen: set[str] = set()
    while todo:
        requirement = todo.pop()
        name = requirement.name.lower().replace("_", "-")
        if name == "berth":
            todo += [Requirement(line) for extra in requirement.extras
                     for line in project["optional-dependencies"][extra]]
            continue
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        todo += [Requirement(line) for line in requires
                 if Requirement(line).marker is None or Requirement(line).marker.evaluate({"extra": ""})]  # type: ignore[union-attr]
    return seen


def test_the_examples_extra_installs_what_the_examples_import() -> None:
    distributions = importlib.metadata.packages_distributions()
    installed = _installed_by({"examples"})
    missing = {module for module in _example_imports()
               if not {name.lower().replace("_", "-") for name in distributions.get(module, [module])} & installed}
    assert missing == set(), "modules the examples import that `pip install -e '.[examples]'` does not install"
