"""The socket folders: private to the user, verified every time, never someone else's."""

import os
import stat
from pathlib import Path

import pytest

from berth.control.paths import MAX_RUN_DIR, Paths, ensure_private_folder
from berth.errors import UnsafeFolder
from berth.runtime.server import bind_private_socket


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def long_home(tmp_path: Path) -> Path:
    home = tmp_path / ("h" * MAX_RUN_DIR)
    assert len(str(home / "run")) > MAX_RUN_DIR
    return home


def test_short_home_keeps_sockets_under_it(tmp_path: Path) -> None:
    assert Paths(Path("/srv/berth")).run == Path("/srv/berth/run")
    home = tmp_path / "h"
    paths = Paths(home, temp=tmp_path)
    if len(str(home / "run")) <= MAX_RUN_DIR:  # pytest's temporary folders can be long
        paths.ensure()
        assert mode(home / "run") == 0o700


def test_long_home_uses_a_private_folder_that_a_restart_finds_again(tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    paths = Paths(long_home(tmp_path), temp=temp)
    paths.ensure()
    assert paths.run.parent == temp
    assert mode(paths.run) == 0o700
    again = Paths(long_home(tmp_path), temp=temp)
    again.ensure()  # the daemon restarting: same folder, accepted because it is ours and private
    assert again.run == paths.run
    assert Paths(tmp_path / ("g" * MAX_RUN_DIR), temp=temp).run != paths.run


def test_the_folder_is_private_even_under_a_lax_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        ensure_private_folder(tmp_path / "run")
    finally:
        os.umask(old)
    assert mode(tmp_path / "run") == 0o700


def test_a_folder_open_to_others_is_refused_on_every_ensure(tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    paths = Paths(long_home(tmp_path), temp=temp)
    paths.ensure()
    os.chmod(paths.run, 0o755)
    with pytest.raises(UnsafeFolder) as info:
        paths.ensure()
    assert f"{paths.run} is open to other users (mode 0755" in info.value.message
    assert info.value.hint and "remove it" in info.value.hint


def test_a_symlink_is_refused_even_to_a_private_folder_of_ours(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "run").symlink_to(real)
    with pytest.raises(UnsafeFolder, match="is a symlink"):
        ensure_private_folder(tmp_path / "run")


def test_a_file_in_its_place_is_refused(tmp_path: Path) -> None:
    (tmp_path / "run").write_text("")
    with pytest.raises(UnsafeFolder, match="is not a folder"):
        ensure_private_folder(tmp_path / "run")


def test_a_folder_of_another_user_is_refused(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir(mode=0o700)
    someone_else = os.getuid() + 1
    with pytest.raises(UnsafeFolder, match=f"belongs to uid {os.getuid()}, not to you \\(uid {someone_else}\\)"):
        ensure_private_folder(tmp_path / "run", uid=someone_else)


def test_ownership_is_read_from_lstat(tmp_path: Path) -> None:
    seen: list[Path] = []

    def foreign(path: Path) -> os.stat_result:
        seen.append(path)
        real = os.lstat(path)
        return os.stat_result((real.st_mode, real.st_ino, real.st_dev, real.st_nlink, 4242, real.st_gid,
                               real.st_size, 0, 0, 0))

    with pytest.raises(UnsafeFolder, match="belongs to uid 4242"):
        ensure_private_folder(tmp_path / "run", lstat=foreign)
    assert seen == [tmp_path / "run"]


def test_replica_socket_is_owner_only_and_the_umask_is_restored(tmp_path: Path) -> None:
    before = os.umask(0o022)
    try:
        sock = bind_private_socket(tmp_path / "r" / "p.sock")
        try:
            assert mode(tmp_path / "r" / "p.sock") == 0o600
            assert stat.S_ISSOCK(os.lstat(tmp_path / "r" / "p.sock").st_mode)
        finally:
            sock.close()
        assert os.umask(0o022) == 0o022
    finally:
        os.umask(before)
