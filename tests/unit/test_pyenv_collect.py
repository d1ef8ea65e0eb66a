"""The collector of Python environments on real folders: ages are made with os.utime on built.json
(what `touch` moves when an environment is used), so nothing waits."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from berth.pyenv.builder import INDEX, LOCKS, MARKER, python_of, touch
from berth.pyenv.collect import GRACE_SECONDS, collect_environments

NOW = 2_000_000_000.0
OLD = NOW - GRACE_SECONDS - 3600


def environment(envs: Path, key: str, used: float, built: bool = True) -> Path:
    folder = envs / key
    (folder / "bin").mkdir(parents=True)
    (folder / "bin" / "python").write_text("")
    if built:
        (folder / MARKER).write_text("{}")
        os.utime(folder / MARKER, (used, used))
    os.utime(folder, (used, used))
    return folder


def index(envs: Path, entries: dict[str, str]) -> None:
    (envs / INDEX).mkdir(parents=True, exist_ok=True)
    for input_key, key in entries.items():
        (envs / INDEX / input_key).write_text(key)


def present(envs: Path) -> set[str]:
    return {path.name for path in envs.iterdir() if not path.name.startswith(".")}


def test_nothing_to_do_without_a_folder(tmp_path: Path) -> None:
    assert collect_environments(tmp_path / "envs", set(), NOW) == []


def test_keeps_what_is_in_use_and_the_most_recently_used_of_the_rest(tmp_path: Path) -> None:
    envs = tmp_path / "envs"
    environment(envs, "inuse", OLD - 10_000)
    for age in range(6):
        environment(envs, f"old{age}", OLD - age * 100)  # old0 used last
    removed = collect_environments(envs, {"inuse"}, NOW, keep_recent=2)
    assert sorted(removed) == ["old2", "old3", "old4", "old5"]
    assert present(envs) == {"inuse", "old0", "old1"}


def test_an_unused_one_younger_than_the_grace_period_stays(tmp_path: Path) -> None:
    envs = tmp_path / "envs"
    environment(envs, "young", NOW - 60)
    environment(envs, "old", OLD)
    assert collect_environments(envs, set(), NOW, keep_recent=0) == ["old"]
    assert present(envs) == {"young"}


def test_touch_makes_one_recent_again(tmp_path: Path) -> None:
    envs = tmp_path / "envs"
    environment(envs, "used-again", OLD)
    touch(envs, "used-again")
    assert collect_environments(envs, set(), os.path.getmtime(envs / "used-again" / MARKER) + 1, keep_recent=0) == []


def test_one_locked_by_a_build_or_a_reuse_is_left(tmp_path: Path) -> None:
    envs = tmp_path / "envs"
    environment(envs, "busy", OLD)
    (envs / LOCKS).mkdir()
    with (envs / LOCKS / "busy.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        assert collect_environments(envs, set(), NOW, keep_recent=0) == []
        assert python_of(envs, "busy") is not None
    assert collect_environments(envs, set(), NOW, keep_recent=0) == ["busy"]
    # The lock file stays: removing it would let two builders lock two different files of one name.
    assert (envs / LOCKS / "busy.lock").exists()


def test_index_entries_pointing_at_a_removed_one_are_forgotten(tmp_path: Path) -> None:
    envs = tmp_path / "envs"
    environment(envs, "gone", OLD)
    environment(envs, "kept", OLD)
    index(envs, {"in-a": "gone", "in-b": "kept", "in-c": "", "in-d": "gone"})
    assert collect_environments(envs, {"kept"}, NOW, keep_recent=0) == ["gone"]
    assert sorted(path.name for path in (envs / INDEX).iterdir()) == ["in-b", "in-c"]


def test_incomplete_folders_are_removed_but_not_hidden_ones(tmp_path: Path) -> None:
    envs = tmp_path / "envs"
    environment(envs, "interrupted", OLD - 100, built=False)
    environment(envs, "built", OLD)
    index(envs, {"x": "built"})
    removed = collect_environments(envs, set(), NOW, keep_recent=1)
    assert removed == ["interrupted"]
    assert present(envs) == {"built"} and (envs / INDEX / "x").exists()


def test_a_symlinked_folder_is_never_followed(tmp_path: Path) -> None:
    envs = tmp_path / "envs"
    elsewhere = environment(tmp_path / "elsewhere", "real", OLD)
    envs.mkdir()
    (envs / "link").symlink_to(elsewhere)
    assert collect_environments(envs, set(), NOW, keep_recent=0) == []
    assert python_of(tmp_path / "elsewhere", "real") is not None


def test_an_incomplete_folder_does_not_take_a_kept_place(tmp_path: Path) -> None:
    envs = tmp_path / "envs"
    environment(envs, "a", OLD - 300)
    environment(envs, "b", OLD - 200)
    environment(envs, "interrupted", OLD - 100, built=False)  # the newest
    collect_environments(envs, set(), NOW, keep_recent=2)
    assert present(envs) == {"a", "b"}
