"""The replica lifecycle's transition table, as a table."""

import pytest

from berth.core.lifecycle import TRANSITIONS, Event, IllegalTransition, Phase, crash_event, next_phase
from berth.core.status import ReplicaState

P, E = Phase, Event


@pytest.mark.parametrize(("phase", "event", "after"), [
    (P.PENDING, E.STARTED, P.INITIALIZING),
    (P.PENDING, E.NO_CAPACITY, P.PENDING),
    (P.PENDING, E.START_FAILED, P.FAILED),
    (P.INITIALIZING, E.BECAME_READY, P.READY),
    (P.INITIALIZING, E.CRASHED, P.FAILED),
    (P.INITIALIZING, E.MISSED_DEADLINE, P.FAILED),
    (P.INITIALIZING, E.OUT_OF_MEMORY, P.KILLED_OOM),
    (P.READY, E.KILLED, P.KILLED),
    (P.READY, E.CRASHED, P.FAILED),
    (P.READY, E.OUT_OF_MEMORY, P.KILLED_OOM),
    (P.FAILED, E.STARTED, P.INITIALIZING),
    (P.KILLED, E.STARTED, P.INITIALIZING),
    (P.KILLED_OOM, E.STARTED, P.INITIALIZING),
    (P.READY, E.STOP_REQUESTED, P.DRAINING),
    (P.INITIALIZING, E.STOP_REQUESTED, P.DRAINING),
    (P.DRAINING, E.STOP_REQUESTED, P.DRAINING),
    (P.DRAINING, E.SIGNALLED, P.STOPPING),
    (P.STOPPING, E.STOP_REQUESTED, P.STOPPING),
])
def test_transitions(phase: Phase, event: Event, after: Phase) -> None:
    assert next_phase(phase, event) is after


@pytest.mark.parametrize(("phase", "event"), [
    (P.READY, E.BECAME_READY),
    (P.READY, E.MISSED_DEADLINE),
    (P.READY, E.STARTED),
    (P.DRAINING, E.BECAME_READY),
    (P.STOPPING, E.SIGNALLED),
    (P.STOPPING, E.STARTED),
    (P.FAILED, E.CRASHED),
    (P.PENDING, E.SIGNALLED),
])
def test_impossible_transitions_are_refused(phase: Phase, event: Event) -> None:
    with pytest.raises(IllegalTransition, match=f"{event}.*{phase}"):
        next_phase(phase, event)


def test_users_see_cortex_states_and_both_stop_phases_are_terminating() -> None:
    assert {phase.state for phase in Phase} == set(ReplicaState)
    assert P.DRAINING.state is P.STOPPING.state is ReplicaState.TERMINATING
    assert [p for p in Phase if p.running] == [P.INITIALIZING, P.READY, P.DRAINING, P.STOPPING]


def test_every_phase_can_be_stopped_and_no_transition_leaves_a_stop() -> None:
    assert all((phase, E.STOP_REQUESTED) in TRANSITIONS for phase in Phase)
    leaving = {after for (phase, _), after in TRANSITIONS.items() if phase in (P.DRAINING, P.STOPPING)}
    assert leaving <= {P.DRAINING, P.STOPPING}


def test_exits_are_named_by_how_they_ended() -> None:
    assert crash_event(killed_by_sigkill=True) is E.KILLED
    assert crash_event(killed_by_sigkill=False) is E.CRASHED
