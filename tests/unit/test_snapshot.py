"""Snapshots of real project folders: symlinks inside followed, outside refused, gitignore rules."""

from pathlib import Path

import pytest

from berth.config.project import scan_project
from berth.control.snapshot import project_files, snapshot
from berth.errors import ConfigError


def project(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "berth.yaml").write_text("- name: a\n")
    return root / "berth.yaml"


def names(root: Path, spec: Path) -> list[str]:
    return sorted(str(file.relative) for file in project_files(root, spec))


def test_a_symlinked_folder_inside_the_project_is_copied(tmp_path: Path) -> None:
    root = tmp_path / "p"
    spec = project(root, {"predictor.py": "import helpers.util\n", "lib/helpers/util.py": "X = 1\n"})
    (root / "helpers").symlink_to("lib/helpers")
    (root / "main.py").symlink_to("predictor.py")
    assert names(root, spec) == ["helpers/util.py", "lib/helpers/util.py", "main.py", "predictor.py"]
    store = tmp_path / "store"
    store.mkdir()
    _, copy = snapshot(root, spec, store)
    assert (copy / "helpers" / "util.py").read_text() == "X = 1\n"
    assert not (copy / "helpers").is_symlink() and not (copy / "main.py").is_symlink()


def test_a_symlink_leaving_the_project_is_refused_naming_link_and_target(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("no")
    root = tmp_path / "p"
    spec = project(root, {"predictor.py": ""})
    (root / "data").symlink_to(outside)
    (root / "key.txt").symlink_to(outside / "secret.txt")
    store = tmp_path / "store"
    store.mkdir()
    with pytest.raises(ConfigError) as info:
        snapshot(root, spec, store)
    data, key = info.value.problems
    assert data.startswith(f"data: symlink to {outside} leaves the project folder")
    assert key.startswith(f"key.txt: symlink to {outside / 'secret.txt'} leaves the project folder")
    assert list(store.iterdir()) == []


def test_an_ignored_link_leaving_the_project_is_fine(tmp_path: Path) -> None:
    root = tmp_path / "p"
    spec = project(root, {"predictor.py": "", ".berthignore": "/data\n"})
    (root / "data").symlink_to(tmp_path)
    assert names(root, spec) == ["predictor.py"]


def test_loops_and_broken_links_are_problems_not_hangs(tmp_path: Path) -> None:
    root = tmp_path / "p"
    spec = project(root, {"pkg/mod.py": ""})
    (root / "pkg" / "again").symlink_to("..")
    (root / "gone").symlink_to("missing.py")
    problems = scan_project(root, spec).problems
    assert problems == ["gone: broken symlink (to missing.py); remove it or list it in .berthignore",
                        "pkg/again: symlink to .. makes a loop (it points to a folder that contains it)"]


def test_a_link_to_a_sibling_folder_twice_is_not_a_loop(tmp_path: Path) -> None:
    root = tmp_path / "p"
    spec = project(root, {"shared/x.py": ""})
    (root / "a").symlink_to("shared")
    (root / "b").symlink_to("shared")
    assert names(root, spec) == ["a/x.py", "b/x.py", "shared/x.py"]


IGNORE_FILES = {
    "data/raw.csv": "", "src/data/keep.py": "", "big.bin": "", "src/w.bin": "", "keep.bin": "",
    "logs/today.txt": "", "src/logs/old.txt": "", "logs.py": "", "notes.tmp": "", "src/notes.tmp": "",
    "app/__pycache__/m.cpython-311.pyc": "", "app/m.pyc": "", "app/m.py": "", ".secret": "", "src/.hidden": "",
}


@pytest.mark.parametrize(
    ("rules", "kept"),
    [
        ("", sorted(set(IGNORE_FILES) - {"app/__pycache__/m.cpython-311.pyc", "app/m.pyc", ".secret", "src/.hidden"})),
        ("/data\n", ["app/m.py", "big.bin", "keep.bin", "logs.py", "logs/today.txt", "notes.tmp",
                     "src/data/keep.py", "src/logs/old.txt", "src/notes.tmp", "src/w.bin"]),
        ("**/*.bin\n!keep.bin\n", ["app/m.py", "data/raw.csv", "keep.bin", "logs.py", "logs/today.txt",
                                   "notes.tmp", "src/data/keep.py", "src/logs/old.txt", "src/notes.tmp"]),
        ("logs/\n", ["app/m.py", "big.bin", "data/raw.csv", "keep.bin", "logs.py", "notes.tmp",
                     "src/data/keep.py", "src/notes.tmp", "src/w.bin"]),
        ("# comment\n*.tmp\ndata\n", ["app/m.py", "big.bin", "keep.bin", "logs.py", "logs/today.txt",
                                      "src/logs/old.txt", "src/w.bin"]),
        ("/src/*.tmp\n", ["app/m.py", "big.bin", "data/raw.csv", "keep.bin", "logs.py", "logs/today.txt",
                          "notes.tmp", "src/data/keep.py", "src/logs/old.txt", "src/w.bin"]),
        ("*\n!*/\n!*.py\n", ["app/m.py", "logs.py", "src/data/keep.py"]),
        ("!*.pyc\n!__pycache__/\n", sorted(set(IGNORE_FILES) - {"app/__pycache__/m.cpython-311.pyc", "app/m.pyc",
                                                                ".secret", "src/.hidden"})),
    ],
    ids=["defaults", "anchored", "globstar-negation", "directory-only", "unanchored", "anchored-glob",
         "allowlist", "defaults-stay"],
)
def test_berthignore_follows_gitignore_rules(tmp_path: Path, rules: str, kept: list[str]) -> None:
    spec = project(tmp_path, {**IGNORE_FILES, ".berthignore": rules})
    assert names(tmp_path, spec) == sorted(kept)


@pytest.mark.parametrize(("rules", "kept"), [("", [".env", "p.py"]), (".env\n", ["p.py"])])
def test_the_root_env_file_is_part_of_the_project_and_no_other_hidden_file(tmp_path: Path, rules: str,
                                                                           kept: list[str]) -> None:
    """`.env` is loaded into the replicas, so it travels with the snapshot (and changes the digest)."""
    spec = project(tmp_path, {".env": "A=1", "sub/.env": "B=2", ".other": "", "p.py": "", ".berthignore": rules})
    assert names(tmp_path, spec) == kept


def test_the_digest_depends_on_content_and_names_only(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    first = project(tmp_path / "a", {"p.py": "x", "lib/u.py": "y"})
    second = project(tmp_path / "b", {"p.py": "x", "real/u.py": "y"})
    (tmp_path / "b" / "lib").symlink_to("real")
    (tmp_path / "b" / ".berthignore").write_text("/real/\n")
    assert snapshot(tmp_path / "a", first, store)[0] == snapshot(tmp_path / "b", second, store)[0]
