"""The Kubernetes backend's status rules: kubectl's rollout status and pod failures in berth's words (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from berth.backends.kubernetes.status import (
    Rollout,
    pod_failure,
    quantity,
    replica_row,
    replica_state,
    rollout_status,
    summarize,
    timestamp,
)
from berth.core.status import APIStatus, ReplicaState

V = "berth.dev/version"


def deployment(generation: int = 2, observed: int | None = 2, replicas: int | None = 3, updated: int = 3,
               total: int = 3, available: int = 3, deadline: bool = False, version: str = "v2") -> dict[str, Any]:
    conditions = [{"type": "Available", "status": "True"}]
    if deadline:
        conditions.append({"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"})
    else:
        conditions.append({"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                           "lastUpdateTime": "2026-12-01T10:00:00Z"})
    spec: dict[str, Any] = {"template": {"metadata": {"labels": {V: version}}}}
    if replicas is not None:
        spec["replicas"] = replicas
    status: dict[str, Any] = {"updatedReplicas": updated, "replicas": total, "availableReplicas": available,
                              "conditions": conditions}
    if observed is not None:
        status["observedGeneration"] = observed
    return {"metadata": {"name": "iris", "generation": generation}, "spec": spec, "status": status}


@pytest.mark.parametrize(("dep", "expected"), [
    (deployment(generation=3, observed=2), Rollout(False, "waiting for the deployment spec update to be observed")),
    (deployment(observed=None), Rollout(False, "waiting for the deployment spec update to be observed")),
    (deployment(deadline=True, updated=1, available=2),
     Rollout(False, "deployment 'iris' exceeded its progress deadline", failed=True)),
    (deployment(updated=1), Rollout(False, "1 out of 3 new replicas have been updated")),
    (deployment(total=5), Rollout(False, "2 old replicas are pending termination")),
    (deployment(available=2), Rollout(False, "2 of 3 updated replicas are available")),
    (deployment(), Rollout(True, "deployment 'iris' successfully rolled out")),
    # No spec.replicas (an autoscaler owns it): that step is skipped, as kubectl skips a nil pointer.
    (deployment(replicas=None, updated=2, total=2, available=2), Rollout(True, "deployment 'iris' successfully "
                                                                             "rolled out")),
    (deployment(replicas=0, updated=0, total=0, available=0), Rollout(True, "deployment 'iris' successfully "
                                                                          "rolled out")),
], ids=["generation-not-observed", "never-observed", "deadline", "updating", "old-pending", "not-available",
        "done", "autoscaled", "scaled-to-zero"])
def test_rollout_status_follows_kubectl(dep: dict[str, Any], expected: Rollout) -> None:
    assert rollout_status(dep) == expected


def pod(name: str = "iris-abc", version: str = "v2", phase: str = "Running", ready: bool = False,
        waiting: dict[str, Any] | None = None, terminated: dict[str, Any] | None = None,
        last: dict[str, Any] | None = None, unschedulable: str | None = None, deleting: bool = False,
        restarts: int = 0) -> dict[str, Any]:
    state: dict[str, Any] = {}
    if waiting is not None:
        state["waiting"] = waiting
    elif terminated is not None:
        state["terminated"] = terminated
    else:
        state["running"] = {"startedAt": "2026-12-01T10:00:00Z"}
    conditions = [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": str(ready)}]
    if unschedulable is not None:
        conditions = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                       "message": unschedulable}]
        phase = "Pending"
    metadata: dict[str, Any] = {"name": name, "labels": {V: version}, "creationTimestamp": "2026-12-01T10:00:00Z"}
    if deleting:
        metadata["deletionTimestamp"] = "2026-12-01T10:05:00Z"
    statuses = [] if unschedulable else [{"name": "api", "image": "berth/runtime:1-cpu", "ready": ready,
                                         "restartCount": restarts, "state": state,
                                         "lastState": {"terminated": last} if last else {}}]
    return {"metadata": metadata,
            "spec": {"containers": [{"name": "api", "resources": {"requests": {"cpu": "500m", "memory": "512Mi"},
                                                                  "limits": {"memory": "512Mi"}}}]},
            "status": {"phase": phase, "conditions": conditions, "containerStatuses": statuses}}


@pytest.mark.parametrize(("given", "status", "reason"), [
    (pod(waiting={"reason": "ImagePullBackOff", "message": "Back-off pulling image \"berth/runtime:1-cpu\""}),
     APIStatus.ERROR, "image pull failed: berth/runtime:1-cpu: Back-off pulling image \"berth/runtime:1-cpu\""),
    (pod(waiting={"reason": "ErrImagePull", "message": "manifest unknown"}),
     APIStatus.ERROR, "image pull failed: berth/runtime:1-cpu: manifest unknown"),
    (pod(waiting={"reason": "CrashLoopBackOff", "message": "back-off 40s"},
         last={"reason": "Error", "exitCode": 1, "message": "ModuleNotFoundError: No module named 'sklearn'"}),
     APIStatus.ERROR, "crash loop: exited with code 1: ModuleNotFoundError: No module named 'sklearn'"),
    (pod(waiting={"reason": "CrashLoopBackOff"}, last={"reason": "Error", "exitCode": 3}),
     APIStatus.ERROR, "crash loop: exited with code 3"),
    (pod(waiting={"reason": "CrashLoopBackOff"}, last={"reason": "OOMKilled", "exitCode": 137}),
     APIStatus.ERROR_OOM, "out of memory: container api was killed at its memory limit (512Mi) (OOMKilled)"),
    (pod(terminated={"reason": "OOMKilled", "exitCode": 137}),
     APIStatus.ERROR_OOM, "out of memory: container api was killed at its memory limit (512Mi) (OOMKilled)"),
    (pod(waiting={"reason": "CreateContainerConfigError", "message": "configmap \"x\" not found"}),
     APIStatus.ERROR, "cannot start the container: configmap \"x\" not found"),
    (pod(unschedulable="0/3 nodes are available: 3 Insufficient nvidia.com/gpu."),
     APIStatus.COMPUTE_UNAVAILABLE,
     "compute unavailable: pod iris-abc: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu."),
], ids=["image-pull-backoff", "err-image-pull", "crash-loop", "crash-loop-no-message", "crash-loop-oom",
        "oom-terminated", "config-error", "unschedulable"])
def test_pod_failures_in_berth_words(given: dict[str, Any], status: APIStatus, reason: str) -> None:
    failure = pod_failure(given)
    assert failure is not None
    assert (failure.status, failure.reason, failure.pod) == (status, reason, "iris-abc")


@pytest.mark.parametrize("given", [pod(), pod(ready=True), pod(waiting={"reason": "ContainerCreating"}),
                                   pod(phase="Pending")], ids=["running", "ready", "creating", "pending"])
def test_pods_that_merely_start_are_no_failure(given: dict[str, Any]) -> None:
    assert pod_failure(given) is None


@pytest.mark.parametrize(("given", "state"), [
    (pod(ready=True), ReplicaState.READY),
    (pod(), ReplicaState.INITIALIZING),
    (pod(deleting=True, ready=True), ReplicaState.TERMINATING),
    (pod(unschedulable="no room"), ReplicaState.PENDING),
    (pod(waiting={"reason": "CrashLoopBackOff"}), ReplicaState.FAILED),
    (pod(terminated={"reason": "OOMKilled"}), ReplicaState.KILLED_OOM),
])
def test_replica_states(given: dict[str, Any], state: ReplicaState) -> None:
    assert replica_state(given) is state


@pytest.mark.parametrize(("dep", "pods", "status", "up_to_date", "error"), [
    (deployment(), [pod(f"p{i}", ready=True) for i in range(3)], APIStatus.LIVE, 3, None),
    (deployment(), [], APIStatus.LIVE, 3, None),  # no pods readable: the Deployment's counts
    (deployment(updated=1, available=2), [pod("old", "v1", ready=True), pod("new")], APIStatus.UPDATING, 0, None),
    (deployment(updated=1, available=2),
     [pod("old", "v1", ready=True), pod("new", waiting={"reason": "ImagePullBackOff", "message": "not found"})],
     APIStatus.ERROR, 0, "image pull failed: berth/runtime:1-cpu: not found"),
    (deployment(updated=1, available=2),
     [pod("old", "v1", ready=True), pod("new", waiting={"reason": "CrashLoopBackOff"},
                                        last={"reason": "OOMKilled"})],
     APIStatus.ERROR_OOM, 0, "out of memory: container api was killed at its memory limit (512Mi) (OOMKilled)"),
    (deployment(updated=1, available=0), [pod("new", unschedulable="0/1 nodes: Insufficient cpu")],
     APIStatus.COMPUTE_UNAVAILABLE, 0, "compute unavailable: pod new: 0/1 nodes: Insufficient cpu"),
    # An old pod still stopping may free what the new one waits for: still updating.
    (deployment(updated=1, available=0, total=2),
     [pod("old", "v1", deleting=True), pod("new", unschedulable="0/1 nodes: Insufficient cpu")],
     APIStatus.UPDATING, 0, None),
    # A failing pod of an older version does not make the new version an error.
    (deployment(updated=1, available=1, total=2),
     [pod("old", "v1", waiting={"reason": "CrashLoopBackOff"}), pod("new", ready=True)],
     APIStatus.UPDATING, 1, None),
    (deployment(deadline=True, updated=1, available=1),
     [pod("old", "v1", ready=True), pod("new", waiting={"reason": "CrashLoopBackOff"},
                                        last={"exitCode": 1, "message": "boom"})],
     APIStatus.ERROR, 0, "rollout of version v2 failed: deployment 'iris' exceeded its progress deadline; "
                         "crash loop: exited with code 1: boom"),
    (deployment(deadline=True, updated=1, available=1), [pod("old", "v1", ready=True)],
     APIStatus.ERROR, 0, "rollout of version v2 failed: deployment 'iris' exceeded its progress deadline"),
], ids=["live", "live-no-pods", "updating", "image-pull", "oom", "unschedulable", "making-room",
        "old-version-crashing", "deadline-crash", "deadline"])
def test_summary(dep: dict[str, Any], pods: list[dict[str, Any]], status: APIStatus, up_to_date: int,
                 error: str | None) -> None:
    summary = summarize(dep, pods)
    assert (summary.status, summary.up_to_date, summary.error) == (status, up_to_date, error)
    assert summary.version == "v2"


def test_a_crash_loop_says_the_exception_and_keeps_the_traceback() -> None:
    trace = "Traceback (most recent call last):\n  File \"predictor.py\", line 3\nKeyError: 'x'"
    crashing = pod(waiting={"reason": "CrashLoopBackOff"}, last={"reason": "Error", "exitCode": 1, "message": trace})
    failure = pod_failure(crashing)
    assert failure is not None and failure.reason == "crash loop: exited with code 1: KeyError: 'x'"
    assert failure.detail == trace
    summary = summarize(deployment(updated=1, available=0), [crashing])
    assert (summary.error, summary.traceback) == (failure.reason, trace)


def test_summary_serves_the_old_version_until_a_new_pod_is_ready() -> None:
    summary = summarize(deployment(updated=1, available=1), [pod("old", "v1", ready=True), pod("new")])
    assert (summary.serving_version, summary.stale, summary.requested) == ("v1", 1, 3)


def test_replica_row_has_the_local_keys() -> None:
    row = replica_row(pod(ready=True, restarts=2), now=(timestamp("2026-12-01T10:00:00Z") or 0) + 90)
    assert row["id"] == "iris-abc" and row["status"] == "ready" and row["version"] == "v2"
    assert (row["restarts"], row["age"], row["cpu"], row["mem"]) == (2, 90.0, 0.5, 512 * 2**20)
    assert row["last_error"] is None and row["pending_reason"] is None
    pending = replica_row(pod(unschedulable="no room"), now=0)
    assert pending["pending_reason"] == "compute unavailable: pod iris-abc: no room"


@pytest.mark.parametrize(("text", "value"), [("500m", 0.5), ("2", 2.0), ("1Gi", 2**30), ("1.5G", 1.5e9),
                                             (None, None), ("lots", None)])
def test_quantities(text: str | None, value: float | None) -> None:
    assert quantity(text) == value
