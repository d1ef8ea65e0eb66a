"""Autoscaling: a KEDA ScaledObject on the runtime's in-flight gauge, or an autoscaling/v2 HPA on CPU.

Cortex's knobs map onto the HPA `behavior` KEDA hands to the HPA it creates:
* the Prometheus query is the API's total in-flight requests averaged over `window`; with KEDA's
  default AverageValue metric the HPA wants ceil(total / target_replica_concurrency) replicas, which is
  Cortex's formula;
* up/down stabilization periods -> behavior.scaleUp/scaleDown.stabilizationWindowSeconds;
* max_upscale_factor 1.5 -> a Percent policy of 50 per 15 s (the HPA's sync period), max_downscale_factor
  0.75 -> a Percent policy of 25 per 15 s;
* the tolerances have no stable per-object field (the HPA's tolerance is a fixed 10 %).
"""

from __future__ import annotations

import math
from typing import Any

from berth.backends.kubernetes.render_workload import metadata
from berth.backends.kubernetes.settings import ClusterSettings
from berth.config.schema import RealtimeAPI
from berth.config.units import format_duration
from berth.errors import BerthError, ConfigError

METRIC = "berth_replica_in_flight_requests"
POLICY_PERIOD = 15  # seconds: the HPA's default sync period, about Cortex's 10 s tick
POLLING_INTERVAL = 10  # seconds between KEDA's own queries (they decide 0 <-> 1)
MAX_STABILIZATION = 3600  # the HPA API's upper bound
CPU_UTILIZATION = 80  # percent of the CPU request, for the HPA fallback


def autoscaled(api: RealtimeAPI) -> bool:
    """Whether an autoscaler owns the replica count: only when min and max differ."""
    return api.autoscaling.min_replicas != api.autoscaling.max_replicas


def query(api: RealtimeAPI, settings: ClusterSettings) -> str:
    window = int(api.autoscaling.window)
    base = (f'sum(avg_over_time({METRIC}{{namespace="{settings.namespace}",api_name="{api.name}"}}'
            f"[{window}s]))")
    if api.autoscaling.min_replicas > 0 or settings.gateway is None:  # no activator holds its requests
        return base
    # At zero the pods see no load while the activator holds requests: count those too, or KEDA would take
    # the Deployment back to zero under the activator's feet.
    held = f'sum(berth_activator_held_requests{{namespace="{settings.namespace}",api_name="{api.name}"}})'
    return f"({base} or vector(0)) + ({held} or vector(0))"


def _number(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".")


def _stabilization(api: RealtimeAPI, field: str) -> int:
    seconds = math.ceil(float(getattr(api.autoscaling, field)))
    if seconds > MAX_STABILIZATION:
        raise ConfigError([f"API {api.name}: autoscaling.{field}: {format_duration(seconds)} is longer than "
                           f"Kubernetes allows (at most 1h)"], hint=f"set autoscaling.{field} to 1h or less")
    return seconds


def behavior(api: RealtimeAPI) -> dict[str, Any]:
    scaling = api.autoscaling
    up = max(1, round((scaling.max_upscale_factor - 1) * 100))
    down = min(100, max(1, round((1 - scaling.max_downscale_factor) * 100)))
    return {
        "scaleUp": {
            "stabilizationWindowSeconds": _stabilization(api, "upscale_stabilization_period"),
            "selectPolicy": "Max",
            "policies": [{"type": "Percent", "value": up, "periodSeconds": POLICY_PERIOD}],
        },
        "scaleDown": {
            "stabilizationWindowSeconds": _stabilization(api, "downscale_stabilization_period"),
            "selectPolicy": "Max",
            "policies": [{"type": "Percent", "value": down, "periodSeconds": POLICY_PERIOD}],
        },
    }


def target_ref(api: RealtimeAPI) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "name": api.name}


def scaled_object(api: RealtimeAPI, settings: ClusterSettings, version: str) -> dict[str, Any]:
    if settings.prometheus is None:
        raise BerthError(
            f"API {api.name}: KEDA scales on the runtime's in-flight requests read from Prometheus, and this "
            "environment names no Prometheus server",
            hint="set it with `berth env configure NAME --prometheus http://prometheus.monitoring:9090`",
        )
    scaling = api.autoscaling
    target = scaling.target_replica_concurrency
    assert target is not None  # the schema fills it in
    # minReplicaCount 0 lets KEDA scale the Deployment to zero after cooldownPeriod. A request that
    # arrives while no pod runs has nowhere to wait and fails until berth's activator (issue 12,
    # section 5: a shared in-cluster gateway that holds it and scales the Deployment to 1) exists.
    spec: dict[str, Any] = {
        "scaleTargetRef": target_ref(api),
        "minReplicaCount": scaling.min_replicas,
        "maxReplicaCount": scaling.max_replicas,
        "pollingInterval": POLLING_INTERVAL,
        "cooldownPeriod": _stabilization(api, "downscale_stabilization_period"),
        "advanced": {"horizontalPodAutoscalerConfig": {"behavior": behavior(api)}},
        "triggers": [{
            "type": "prometheus",
            "metricType": "AverageValue",
            "metadata": {
                "serverAddress": settings.prometheus,
                "query": query(api, settings),
                "threshold": _number(target),
                "activationThreshold": "0",
                "ignoreNullValues": "true",
            },
        }],
    }
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": metadata(api, api.name, settings, version), "spec": spec}


def horizontal_pod_autoscaler(api: RealtimeAPI, settings: ClusterSettings, version: str) -> dict[str, Any]:
    """The fallback without KEDA: CPU utilisation, same bounds and behavior. The HPA cannot scale to zero
    (HPAScaleToZero is alpha), so min_replicas 0 becomes 1 here."""
    scaling = api.autoscaling
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(api, api.name, settings, version),
        "spec": {
            "scaleTargetRef": target_ref(api),
            "minReplicas": max(1, scaling.min_replicas),
            "maxReplicas": scaling.max_replicas,
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": CPU_UTILIZATION}}}],
            "behavior": behavior(api),
        },
    }
