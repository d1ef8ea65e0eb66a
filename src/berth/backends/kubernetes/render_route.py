"""A Gateway API HTTPRoute: the API's endpoint on the environment's Gateway, to its Service.

Like the local gateway, the endpoint is a path prefix matched by whole segments (`/iris` matches
`/iris` and `/iris/v2/...`, not `/irises`) and is stripped before the request reaches the replica, which
serves predictions at `/`.
"""

from __future__ import annotations

import math
from typing import Any

from berth.backends.kubernetes.render_activator import ACTIVATOR
from berth.backends.kubernetes.render_workload import SERVICE_PORT, metadata
from berth.backends.kubernetes.settings import ClusterSettings
from berth.config.schema import RealtimeAPI


def gateway_duration(seconds: float) -> str:
    """A GEP-2257 duration (`^([0-9]{1,5}(h|m|s|ms)){1,4}$`), rounded up to whole seconds."""
    total = math.ceil(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{value}{unit}" for value, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if value]
    return "".join(parts) or "0s"


API_HEADER = "x-berth-api"  # what the activator reads (berth.activator.state.API_HEADER)


def through_activator(api: RealtimeAPI) -> bool:
    """Whether the API's traffic goes through the activator: it may have no pod."""
    return api.autoscaling.min_replicas == 0


def http_route(api: RealtimeAPI, settings: ClusterSettings, version: str) -> dict[str, Any] | None:
    ref = settings.gateway_ref
    if ref is None:
        return None
    name, namespace = ref
    parent: dict[str, Any] = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": name}
    if namespace is not None:
        parent["namespace"] = namespace
    filters: list[dict[str, Any]] = [{"type": "URLRewrite", "urlRewrite": {
        "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}]
    backend, timeout = api.name, api.networking.timeout
    if through_activator(api):
        filters.append({"type": "RequestHeaderModifier", "requestHeaderModifier": {
            "set": [{"name": API_HEADER, "value": api.name}]}})
        backend, timeout = ACTIVATOR, timeout + api.autoscaling.scale_from_zero_timeout
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": metadata(api, api.name, settings, version),
        "spec": {
            "parentRefs": [parent],
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": api.endpoint}}],
                "filters": filters,
                "backendRefs": [{"group": "", "kind": "Service", "name": backend, "port": SERVICE_PORT}],
                "timeouts": {"request": gateway_duration(timeout)},
            }],
        },
    }
