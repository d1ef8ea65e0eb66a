"""What a Deployment and its pods say, in berth's status words. Pure: dicts in, values out.

* `rollout_status`: kubectl's `rollout status` rules for a Deployment (kubernetes/kubectl
  pkg/polymorphichelpers/rollout_status.go), not the `Available` condition, which is true while old pods
  still serve.
* `pod_failure`: why a pod cannot serve, as berth says it locally: an image that cannot be pulled, a crash
  loop or a container killed for memory is `error` / `error (out of memory)`; a pod the scheduler cannot
  place is `compute unavailable`, with the scheduler's message.
* `summarize`: an API's document (the fields `berth get` reads) from its Deployment and pods.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from berth.backends.kubernetes.labels import VERSION_LABEL
from berth.core.status import APIStatus, ReplicaState

__all__ = ["VERSION_LABEL", "PodFailure", "Rollout", "pod_failure", "replica_row", "rollout_status", "summarize"]
IMAGE_PULL = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"})
CONFIG_ERRORS = frozenset({"CreateContainerConfigError", "CreateContainerError", "RunContainerError"})


@dataclass(frozen=True)
class Rollout:
    """Where a Deployment's rollout stands. `failed`: it exceeded its progress deadline (kubectl exits 1)."""

    done: bool
    message: str
    failed: bool = False


def rollout_status(deployment: Mapping[str, Any]) -> Rollout:
    """kubectl's DeploymentStatusViewer.Status, step by step."""
    name = deployment.get("metadata", {}).get("name", "")
    generation = deployment.get("metadata", {}).get("generation")
    status = deployment.get("status") or {}
    observed = status.get("observedGeneration")
    if generation is not None and (observed is None or generation > observed):
        return Rollout(False, "waiting for the deployment spec update to be observed")
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
            return Rollout(False, f"deployment {name!r} exceeded its progress deadline", failed=True)
    wanted = (deployment.get("spec") or {}).get("replicas")
    updated = int(status.get("updatedReplicas") or 0)
    replicas = int(status.get("replicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    if wanted is not None and updated < int(wanted):
        return Rollout(False, f"{updated} out of {wanted} new replicas have been updated")
    if replicas > updated:
        return Rollout(False, f"{replicas - updated} old replicas are pending termination")
    if available < updated:
        return Rollout(False, f"{available} of {updated} updated replicas are available")
    return Rollout(True, f"deployment {name!r} successfully rolled out")


@dataclass(frozen=True)
class PodFailure:
    status: APIStatus  # error | error (out of memory) | compute unavailable
    reason: str  # the line `berth get` shows, starting with a word deploy --wait knows
    pod: str
    detail: str | None = None  # the whole termination message (a traceback's tail), when longer than a line


def pod_failure(pod: Mapping[str, Any]) -> PodFailure | None:
    """Why this pod cannot serve, or None while it runs or is merely starting."""
    name = pod.get("metadata", {}).get("name", "")
    status = pod.get("status") or {}
    for container in _containers(status):
        image = container.get("image") or "?"
        waiting = (container.get("state") or {}).get("waiting") or {}
        terminated = (container.get("state") or {}).get("terminated") or {}
        last = (container.get("lastState") or {}).get("terminated") or {}
        reason = waiting.get("reason")
        if reason in IMAGE_PULL:
            message = waiting.get("message") or reason
            return PodFailure(APIStatus.ERROR, f"image pull failed: {image}: {message}", name)
        if terminated.get("reason") == "OOMKilled" or last.get("reason") == "OOMKilled":
            limit = _memory_limit(pod, container.get("name"))
            return PodFailure(APIStatus.ERROR_OOM,
                              f"out of memory: container {container.get('name')} was killed at its memory "
                              f"limit{f' ({limit})' if limit else ''} (OOMKilled)", name)
        if reason == "CrashLoopBackOff":
            message = (last.get("message") or "").strip()
            return PodFailure(APIStatus.ERROR, f"crash loop: {_termination(last)}", name,
                              message if "\n" in message else None)
        if reason in CONFIG_ERRORS:
            return PodFailure(APIStatus.ERROR, f"cannot start the container: {waiting.get('message') or reason}",
                              name)
    for condition in status.get("conditions") or []:
        if (condition.get("type") == "PodScheduled" and condition.get("status") == "False"
                and condition.get("reason") == "Unschedulable"):
            return PodFailure(APIStatus.COMPUTE_UNAVAILABLE,
                              f"compute unavailable: pod {name}: {condition.get('message') or 'unschedulable'}",
                              name)
    return None


def _containers(status: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]


def _termination(terminated: Mapping[str, Any]) -> str:
    """The last termination in words: its message (the tail of a traceback, by terminationMessagePolicy)
    or its exit code."""
    if not terminated:
        return "the container keeps exiting"
    lines = (terminated.get("message") or "").strip().splitlines()
    message = lines[-1].strip() if lines else ""  # a traceback's last line: the exception
    code = terminated.get("exitCode")
    said = f"exited with code {code}" if code is not None else "exited"
    return f"{said}: {message}" if message else said


def _memory_limit(pod: Mapping[str, Any], container: str | None) -> str | None:
    for spec in (pod.get("spec") or {}).get("containers") or []:
        if spec.get("name") == container:
            return ((spec.get("resources") or {}).get("limits") or {}).get("memory")
    return None


def replica_state(pod: Mapping[str, Any]) -> ReplicaState:
    """A pod as one of berth's replica states."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    if meta.get("deletionTimestamp"):
        return ReplicaState.TERMINATING
    failure = pod_failure(pod)
    if failure is not None:
        if failure.status is APIStatus.ERROR_OOM:
            return ReplicaState.KILLED_OOM
        if failure.status is APIStatus.COMPUTE_UNAVAILABLE:
            return ReplicaState.PENDING
        return ReplicaState.FAILED
    if status.get("phase") in ("Failed", "Succeeded"):
        return ReplicaState.FAILED
    if _condition(status, "Ready"):
        return ReplicaState.READY
    if status.get("phase") == "Running" or _condition(status, "PodScheduled"):
        return ReplicaState.INITIALIZING
    return ReplicaState.PENDING


def _condition(status: Mapping[str, Any], kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True" for c in status.get("conditions") or [])


def pod_version(pod: Mapping[str, Any]) -> str | None:
    return ((pod.get("metadata") or {}).get("labels") or {}).get(VERSION_LABEL)


def deployment_version(deployment: Mapping[str, Any]) -> str | None:
    """The version the Deployment rolls out: its pod template's version label (else its own)."""
    template = ((deployment.get("spec") or {}).get("template") or {}).get("metadata") or {}
    return ((template.get("labels") or {}).get(VERSION_LABEL)
            or ((deployment.get("metadata") or {}).get("labels") or {}).get(VERSION_LABEL))


def timestamp(value: str | None) -> float | None:
    """An RFC 3339 time of the API server as unix seconds."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_SUFFIX = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30,
           "Ti": 2**40}


def quantity(value: object) -> float | None:
    """A Kubernetes quantity ("500m", "2Gi", 1) as a number; None when absent or unreadable."""
    if value is None:
        return None
    match = _QUANTITY.match(str(value))
    if match is None or match.group(2) not in _SUFFIX:
        return None
    try:
        return float(match.group(1)) * _SUFFIX[match.group(2)]
    except ValueError:
        return None


def replica_row(pod: Mapping[str, Any], now: float) -> dict[str, Any]:
    """A pod as a row of the replica table (the local daemon's `replica_row` keys)."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    failure = pod_failure(pod)
    containers = (pod.get("spec") or {}).get("containers") or []
    requests = ((containers[0].get("resources") or {}).get("requests") or {}) if containers else {}
    limits = ((containers[0].get("resources") or {}).get("limits") or {}) if containers else {}
    mem = quantity(requests.get("memory"))
    gpus = quantity(limits.get("nvidia.com/gpu")) or 0
    created = timestamp(meta.get("creationTimestamp"))
    return {
        "id": meta.get("name", ""),
        "version": pod_version(pod) or "",
        "status": str(replica_state(pod)),
        "pid": None,
        "processes": None,
        "restarts": sum(int(c.get("restartCount") or 0) for c in status.get("containerStatuses") or []),
        "age": max(0.0, now - created) if created is not None else 0.0,
        "last_error": failure.reason if failure and failure.status is not APIStatus.COMPUTE_UNAVAILABLE else None,
        "pending_reason": failure.reason if failure and failure.status is APIStatus.COMPUTE_UNAVAILABLE else None,
        "cpu": quantity(requests.get("cpu")),
        "mem": int(mem) if mem is not None else None,
        # A whole GPU per count: the device plugin gives no share, and no index berth could know.
        "gpus": [[f"{index}", 1.0] for index in range(int(gpus))],
        "rss": None,
        "node": (pod.get("spec") or {}).get("nodeName"),
    }


@dataclass(frozen=True)
class Summary:
    status: APIStatus
    up_to_date: int
    stale: int
    failed: int
    requested: int
    version: str
    serving_version: str
    error: str | None
    rollout: Rollout
    traceback: str | None = None


def summarize(deployment: Mapping[str, Any], pods: Iterable[Mapping[str, Any]]) -> Summary:
    """An API's status from its Deployment and pods: live once the rollout is done by kubectl's rules; an
    error as soon as a pod of the new version fails in a way waiting does not mend; else updating."""
    pods = list(pods)
    version = deployment_version(deployment) or ""
    rollout = rollout_status(deployment)
    status = deployment.get("status") or {}
    current = [pod for pod in pods if pod_version(pod) == version]
    ready = [pod for pod in pods if replica_state(pod) is ReplicaState.READY]
    if pods:
        up_to_date = sum(1 for pod in ready if pod_version(pod) == version)
        stale = len(ready) - up_to_date
    else:  # no pods listed (or none readable): the Deployment's own counts
        up_to_date = min(int(status.get("updatedReplicas") or 0), int(status.get("availableReplicas") or 0))
        stale = max(0, int(status.get("availableReplicas") or 0) - up_to_date)
    failures = [failure for pod in current if (failure := pod_failure(pod)) is not None]
    wanted = (deployment.get("spec") or {}).get("replicas")
    requested = int(wanted) if wanted is not None else int(status.get("replicas") or 0)
    error: str | None = None
    if rollout.failed:
        cause = next((f for f in failures if f.status is APIStatus.ERROR_OOM), None) or \
            next((f for f in failures if f.status is APIStatus.ERROR), None) or next(iter(failures), None)
        api_status = cause.status if cause is not None else APIStatus.ERROR
        error = f"rollout of version {version} failed: {rollout.message}" + (f"; {cause.reason}" if cause else "")
        if api_status is APIStatus.COMPUTE_UNAVAILABLE and cause is not None:
            error = cause.reason
    elif rollout.done:
        api_status = APIStatus.LIVE
    else:
        api_status = APIStatus.UPDATING
        for wanted_status in (APIStatus.ERROR_OOM, APIStatus.ERROR, APIStatus.COMPUTE_UNAVAILABLE):
            found = next((f for f in failures if f.status is wanted_status), None)
            if found is None:
                continue
            # A pod waiting for room while older pods stop may fit once they are gone: not yet an error.
            if wanted_status is APIStatus.COMPUTE_UNAVAILABLE and any(
                    replica_state(pod) is ReplicaState.TERMINATING for pod in pods):
                break
            api_status, error = wanted_status, found.reason
            break
    serving = version
    if up_to_date == 0 and ready:
        serving = Counter(pod_version(pod) or "" for pod in ready).most_common(1)[0][0]
    detail = next((f.detail for f in failures if f.detail and f.reason in (error or "")), None)
    return Summary(status=api_status, up_to_date=up_to_date, stale=stale, failed=len(failures),
                   requested=requested, version=version, serving_version=serving, error=error, rollout=rollout,
                   traceback=detail)
