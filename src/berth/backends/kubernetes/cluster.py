"""The few calls berth makes to a Kubernetes API server, over lightkube's sync client (one command, one client).

Objects travel as plain dicts (what `render` produces and `status` reads); lightkube's classes are only the
wire format. Everything berth creates carries the managed-by and API labels (`labels.py`), which is how it
finds, prunes and deletes an API's objects again. Label selectors are sent to the server and checked again
here: a fake server that ignores them (kmock) must not make prune delete another API's objects.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx2
from lightkube import Client
from lightkube.generic_resource import GenericNamespacedResource, create_api_info
from lightkube.types import PatchType

from berth.backends.kubernetes.labels import API_LABEL, MANAGED_BY, api_selector

FIELD_MANAGER = "berth"
# The manager that keeps a new Deployment's initial replica count once berth's own applies leave the field
# out (Kubernetes' server-side apply docs, "Transferring ownership": without a second owner, dropping the
# field from berth's apply would reset it to the default of 1). The autoscaler takes it over when it scales.
REPLICAS_MANAGER = "berth-initial-replicas"
RESTARTED_AT = "berth.dev/restarted-at"  # the pod template annotation a refresh sets (kubectl: restartedAt)
CONTAINER = "api"

Resource = type[GenericNamespacedResource]


def _resource(group: str, version: str, kind: str, plural: str) -> Resource:
    """A kind whose objects stay plain dicts both ways. lightkube's typed models would check every object
    against one Kubernetes minor's schema as they decode; berth reads a few fields of whatever the server
    holds. Not registered in lightkube's registry: other users of lightkube in the process are unaffected."""
    class DictResource(GenericNamespacedResource):
        _api_info = create_api_info(group, version, kind, plural)

    DictResource.__name__ = DictResource.__qualname__ = kind
    return DictResource


ConfigMap = _resource("", "v1", "ConfigMap", "configmaps")
Secret = _resource("", "v1", "Secret", "secrets")
Service = _resource("", "v1", "Service", "services")
Pod = _resource("", "v1", "Pod", "pods")
Event = _resource("", "v1", "Event", "events")
Deployment = _resource("apps", "v1", "Deployment", "deployments")
ReplicaSet = _resource("apps", "v1", "ReplicaSet", "replicasets")
HorizontalPodAutoscaler = _resource("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers")
PodDisruptionBudget = _resource("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets")
ScaledObject = _resource("keda.sh", "v1alpha1", "ScaledObject", "scaledobjects")
HTTPRoute = _resource("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes")
Gateway = _resource("gateway.networking.k8s.io", "v1", "Gateway", "gateways")

# Every kind a render may produce, in the order a delete removes them (what routes and scales first).
KINDS: dict[str, Resource] = {
    "HTTPRoute": HTTPRoute,
    "ScaledObject": ScaledObject,
    "HorizontalPodAutoscaler": HorizontalPodAutoscaler,
    "PodDisruptionBudget": PodDisruptionBudget,
    "Deployment": Deployment,
    "Service": Service,
    "ConfigMap": ConfigMap,
    "Secret": Secret,
}
# The activator's RBAC: applied (once per namespace), never listed for an API's prune or delete, so credentials
# that may not list Roles can still prune.
ServiceAccount = _resource("", "v1", "ServiceAccount", "serviceaccounts")
Role = _resource("rbac.authorization.k8s.io", "v1", "Role", "roles")
RoleBinding = _resource("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings")
APPLIED: dict[str, Resource] = {**KINDS, "ServiceAccount": ServiceAccount, "Role": Role, "RoleBinding": RoleBinding}
Key = tuple[str, str]  # (kind, name)


def code(exc: httpx2.HTTPStatusError) -> int:
    """The HTTP status of a refusal. lightkube raises its ApiError (an HTTPStatusError) only when the answer's
    content type is exactly application/json; a server that adds a charset (kmock) gets the plain error."""
    return exc.response.status_code


def key(obj: Mapping[str, Any]) -> Key:
    return str(obj.get("kind")), str((obj.get("metadata") or {}).get("name"))


def matches(obj: Mapping[str, Any], selector: Mapping[str, str]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(labels.get(name) == value for name, value in selector.items())


def mounted(template: Mapping[str, Any]) -> set[Key]:
    """The ConfigMaps and Secrets a pod template mounts as volumes."""
    volumes = ((template.get("spec") or {}).get("volumes")) or []
    found: set[Key] = set()
    for volume in volumes:
        if (volume.get("configMap") or {}).get("name"):
            found.add(("ConfigMap", str(volume["configMap"]["name"])))
        if (volume.get("secret") or {}).get("secretName"):
            found.add(("Secret", str(volume["secret"]["secretName"])))
    return found


def api_labels(api: str) -> dict[str, str]:
    """What every object of one API carries, whatever its version."""
    return {MANAGED_BY[0]: MANAGED_BY[1], API_LABEL: api}


def as_dict(obj: Any) -> dict[str, Any]:
    return dict(obj.to_dict()) if hasattr(obj, "to_dict") else dict(obj)


class Cluster:
    """One namespace of one cluster, as berth uses it. A server-side apply creates what does not exist yet
    (a real API server does; the tests' fake needs a shim for it, which lives in the tests)."""

    def __init__(self, client: Client, namespace: str) -> None:
        self.client = client
        self.namespace = namespace

    # --- writing -----------------------------------------------------------------------------------------
    def apply(self, objects: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Server-side apply each object (field manager `berth`, conflicts forced: these are berth's own)."""
        applied = []
        for data in objects:
            kind = str(data.get("kind"))
            if kind not in APPLIED:
                raise ValueError(f"berth does not apply objects of kind {kind!r}")
            obj = APPLIED[kind](**dict(data))
            result = self.client.apply(obj, field_manager=FIELD_MANAGER, force=True,  # type: ignore[call-overload]
                                       namespace=self.namespace)
            applied.append(as_dict(result))
        return applied

    def hand_over_replicas(self, name: str, replicas: int) -> None:
        """Give a just-created Deployment's `spec.replicas` a second owner (REPLICAS_MANAGER), so that berth's
        later applies, which leave the field to the autoscaler, do not reset it."""
        body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": self.namespace},
                "spec": {"replicas": replicas}}
        self.client.apply(Deployment(**body), field_manager=REPLICAS_MANAGER, force=True,  # type: ignore[call-overload]
                          namespace=self.namespace)

    def in_use(self, api: str) -> set[Key]:
        """The ConfigMaps and Secrets that a ReplicaSet of the API mounts: the ones a rollback, or an old pod
        restarting mid-rollout, still needs. The Deployment's revisionHistoryLimit bounds how many remain."""
        used: set[Key] = set()
        for rs in self.replica_sets(api_selector(api)):
            used |= mounted(((rs.get("spec") or {}).get("template")) or {})
        return used

    def labelled(self, api: str) -> list[dict[str, Any]]:
        """Every object berth made for the API, of every kind it renders (kinds not served are skipped)."""
        found: list[dict[str, Any]] = []
        selector = api_labels(api)
        for kind, resource in KINDS.items():
            try:
                listed = self._list(resource, selector)
            except httpx2.HTTPStatusError as exc:
                # Credentials that may not list Secrets: berth cannot see (so neither prunes nor deletes) the
                # `.env` Secrets; the rest of the API's objects are still found.
                if kind == "Secret" and code(exc) == 403:
                    continue
                raise
            for obj in listed:
                obj.setdefault("kind", kind)
                found.append(obj)
        return found

    def prune(self, api: str, keep: Iterable[Key], *, retain_mounted: bool = True) -> list[Key]:
        """Delete the API's objects (by its labels) that are not in `keep`, the set just applied; returns
        what was deleted. Other APIs' objects and objects berth did not label are never touched.
        With `retain_mounted`, the code ConfigMaps and `.env` Secrets a ReplicaSet of the API still mounts
        are kept too (see `in_use`)."""
        kept = set(keep) | (self.in_use(api) if retain_mounted else set())
        pruned = []
        for obj in self.labelled(api):
            if key(obj) not in kept:
                self._delete(obj)
                pruned.append(key(obj))
        return pruned

    def delete_api(self, api: str) -> list[Key]:
        """Delete every object labelled as the API's; the pods stop as their Deployment goes."""
        deleted = []
        for obj in self.labelled(api):
            self._delete(obj)
            deleted.append(key(obj))
        return deleted

    def restart(self, name: str, now: datetime | None = None) -> dict[str, Any]:
        """`kubectl rollout restart`: a pod template annotation changes, so the Deployment rolls its pods."""
        stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
        patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
        result = self.client.patch(Deployment, name, patch, namespace=self.namespace,
                                   patch_type=PatchType.MERGE, field_manager=FIELD_MANAGER)
        return as_dict(result)

    def _delete(self, obj: Mapping[str, Any]) -> None:
        kind, name = key(obj)
        try:
            self.client.delete(KINDS[kind], name, namespace=self.namespace)
        except httpx2.HTTPStatusError as exc:
            if code(exc) != 404:  # gone already: what was asked
                raise

    # --- reading -----------------------------------------------------------------------------------------
    def check(self) -> None:
        """Raise unless the API server answers (a list of one Deployment: what berth needs to be allowed)."""
        list(self.client.list(Deployment, namespace=self.namespace, chunk_size=1,
                              labels={MANAGED_BY[0]: MANAGED_BY[1]}))

    def deployments(self) -> list[dict[str, Any]]:
        """Berth's Deployments in the namespace (one per API), sorted by name."""
        found = self._list(Deployment, {MANAGED_BY[0]: MANAGED_BY[1]})
        # The shared activator is berth's too, but no API: it carries no API label.
        found = [d for d in found if API_LABEL in ((d.get("metadata") or {}).get("labels") or {})]
        return sorted(found, key=lambda d: d["metadata"]["name"])

    def deployment(self, name: str) -> dict[str, Any] | None:
        return self.get(Deployment, name)

    def get(self, resource: Resource, name: str) -> dict[str, Any] | None:
        try:
            return as_dict(self.client.get(resource, name, namespace=self.namespace))
        except httpx2.HTTPStatusError as exc:
            if code(exc) == 404:
                return None
            raise

    def pods(self, selector: Mapping[str, str]) -> list[dict[str, Any]]:
        return sorted(self._list(Pod, selector), key=lambda p: p["metadata"]["name"])

    def replica_sets(self, selector: Mapping[str, str]) -> list[dict[str, Any]]:
        return self._list(ReplicaSet, selector)

    def config_maps(self, selector: Mapping[str, str]) -> list[dict[str, Any]]:
        return self._list(ConfigMap, selector)

    def events(self, names: Iterable[str]) -> list[dict[str, Any]]:
        """Events about the named objects (the Deployment, its ReplicaSets and pods), oldest first."""
        wanted = set(names)
        try:
            found = [as_dict(e) for e in self.client.list(Event, namespace=self.namespace)]
        except httpx2.HTTPStatusError as exc:
            if code(exc) in (403, 404):
                return []
            raise
        found = [e for e in found if (e.get("involvedObject") or {}).get("name") in wanted]
        return sorted(found, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")

    def keda_installed(self) -> bool:
        """Whether the cluster serves keda.sh/v1alpha1 ScaledObjects (KEDA's CRD): a list answered 404 means
        the resource is unknown to the server, as discovery would say."""
        try:
            list(self.client.list(ScaledObject, namespace=self.namespace, chunk_size=1))
        except httpx2.HTTPStatusError as exc:
            # Forbidden or failing: the resource exists; a missing permission shows at apply.
            return code(exc) != 404
        return True

    def gateway_address(self, name: str, namespace: str | None) -> str | None:
        """The first address a Gateway's status lists (a LoadBalancer IP or host name), if any yet."""
        try:
            gateway = self.client.get(Gateway, name, namespace=namespace or self.namespace)
        except httpx2.HTTPStatusError as exc:
            if code(exc) == 404:
                return None
            raise
        addresses = (as_dict(gateway).get("status") or {}).get("addresses") or []
        return str(addresses[0].get("value")) if addresses and addresses[0].get("value") else None

    def listed(self, resource: Resource, selector: Mapping[str, str]) -> list[dict[str, Any]]:
        """berth's objects of one kind with these labels (traffic splitters' HTTPRoutes)."""
        return self._list(resource, selector)

    def _list(self, resource: Resource, selector: Mapping[str, str]) -> list[dict[str, Any]]:
        try:
            found = [as_dict(obj) for obj in self.client.list(resource, namespace=self.namespace,
                                                               labels=dict(selector))]
        except httpx2.HTTPStatusError as exc:
            if code(exc) == 404:  # a kind the cluster does not serve (no KEDA, no Gateway API)
                return []
            raise
        return [obj for obj in found if matches(obj, selector)]

    # --- logs --------------------------------------------------------------------------------------------
    def logs(self, pods: Callable[[], list[str]], follow: bool = False, tail: int = 200,
             relist: float = 5.0) -> Iterator[str]:
        """The pods' output as lines prefixed `[pod] `: each pod's last `tail` lines, pod after pod; with
        `follow`, the streams merged as lines arrive, and pods that start later joined (re-listed every
        `relist` seconds) until the caller stops reading. A pod's stream is read once: one that ends (its
        container exited) is not started again, as with `kubectl logs -f`."""
        if not follow:
            for pod in pods():
                yield from self._pod_lines(pod, follow=False, tail=tail)
            return
        lines: queue.Queue[str] = queue.Queue()
        stop = threading.Event()
        started: set[str] = set()

        def pump(pod: str) -> None:
            try:
                for line in self._pod_lines(pod, follow=True, tail=tail):
                    if stop.is_set():
                        return
                    lines.put(line)
            except httpx2.HTTPError as exc:
                lines.put(f"[{pod}] (log stream ended: {exc})\n")

        try:
            next_list = 0.0
            while True:
                if time.monotonic() >= next_list:
                    for pod in pods():
                        if pod not in started:
                            started.add(pod)
                            threading.Thread(target=pump, args=(pod,), name=f"logs-{pod}", daemon=True).start()
                    next_list = time.monotonic() + relist
                try:
                    yield lines.get(timeout=0.2)
                except queue.Empty:
                    continue
        finally:
            stop.set()

    def _pod_lines(self, pod: str, follow: bool, tail: int) -> Iterator[str]:
        try:
            for line in self.client.log(pod, namespace=self.namespace, container=CONTAINER, follow=follow,
                                        tail_lines=tail):
                yield f"[{pod}] {line}" if line.endswith("\n") else f"[{pod}] {line}\n"
        except httpx2.HTTPStatusError as exc:
            if code(exc) in (400, 404):  # not started yet, or gone: nothing to show of it
                return
            raise
