"""Where one berth instance keeps its state, derived from its home folder."""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

# sun_path is 108 bytes on Linux; leave room for "<replica-id>/proc-NN.sock".
MAX_RUN_DIR = 64


@dataclass(frozen=True)
class Paths:
    home: Path

    @property
    def socket(self) -> Path:
        return self.home / "berth.sock"

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
    def snapshots(self) -> Path:
        return self.home / "snapshots"

    @property
    def run(self) -> Path:
        """Replica sockets; a short folder in /tmp when the home path is too long for them."""
        run = self.home / "run"
        if len(str(run)) <= MAX_RUN_DIR:
            return run
        digest = hashlib.sha1(str(self.home).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"berth-{digest}"

    def replica_log(self, api: str, replica_id: str) -> Path:
        return self.logs / api / f"{replica_id}.log"

    def ensure(self) -> None:
        for folder in (self.home, self.logs, self.snapshots, self.run):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
