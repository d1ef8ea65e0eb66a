"""Where one berth instance keeps its state, derived from its home folder."""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from berth.errors import UnsafeFolder

# sun_path is 108 bytes on Linux; leave room for "<replica-id>/proc-NN.sock".
MAX_RUN_DIR = 64


@dataclass(frozen=True)
class Paths:
    home: Path
    temp: Path | None = None  # where the socket folder goes when home is too long; None: the system's

    @property
    def socket(self) -> Path:
        return self.home / "berth.sock"

    @property
    def observe_socket(self) -> Path:
        """The daemon's read-only app (metrics, dashboard), which the gateway proxies /_berth/ to."""
        return self.run / "observe.sock"

    @property
    def database(self) -> Path:
        return self.home / "state.db"

    @property
    def daemon_log(self) -> Path:
        return self.home / "daemon.log"

    @property
    def lock(self) -> Path:
        return self.home / "daemon.lock"

    @property
    def spawn_lock(self) -> Path:
        return self.home / "spawn.lock"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def models(self) -> Path:
        """Remote models, mirrored once and shared by every replica."""
        return self.home / "models"

    @property
    def envs(self) -> Path:
        """Python environments of projects with requirements, shared by every version that asks the same."""
        return self.home / "envs"

    @property
    def snapshots(self) -> Path:
        return self.home / "snapshots"

    @property
    def run(self) -> Path:
        """Replica sockets; a short folder in /tmp when the home path is too long for them."""
        run = self.home / "run"
        if len(str(run)) <= MAX_RUN_DIR:
            return run
        # Deterministic so a restarted daemon finds the sockets of the replicas it re-adopts; the
        # name is therefore guessable, which is why ensure() verifies the folder every time.
        digest = hashlib.sha1(str(self.home).encode()).hexdigest()[:12]
        return (self.temp or Path(tempfile.gettempdir())) / f"berth-{digest}"

    @property
    def run_in_temp(self) -> bool:
        return self.run.parent != self.home

    def replica_log(self, api: str, replica_id: str) -> Path:
        return self.logs / api / f"{replica_id}.log"

    def ensure(self) -> None:
        for folder in (self.home, self.logs, self.snapshots):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.run_in_temp:
            ensure_private_folder(self.run)
        else:
            self.run.mkdir(exist_ok=True, mode=0o700)


StatFn = Callable[[Path], os.stat_result]


def _lstat(path: Path) -> os.stat_result:
    return os.lstat(path)


def ensure_private_folder(path: Path, uid: int | None = None, lstat: StatFn = _lstat) -> Path:
    """Create `path` as a folder only this user can enter, or accept it only if it already is one.

    It lives in a world-writable temp folder, so anyone could have created it first (or put a
    symlink there) to receive our replicas' sockets; lstat, not stat, so a symlink is seen as one.
    """
    owner = os.getuid() if uid is None else uid
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    else:
        os.chmod(path, 0o700)  # an unusual umask may have taken owner bits away
    info = lstat(path)
    problem = _unsafe(info, owner)
    if problem:
        raise UnsafeFolder(
            f"the socket folder {path} {problem}",
            hint=f"it may have been put there to intercept berth's sockets: remove it (as its owner, "
                 f"or root) and try again, or choose a BERTH_HOME shorter than "
                 f"{MAX_RUN_DIR - len('/run')} characters so sockets live under it",
        )
    return path


def _unsafe(info: os.stat_result, owner: int) -> str | None:
    if stat.S_ISLNK(info.st_mode):
        return "is a symlink, not a folder"
    if not stat.S_ISDIR(info.st_mode):
        return "exists and is not a folder"
    if info.st_uid != owner:
        return f"belongs to uid {info.st_uid}, not to you (uid {owner})"
    if info.st_mode & 0o077:
        return f"is open to other users (mode {stat.S_IMODE(info.st_mode):04o}; expected 0700)"
    return None
