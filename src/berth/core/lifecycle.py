"""The replica lifecycle: its phases and the one table of transitions between them.

    pending ─started─▶ initializing ─became_ready─▶ ready
       ▲  │                │   │                      │
       │  └─no_capacity─┐  │   └──────────┐           │
       │                ▼  ▼              ▼           ▼
       └──────────── failed · killed · killed_oom ◀──crashed / killed / out_of_memory / missed_deadline
                         │  (started again after the backoff)
    every phase ─stop_requested─▶ draining ─signalled─▶ stopping ─exited─▶ (forgotten)

A phase is finer than the `ReplicaState` users see: `draining` (still receiving no new requests,
finishing the ones it holds) and `stopping` (SIGTERM sent) are both `terminating`. Each transition
is named after what happened; `next_phase` refuses any pair the table does not list, so an
impossible change (a stopped replica becoming ready) is a bug caught where it happens.
"""

from __future__ import annotations

import enum

from berth.core.status import ReplicaState


class Phase(enum.StrEnum):
    PENDING = "pending"
    INITIALIZING = "initializing"
    READY = "ready"
    DRAINING = "draining"
    STOPPING = "stopping"
    FAILED = "failed"
    KILLED = "killed"
    KILLED_OOM = "killed_oom"

    @property
    def state(self) -> ReplicaState:
        if self in (Phase.DRAINING, Phase.STOPPING):
            return ReplicaState.TERMINATING
        return ReplicaState(self.value)

    @property
    def running(self) -> bool:
        """A process of ours is (or may still be) alive in this phase."""
        return self in (Phase.INITIALIZING, Phase.READY, Phase.DRAINING, Phase.STOPPING)


class Event(enum.StrEnum):
    NO_CAPACITY = "no_capacity"  # placement refused: it waits for cpu, memory or a GPU
    STARTED = "started"
    START_FAILED = "start_failed"  # the process could not even be spawned
    BECAME_READY = "became_ready"
    CRASHED = "crashed"  # exited by itself, or its predictor failed to initialise
    KILLED = "killed"  # SIGKILLed by someone else
    MISSED_DEADLINE = "missed_deadline"  # not ready within the readiness timeout: we kill it
    OUT_OF_MEMORY = "out_of_memory"  # its RSS passed compute.mem: we kill it
    STOP_REQUESTED = "stop_requested"
    SIGNALLED = "signalled"  # SIGTERM after the drain


WAITING = (Phase.PENDING, Phase.FAILED, Phase.KILLED, Phase.KILLED_OOM)
LIVE = (Phase.INITIALIZING, Phase.READY)
EVERY = tuple(Phase)

TRANSITIONS: dict[tuple[Phase, Event], Phase] = {
    **{(phase, Event.NO_CAPACITY): Phase.PENDING for phase in WAITING},
    **{(phase, Event.STARTED): Phase.INITIALIZING for phase in WAITING},
    **{(phase, Event.START_FAILED): Phase.FAILED for phase in WAITING},
    (Phase.INITIALIZING, Event.BECAME_READY): Phase.READY,
    **{(phase, Event.CRASHED): Phase.FAILED for phase in LIVE},
    **{(phase, Event.KILLED): Phase.KILLED for phase in LIVE},
    (Phase.INITIALIZING, Event.MISSED_DEADLINE): Phase.FAILED,
    **{(phase, Event.OUT_OF_MEMORY): Phase.KILLED_OOM for phase in LIVE},
    **{(phase, Event.STOP_REQUESTED): Phase.DRAINING for phase in EVERY if phase is not Phase.STOPPING},
    (Phase.STOPPING, Event.STOP_REQUESTED): Phase.STOPPING,
    (Phase.DRAINING, Event.SIGNALLED): Phase.STOPPING,
}


class IllegalTransition(Exception):
    """A transition the lifecycle does not have: a bug in the caller, never a user error."""


def next_phase(phase: Phase, event: Event) -> Phase:
    try:
        return TRANSITIONS[(phase, event)]
    except KeyError:
        raise IllegalTransition(f"a replica cannot go through {event} while {phase}") from None


def crash_event(killed_by_sigkill: bool) -> Event:
    """How an exit we did not ask for is named: a SIGKILL from outside is `killed`, anything else `crashed`."""
    return Event.KILLED if killed_by_sigkill else Event.CRASHED
