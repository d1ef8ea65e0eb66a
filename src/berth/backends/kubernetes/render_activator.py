"""The activator: one small Deployment per namespace that the HTTPRoutes of APIs with `min_replicas: 0` go
through (`python -m berth.activator`). It forwards at once while the API has a ready pod, and otherwise holds
the request, scales the API's Deployment to 1 through the scale subresource, and forwards once a pod is ready.

Rendered once per namespace (not per API): it carries the managed-by and name labels but never the per-API
label, so an API's prune or delete leaves it alone. Its RBAC is namespace-scoped and minimal: read
Deployments, read and patch their scale subresource, read ConfigMaps (an API's spec.json).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from berth.backends.kubernetes.labels import MANAGED_BY, NAME_LABEL
from berth.backends.kubernetes.render_workload import PORT, RUNTIME_UID, SERVICE_PORT
from berth.backends.kubernetes.settings import ClusterSettings, runtime_image
from berth.config.schema import RealtimeAPI

ACTIVATOR = "berth-activator"
COMMAND = ["python", "-m", "berth.activator"]
# Held requests wait up to their API's scale_from_zero_timeout; uvicorn drains for 30 s on SIGTERM.
GRACE_SECONDS = 40


def needs_activator(apis: Iterable[RealtimeAPI], settings: ClusterSettings) -> bool:
    """Whether a deploy (and an export) of these APIs includes the activator: some API may have no pod
    (`min_replicas: 0`) and the environment names a Gateway, whose HTTPRoutes are what go through it.
    Without a Gateway nothing routes through the activator (a port-forward reaches the Service directly)."""
    return settings.gateway is not None and any(api.autoscaling.min_replicas == 0 for api in apis)


def activator_labels() -> dict[str, str]:
    return dict(sorted({MANAGED_BY[0]: MANAGED_BY[1], NAME_LABEL: ACTIVATOR}.items()))


def activator_selector() -> dict[str, str]:
    return {NAME_LABEL: ACTIVATOR}


def _metadata(settings: ClusterSettings) -> dict[str, Any]:
    return {"name": ACTIVATOR, "namespace": settings.namespace, "labels": activator_labels()}


def render_activator(settings: ClusterSettings) -> list[dict[str, Any]]:
    """ServiceAccount, Role, RoleBinding, Deployment and Service of the namespace's activator, in apply order."""
    return [service_account(settings), role(settings), role_binding(settings), deployment(settings),
            service(settings)]


def service_account(settings: ClusterSettings) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _metadata(settings)}


def role(settings: ClusterSettings) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _metadata(settings),
        "rules": [
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get", "patch", "update"]},
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]},
        ],
    }


def role_binding(settings: ClusterSettings) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _metadata(settings),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ACTIVATOR},
        "subjects": [{"kind": "ServiceAccount", "name": ACTIVATOR, "namespace": settings.namespace}],
    }


def deployment(settings: ClusterSettings) -> dict[str, Any]:
    container = {
        "name": "activator",
        "image": runtime_image(settings, gpu=False),
        "command": list(COMMAND),
        "args": ["--namespace", settings.namespace, "--port", str(PORT)],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "256Mi"}},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5,
                           "failureThreshold": 2},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10,
                          "timeoutSeconds": 5, "failureThreshold": 3},
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(settings),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": activator_selector()},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "revisionHistoryLimit": 5,
            "template": {
                "metadata": {
                    "labels": activator_labels(),
                    # Its gauge berth_activator_held_requests{api_name} tells an autoscaler about held requests.
                    "annotations": {"prometheus.io/path": "/metrics", "prometheus.io/port": str(PORT),
                                    "prometheus.io/scrape": "true"},
                },
                "spec": {
                    "serviceAccountName": ACTIVATOR,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": RUNTIME_UID, "runAsGroup": RUNTIME_UID,
                                        "fsGroup": RUNTIME_UID},
                    "terminationGracePeriodSeconds": GRACE_SECONDS,
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }


def service(settings: ClusterSettings) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(settings),
        "spec": {
            "type": "ClusterIP",
            "selector": activator_selector(),
            "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }
