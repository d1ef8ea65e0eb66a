"""A traffic splitter on a cluster: one Gateway API HTTPRoute, as Cortex's was one Istio VirtualService.

One rule: its endpoint as a PathPrefix, rewritten to `/` as the APIs' own routes are; a backendRef per
serving API (its Service, or the activator for an API that may scale to zero) with the splitter's
weight; the shadow API as a RequestMirror filter (the Gateway sends the copy and drops its answer).
Each backendRef adds `x-berth-api` to its responses, as the local gateway does (backendRef filters are
"implementation-specific" in Gateway API: a Gateway that lacks them still splits, without the header).
The splitter's spec rides along as an annotation, for `berth get` to read back.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from berth.backends.kubernetes.labels import object_labels
from berth.backends.kubernetes.render_activator import ACTIVATOR
from berth.backends.kubernetes.render_route import API_HEADER, gateway_duration, through_activator
from berth.backends.kubernetes.render_workload import SERVICE_PORT
from berth.backends.kubernetes.settings import ClusterSettings
from berth.config.schema import RealtimeAPI
from berth.config.splitter import TrafficSplitter
from berth.errors import ConfigError

KIND_LABEL = "berth.dev/kind"
SPLITTER_KIND = "TrafficSplitter"
SPEC_ANNOTATION = "berth.dev/spec"
DEFAULT_TIMEOUT = 600.0  # networking.timeout's default, for an API not in this file


def splitter_version(splitter: TrafficSplitter) -> str:
    material = json.dumps(splitter.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(material.encode()).hexdigest()[:10]


def splitter_route(splitter: TrafficSplitter, settings: ClusterSettings,
                   apis: Mapping[str, RealtimeAPI]) -> dict[str, Any]:
    """`apis`: the APIs of the same file, by name (others are taken as deployed, served directly)."""
    ref = settings.gateway_ref
    if ref is None:
        raise ConfigError([f"traffic splitter {splitter.name}: on Kubernetes a splitter is an HTTPRoute, and this "
                           "environment names no Gateway"],
                          hint="name one with `berth env configure <env> --gateway NAMESPACE/NAME`")
    name, namespace = ref
    parent: dict[str, Any] = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": name}
    if namespace is not None:
        parent["namespace"] = namespace
    version = splitter_version(splitter)
    labels = dict(sorted({**object_labels(splitter.name, version), KIND_LABEL: SPLITTER_KIND}.items()))
    filters: list[dict[str, Any]] = [{"type": "URLRewrite", "urlRewrite": {
        "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}]
    shadow = splitter.shadow
    if shadow is not None:
        filters.append({"type": "RequestMirror", "requestMirror": {"backendRef": _service(shadow.name, apis)}})
    timeout = max(_timeout(apis.get(b.name)) for b in splitter.serving)
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": splitter.name, "namespace": settings.namespace, "labels": labels,
                     "annotations": {SPEC_ANNOTATION: json.dumps(splitter.model_dump(mode="json"), sort_keys=True)}},
        "spec": {
            "parentRefs": [parent],
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": splitter.endpoint}}],
                "filters": filters,
                "backendRefs": [_backend(b.name, b.weight, apis) for b in splitter.serving],
                "timeouts": {"request": gateway_duration(timeout)},
            }],
        },
    }


def _timeout(api: RealtimeAPI | None) -> float:
    """As the API's own route: its networking.timeout, plus the wait for a pod when it may scale to zero."""
    if api is None:
        return DEFAULT_TIMEOUT
    extra = api.autoscaling.scale_from_zero_timeout if through_activator(api) else 0.0
    return api.networking.timeout + extra


def _service(api: str, apis: Mapping[str, RealtimeAPI]) -> dict[str, Any]:
    known = apis.get(api)
    name = ACTIVATOR if known is not None and through_activator(known) else api
    return {"group": "", "kind": "Service", "name": name, "port": SERVICE_PORT}


def _backend(api: str, weight: int, apis: Mapping[str, RealtimeAPI]) -> dict[str, Any]:
    ref = {**_service(api, apis), "weight": weight}
    filters: list[dict[str, Any]] = []
    if ref["name"] == ACTIVATOR:  # the activator finds the API by this request header
        filters.append({"type": "RequestHeaderModifier", "requestHeaderModifier": {
            "set": [{"name": API_HEADER, "value": api}]}})
    filters.append({"type": "ResponseHeaderModifier", "responseHeaderModifier": {
        "set": [{"name": API_HEADER, "value": api}]}})
    ref["filters"] = filters
    return ref


def splitter_of(route: Mapping[str, Any]) -> TrafficSplitter | None:
    """The splitter an HTTPRoute berth rendered stands for, from its annotation."""
    metadata = route.get("metadata") or {}
    if (metadata.get("labels") or {}).get(KIND_LABEL) != SPLITTER_KIND:
        return None
    text = (metadata.get("annotations") or {}).get(SPEC_ANNOTATION)
    try:
        return TrafficSplitter.model_validate(json.loads(text)) if text else None
    except ValueError:
        return None
