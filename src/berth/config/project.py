"""Which files make up a project folder: what a deploy snapshots, and what validation checks first.

It lives beside the spec loader so `berth validate` reports a symlink that leaves the project
together with the spec's own problems, before anything is copied.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pathspec

IGNORE_FILE = ".berthignore"
# Hidden files a project's root may hold that are part of it: `.env` is loaded into its replicas.
ROOT_DOTFILES = frozenset({".env"})
# gitignore lines; appended after the user's, so a `!` in .berthignore cannot bring caches back.
ALWAYS_IGNORED = ("__pycache__/", "*.pyc", "*.pyo", "*.pyd")


@dataclass(frozen=True)
class ProjectFile:
    relative: PurePosixPath  # where it goes in the snapshot: the path as seen through any symlink
    source: Path  # the real file that is read


@dataclass
class ProjectScan:
    files: list[ProjectFile] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Walk:
    root: Path  # resolved, for containment checks
    skip: Path  # the spec file, resolved
    ignore: pathspec.GitIgnoreSpec

    def ignored(self, relative: PurePosixPath, is_dir: bool) -> bool:
        return _folder_ignored(self.ignore, f"{relative}/") if is_dir else self.ignore.match_file(str(relative))


# What pathspec compiles `*` and `**` (every path) and `*/` and `**/` (every folder) to.
_EVERYTHING = "."
_EVERY_FOLDER = "(?P<ps_d>/)"


def _folder_ignored(spec: pathspec.GitIgnoreSpec, folder: str) -> bool:
    """Whether git leaves out `folder` ("a/b/") itself: the last pattern matching it as a whole wins.

    pathspec answers for files; asked about a folder it lets `*` outrank a later `!*/`, so git's
    allow-list idiom (`*`, `!*/`, `!*.py`) would leave every folder out. Folders that are left out
    are not entered, which gives git's rule that nothing inside them can be brought back.
    """
    ignored = False
    for pattern in spec.patterns:
        regex = getattr(pattern, "regex", None)
        if pattern.include is None or regex is None:
            continue
        if regex.pattern in (_EVERYTHING, _EVERY_FOLDER) or regex.fullmatch(folder):
            ignored = pattern.include
    return ignored


def ignore_spec(root: Path) -> pathspec.GitIgnoreSpec:
    """The project's `.berthignore` (gitignore rules, read from the root only) plus the defaults."""
    ignore = root / IGNORE_FILE
    lines = ignore.read_text(encoding="utf-8").splitlines() if ignore.is_file() else []
    return pathspec.GitIgnoreSpec.from_lines([*lines, *ALWAYS_IGNORED])


def scan_project(root: Path, spec_file: Path) -> ProjectScan:
    """Every file of the project, following symlinks that stay inside it; links that leave it,
    dangle or loop are problems. Hidden entries, the spec file and ignored paths are left out."""
    real_root = root.resolve()
    walk = _Walk(root=real_root, skip=spec_file.resolve(), ignore=ignore_spec(root))
    scan = ProjectScan()
    _scan_folder(walk, real_root, PurePosixPath(), frozenset({real_root}), scan)
    return scan


def _scan_folder(walk: _Walk, folder: Path, relative: PurePosixPath, chain: frozenset[Path],
                 scan: ProjectScan) -> None:
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError as exc:
        scan.problems.append(f"{relative or '.'}: cannot list the folder: {exc.strerror}")
        return
    folders: list[tuple[Path, PurePosixPath]] = []
    for entry in entries:
        if entry.name.startswith(".") and not (entry.name in ROOT_DOTFILES and not relative.parts):
            continue
        rel = relative / entry.name
        is_dir = entry.is_dir()  # follows symlinks: a linked folder is walked like a real one
        if walk.ignored(rel, is_dir):
            continue
        real = Path(os.path.realpath(entry.path)) if entry.is_symlink() else Path(entry.path)
        problem = _link_problem(walk, entry, rel, real, chain if is_dir else frozenset())
        if problem:
            scan.problems.append(problem)
        elif is_dir:
            folders.append((real, rel))
        elif entry.is_file() and real != walk.skip:
            scan.files.append(ProjectFile(rel, real))
    # A folder's files before its subfolders, as os.walk ordered them: unchanged projects keep
    # the digest they had, so upgrading berth does not redeploy them.
    for real, rel in folders:
        _scan_folder(walk, real, rel, chain | {real}, scan)


def _link_problem(walk: _Walk, entry: os.DirEntry[str], rel: PurePosixPath, real: Path,
                  chain: frozenset[Path]) -> str | None:
    if not entry.is_symlink():
        return None
    target = os.readlink(entry.path)
    if not real.is_relative_to(walk.root):
        return (f"{rel}: symlink to {target} leaves the project folder {walk.root}; snapshots copy only "
                f"the project: copy the files in, or list {rel} in {IGNORE_FILE} and load it by absolute "
                f"path from the predictor's config")
    if not real.exists():
        return f"{rel}: broken symlink (to {target}); remove it or list it in {IGNORE_FILE}"
    if real in chain:
        return f"{rel}: symlink to {target} makes a loop (it points to a folder that contains it)"
    return None
