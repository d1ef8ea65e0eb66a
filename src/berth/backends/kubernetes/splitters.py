"""Traffic splitters on a cluster: applied after the APIs of their file, refused when an API they use is
missing, read back from their HTTPRoutes, and guarding the APIs they use against deletion."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import httpx2

from berth.backends.base import APIDocument, Change
from berth.backends.kubernetes.cluster import Cluster, HTTPRoute, code, key
from berth.backends.kubernetes.labels import VERSION_LABEL
from berth.backends.kubernetes.render_splitter import KIND_LABEL, SPLITTER_KIND, splitter_of
from berth.config.splitter import TrafficSplitter
from berth.errors import Conflict, NotFound


def routes(cluster: Cluster) -> list[dict[str, Any]]:
    """The splitters' HTTPRoutes; none on a cluster without the Gateway API's CRDs."""
    try:
        return cluster.listed(HTTPRoute, {KIND_LABEL: SPLITTER_KIND})
    except httpx2.HTTPStatusError as exc:
        if code(exc) == 404:
            return []
        raise


def deploy(cluster: Cluster, splitters: Iterable[TrafficSplitter], rendered: Mapping[str, list[dict[str, Any]]],
           deploying: set[str], where: str) -> list[Change]:
    """Apply each splitter's HTTPRoute (rendered, by name) once the APIs it uses exist."""
    changes = []
    for splitter in splitters:
        missing = [name for name in splitter.api_names if name not in deploying and cluster.deployment(name) is None]
        if missing:
            raise NotFound(f"traffic splitter {splitter.name!r} uses {', '.join(map(repr, missing))}, not deployed "
                           f"in {where}", hint="deploy those APIs first, or list them in the same file")
        if cluster.deployment(splitter.name) is not None:
            raise Conflict(f"{splitter.name!r} is the name of an API in {where}; APIs and traffic splitters share "
                           "one namespace", hint="rename the splitter")
        objects = rendered.get(splitter.name, [])
        previous = cluster.get(HTTPRoute, splitter.name)
        cluster.apply(objects)
        cluster.prune(splitter.name, {key(o) for o in objects}, retain_mounted=False)
        version = objects[0]["metadata"]["labels"][VERSION_LABEL] if objects else ""
        before = ((previous or {}).get("metadata") or {}).get("labels", {}).get(VERSION_LABEL)
        action = "creating" if previous is None else "up to date" if before == version else "updating"
        message = f"{splitter.name} is up to date" if action == "up to date" else f"{action} {splitter.name}"
        changes.append(Change(api=splitter.name, action=action, version=version, message=message))
    return changes


def refuse_delete(cluster: Cluster, api: str) -> None:
    users = [s.name for s in (splitter_of(route) for route in routes(cluster)) if s and api in s.api_names]
    if users:
        raise Conflict(f"cannot delete {api!r}: traffic splitter {', '.join(map(repr, users))} sends requests to it",
                       hint=f"remove {api!r} from the splitter's apis (and deploy it), or delete {users[0]!r} first")


def documents(cluster: Cluster, status: Callable[[str], str], url: Callable[[str, str], str]) -> list[APIDocument]:
    """Each splitter as `berth get` shows it; request counts live in the cluster's metrics, not here."""
    found = []
    for route in routes(cluster):
        splitter = splitter_of(route)
        if splitter is None:
            continue
        apis = [{"name": b.name, "weight": b.weight, "shadow": b.shadow, "status": status(b.name), "requests": 0,
                 "2XX": 0, "4XX": 0, "5XX": 0, "timeouts": 0, "errors": 0, "dropped": 0, "in_flight": 0}
                for b in splitter.apis]
        found.append({"name": splitter.name, "kind": "TrafficSplitter", "endpoint": splitter.endpoint,
                      "url": url(splitter.name, splitter.endpoint), "split_by": splitter.split_by,
                      "api_keys": splitter.networking.api_keys, "apis": apis, "requests": 0,
                      "created_at": 0.0, "last_update": 0.0})
    return sorted(found, key=lambda doc: doc["name"])
