"""The activator's decisions, table-tested: what a request gets, when to scale, what the cache answers."""

from __future__ import annotations

from typing import Any

import pytest

from berth.activator.state import (
    APIState,
    Limits,
    Observation,
    Verdict,
    fresh,
    observation_of,
    remaining,
    timed_out_message,
)
from berth.config.schema import Autoscaling, Networking

MANAGED = {"app.kubernetes.io/managed-by": "berth", "berth.dev/api": "iris"}
AT_ZERO = Observation(True, spec_replicas=0, ready_replicas=0)
STARTING = Observation(True, spec_replicas=1, ready_replicas=0)
READY = Observation(True, spec_replicas=1, ready_replicas=1)
UNKNOWN = Observation(False)


@pytest.mark.parametrize(("seen", "holding", "queue", "verdict", "held_after"), [
    (READY, 0, 4, Verdict.FORWARD, 0),
    (READY, 3, 4, Verdict.FORWARD, 3),  # a pod is ready: never held, whatever is still waiting
    (AT_ZERO, 0, 4, Verdict.HOLD, 1),
    (STARTING, 3, 4, Verdict.HOLD, 4),
    (STARTING, 4, 4, Verdict.QUEUE_FULL, 4),
    (AT_ZERO, 1, 1, Verdict.QUEUE_FULL, 1),
    (UNKNOWN, 0, 4, Verdict.UNKNOWN, 0),
    (Observation(False, ready_replicas=3), 0, 4, Verdict.UNKNOWN, 0),  # not berth's: never forwarded
], ids=["ready", "ready-while-holding", "zero", "starting", "full", "queue-of-one", "unknown", "not-berths"])
def test_what_a_request_gets(seen: Observation, holding: int, queue: int, verdict: Verdict, held_after: int) -> None:
    state = APIState(holding=holding, waking_since=5.0 if holding else None)
    assert state.admit(seen, Limits(queue=queue), now=10.0) is verdict
    assert state.holding == held_after


def test_the_first_held_request_starts_the_wake_and_the_last_one_out_ends_it() -> None:
    state = APIState()
    assert state.admit(AT_ZERO, Limits(), now=10.0) is Verdict.HOLD
    assert state.admit(AT_ZERO, Limits(), now=11.0) is Verdict.HOLD
    assert (state.holding, state.waking_since, state.waking) == (2, 10.0, True)
    state.release()
    assert (state.holding, state.waking_since) == (1, 10.0)
    state.release()
    assert (state.holding, state.waking_since, state.waking) == (0, None, False)
    state.release()  # never below zero
    assert state.holding == 0


@pytest.mark.parametrize(("holding", "seen", "scale"), [
    (1, AT_ZERO, True),
    (5, AT_ZERO, True),
    (0, AT_ZERO, False),  # nobody waits: leave it to the autoscaler
    (1, STARTING, False),  # already scaled up (by the activator, KEDA or a person): one patch only
    (1, Observation(True, spec_replicas=3), False),  # never scales down
    (1, UNKNOWN, False),
])
def test_scaling_happens_only_at_zero_with_requests_held(holding: int, seen: Observation, scale: bool) -> None:
    assert APIState(holding=holding).should_scale(seen) is scale


def test_one_wake_counts_its_patches() -> None:
    state = APIState(holding=2)
    assert state.should_scale(AT_ZERO)
    state.scaled(now=3.0)
    assert (state.patches, state.last_patch) == (1, 3.0)
    assert not state.should_scale(STARTING)  # what the next poll reads after the patch
    state.woke()
    assert state.waking_since is None


@pytest.mark.parametrize(("read_at", "now", "ttl", "ok"), [
    (10.0, 10.0, 1.0, True), (10.0, 10.99, 1.0, True), (10.0, 11.0, 1.0, False), (10.0, 9.0, 1.0, False),
    (10.0, 10.4, 0.5, True), (10.0, 10.6, 0.5, False),
])
def test_readiness_answers_are_reused_for_about_a_second(read_at: float, now: float, ttl: float, ok: bool) -> None:
    assert fresh(Observation(True, read_at=read_at), now, ttl) is ok
    assert fresh(None, now, ttl) is False


@pytest.mark.parametrize(("arrived", "timeout", "now", "left"), [
    (0.0, 120.0, 0.0, 120.0), (0.0, 120.0, 100.0, 20.0), (0.0, 120.0, 130.0, 0.0), (5.0, 0.0, 5.0, 0.0),
])
def test_a_held_request_waits_from_its_arrival(arrived: float, timeout: float, now: float, left: float) -> None:
    assert remaining(arrived, Limits(timeout=timeout), now) == pytest.approx(left)


def deployment(**fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "metadata": {"name": "iris", "labels": dict(MANAGED)},
        "spec": {"replicas": 0, "template": {"spec": {"volumes": [
            {"name": "work", "emptyDir": {}}, {"name": "code", "configMap": {"name": "iris-code-abc"}}]}}},
        "status": {},
    }
    for key, value in fields.items():
        doc[key] = value
    return doc


@pytest.mark.parametrize(("doc", "expected"), [
    (None, Observation(False, read_at=7.0)),
    (deployment(), Observation(True, 0, 0, "iris-code-abc", 7.0)),
    (deployment(status={"readyReplicas": 2, "replicas": 2}), Observation(True, 0, 2, "iris-code-abc", 7.0)),
    (deployment(spec={"replicas": 3}), Observation(True, 3, 0, None, 7.0)),
    (deployment(spec={}), Observation(True, 1, 0, None, 7.0)),  # replicas left out: the server's default 1
    (deployment(metadata={"name": "iris", "labels": {"berth.dev/api": "iris"}}), Observation(False, read_at=7.0)),
    (deployment(metadata={"name": "iris", "labels": {**MANAGED, "berth.dev/api": "other"}}),
     Observation(False, read_at=7.0)),
], ids=["missing", "at-zero", "ready", "no-code-volume", "replicas-defaulted", "not-managed", "another-api"])
def test_what_is_read_of_a_deployment(doc: dict[str, Any] | None, expected: Observation) -> None:
    assert observation_of(doc, "iris", read_at=7.0) == expected


def test_limits_come_from_spec_json_with_the_schemas_defaults() -> None:
    defaults = Limits()
    assert defaults.queue == Autoscaling().scale_from_zero_queue == 1024
    assert defaults.timeout == Autoscaling().scale_from_zero_timeout == 120.0
    assert defaults.request_timeout == Networking().timeout
    spec = {"autoscaling": {"scale_from_zero_queue": 8, "scale_from_zero_timeout": 30.0},
            "networking": {"timeout": 60.0}}
    assert Limits.from_spec(spec) == Limits(queue=8, timeout=30.0, request_timeout=60.0)
    assert Limits.from_spec({"autoscaling": {"scale_from_zero_queue": 8}}) == Limits(queue=8)


@pytest.mark.parametrize("spec", [
    None, {}, {"autoscaling": None}, {"autoscaling": "x"},
    {"autoscaling": {"scale_from_zero_queue": 0, "scale_from_zero_timeout": -1}},
    {"autoscaling": {"scale_from_zero_queue": True, "scale_from_zero_timeout": "2m"}},
    {"autoscaling": {"scale_from_zero_timeout": float("nan")}, "networking": {"timeout": 0}},
])
def test_a_missing_or_malformed_spec_keeps_the_defaults(spec: Any) -> None:
    assert Limits.from_spec(spec) == Limits()


def test_the_timeout_message_names_the_field_and_how_to_look() -> None:
    text = timed_out_message("iris", Limits(timeout=2.5))
    assert "2.5s" in text and "scale_from_zero_timeout" in text and "berth get iris" in text
