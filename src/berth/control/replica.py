"""One supervised replica, and the only place its lifecycle changes.

Every change of phase is a named method that checks the move against `core.lifecycle`'s table and
updates the facts that go with it (start time, failure streak, backoff), so no other module writes
`phase` or those fields: they read them.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from berth.core.backoff import failures_after_exit, restart_delay
from berth.core.lifecycle import Event, Phase, next_phase
from berth.core.placement import Placement
from berth.core.reconcile import ReplicaFacts
from berth.core.status import ReplicaState
from berth.runtime.contract import socket_path


@dataclass
class Replica:
    """`processes` server processes sharing a socket folder, started and stopped as one."""

    id: str
    api: str
    version: str
    socket_dir: Path
    log_path: Path
    processes: int
    created_at: float
    phase: Phase = Phase.PENDING
    popen: subprocess.Popen[bytes] | None = None
    pid: int | None = None  # our child's, or an adopted process's after a daemon restart
    placement: Placement | None = None
    pending_reason: str | None = None  # why it waits: the compute it needs is not free
    rss: float = 0.0
    started_at: float = 0.0
    ready_at: float | None = None
    stop_requested_at: float | None = None
    signalled_at: float | None = None
    failures: int = 0
    restarts: int = 0
    next_start: float = 0.0
    gone: bool = False  # its process has exited (or been SIGKILLed by us): nothing left to signal
    last_error: str | None = None
    last_traceback: str | None = None

    @property
    def state(self) -> ReplicaState:
        return self.phase.state

    @property
    def sockets(self) -> list[str]:
        return [str(socket_path(self.socket_dir, index)) for index in range(self.processes)]

    def facts(self) -> ReplicaFacts:
        return ReplicaFacts(id=self.id, version=self.version, state=self.state, created_at=self.created_at,
                            next_start=self.next_start, unplaceable=self.pending_reason is not None)

    # --- transitions --------------------------------------------------------------------------
    def _go(self, event: Event) -> None:
        self.phase = next_phase(self.phase, event)

    def no_capacity(self, reason: str) -> None:
        self._go(Event.NO_CAPACITY)
        self.pending_reason = reason

    def placed(self, placement: Placement) -> None:
        self.placement, self.pending_reason = placement, None

    def started(self, pid: int, now: float, popen: subprocess.Popen[bytes] | None = None) -> None:
        self._go(Event.STARTED)
        self.popen, self.pid, self.started_at = popen, pid, now
        self.ready_at = self.stop_requested_at = self.signalled_at = None
        self.gone = False

    def became_ready(self, now: float) -> float:
        """Returns how long it took, from the start."""
        self._go(Event.BECAME_READY)
        self.ready_at = now
        return now - self.started_at

    def failed(self, event: Event, now: float, message: str, traceback: str | None = None) -> float:
        """It stopped serving (or never started) for `event`; returns the delay before the next start."""
        self._go(event)
        # Its process is gone: the compute it reserved is free for others while it backs off, and
        # its next start is placed again.
        self.placement = None
        self.failures = failures_after_exit(self.failures, now - self.started_at, self.ready_at is not None)
        delay = restart_delay(self.failures)
        self.next_start = now + delay
        self.ready_at = None
        self.last_error, self.last_traceback = message, traceback
        return delay

    def stop_requested(self, now: float) -> None:
        self._go(Event.STOP_REQUESTED)
        if self.stop_requested_at is None:
            self.stop_requested_at = now

    def signalled(self, now: float) -> None:
        self._go(Event.SIGNALLED)
        self.signalled_at = now
