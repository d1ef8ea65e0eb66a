"""DESIGN.md's dependency direction, enforced: cli → client → control → gateway|runtime → observability → core → config."""

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "berth"
RANK = {"config": 0, "errors": 0, "core": 1, "observability": 2, "gateway": 3, "runtime": 3, "backends": 3, "activator": 3, "dashboard": 3, "pyenv": 3,
        "control": 4, "client": 5, "cli": 6, "__main__": 7, "__init__": 0}
PUBLIC_EXPORTS = {"berth.runtime.streaming"}  # what `from berth import ...` offers predictors
IO_MODULES = {"socket", "subprocess", "asyncio", "sqlite3", "os", "time", "httpx", "uvicorn", "starlette",
              "psutil", "threading"}


def berth_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "berth" and len(parts) > 1 else None


SOURCES = sorted(p for p in SRC.rglob("*.py") if layer("berth." + p.relative_to(SRC).parts[0].removesuffix(".py")))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(SRC)))
def test_dependencies_flow_downward(path: Path) -> None:
    own = path.relative_to(SRC).parts[0].removesuffix(".py")
    for module in berth_imports(path):
        target = layer(module)
        if target is None or target == own or target not in RANK:
            continue
        if own == "__init__" and module in PUBLIC_EXPORTS:
            continue  # re-exported for predictors, imported lazily (berth/__init__.py's __getattr__)
        assert RANK[target] <= RANK[own], f"{own} must not import {module}"


def test_core_does_no_io() -> None:
    for path in (SRC / "core").glob("*.py"):
        roots = {module.split(".")[0] for module in berth_imports(path)}
        assert not roots & IO_MODULES, f"{path.name} imports {roots & IO_MODULES}"


def test_the_supervisor_imports_nothing_that_could_make_it_die() -> None:
    """It holds the port and restarts everything else: the standard library and two tiny berth modules only."""
    allowed = {"berth.control.paths", "berth.errors", "__future__"}
    for module in berth_imports(SRC / "control" / "master.py"):
        root = module.split(".")[0]
        assert module in allowed or (root != "berth" and root in sys.stdlib_module_names), module


def test_control_reaches_into_runtime_only_through_the_process_contract() -> None:
    """Spawning a replica must not load the replica's web framework, metrics or inference protocol."""
    for path in (SRC / "control").rglob("*.py"):
        for module in berth_imports(path):
            if layer(module) == "runtime":
                assert module == "berth.runtime.contract", f"control/{path.name} imports {module}"


def test_the_process_contract_is_standard_library_only() -> None:
    for module in berth_imports(SRC / "runtime" / "contract.py"):
        root = module.split(".")[0]
        assert root == "__future__" or root in sys.stdlib_module_names, module
