"""The objects that run and reach an API's pods: code ConfigMap, Deployment, Service, PodDisruptionBudget.

The pod follows the runtime's pod contract (/work/notes/k8s-pod.md at the time of writing): container
`api` running `python -m berth.runtime.bootstrap`, which unpacks the code ConfigMap, builds the project's
environment into the shared cache, and execs the runtime on port 8080.
"""

from __future__ import annotations

import base64
import hashlib
import math
from typing import Any

from berth.backends.kubernetes.labels import api_selector, object_labels
from berth.backends.kubernetes.render_bundle import MAX_CONFIGMAP_BYTES, CodeBundle
from berth.backends.kubernetes.settings import ClusterSettings, runtime_image
from berth.config.schema import RealtimeAPI
from berth.config.units import format_bytes
from berth.errors import BerthError, ConfigError

PORT = 8080
SERVICE_PORT = 80
CODE_DIR = "/srv/berth/code"
WORK_DIR = "/srv/berth/work"
ENVS_DIR = "/var/cache/berth/envs"
SECRET_DIR = "/srv/berth/secret"
CODE_KEY = "code.tar.gz"
SPEC_KEY = "spec.json"
DOTENV_KEY = ".env"
GPU_RESOURCE = "nvidia.com/gpu"
RUNTIME_UID = 10001
# Seconds the pod keeps serving after it is marked terminating, so endpoints (Service, Gateway) stop
# sending it new requests before the runtime gets SIGTERM.
PRESTOP_SLEEP = 5
# Seconds past the drain (networking.timeout) before the kubelet kills the container.
GRACE_MARGIN = 10
# The startup probe's budget: environments build and models load before anything listens.
STARTUP_PERIOD = 5
STARTUP_FAILURES = 360  # 30 minutes
COMMAND = ["python", "-m", "berth.runtime.bootstrap"]


def metadata(api: RealtimeAPI, name: str, settings: ClusterSettings, version: str) -> dict[str, Any]:
    return {"name": name, "namespace": settings.namespace, "labels": object_labels(api.name, version)}


def configmap_name(api: RealtimeAPI, bundle: CodeBundle, spec_json: str) -> str:
    """`<api>-code-<hash10>` of the code and the spec together: the ConfigMap is immutable, so any change
    to either gives a new name (and, through the pod template, a rolling update)."""
    digest = hashlib.sha256(f"{bundle.digest}\0{spec_json}".encode()).hexdigest()
    return f"{api.name}-code-{digest[:10]}"


def configmap(api: RealtimeAPI, bundle: CodeBundle, settings: ClusterSettings, version: str,
              spec_json: str) -> dict[str, Any]:
    """The code (`code.tar.gz`) and the spec (`spec.json`); the spec alone for a `baked` bundle, whose pods
    serve the project built into their image (bootstrap finds no tarball and uses it)."""
    size = len(bundle.data) + len(spec_json.encode())
    if size > MAX_CONFIGMAP_BYTES:
        raise BerthError(
            f"API {api.name}: its code and spec are {format_bytes(size)} ({size} bytes), more than a Kubernetes "
            f"ConfigMap holds (at most {format_bytes(MAX_CONFIGMAP_BYTES)})",
            hint="bake the project into an image with `berth build` and set it with "
                 "`berth env configure NAME --image IMAGE`",
        )
    out: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(api, configmap_name(api, bundle, spec_json), settings, version),
        "immutable": True,
        "data": {SPEC_KEY: spec_json},
    }
    if not bundle.baked:
        out["binaryData"] = {CODE_KEY: base64.b64encode(bundle.data).decode("ascii")}
    return out


def secret_name(api: RealtimeAPI, dotenv: bytes) -> str:
    """`<api>-dotenv-<hash10>`: immutable like the code ConfigMap, so a changed `.env` is a new Secret (and a
    rolling update). The hash is salted with the API's name, so equal files of two APIs do not show as equal."""
    digest = hashlib.sha256(b"berth-dotenv\0" + api.name.encode() + b"\0" + dotenv).hexdigest()
    return f"{api.name}-dotenv-{digest[:10]}"


def dotenv_secret(api: RealtimeAPI, dotenv: bytes, settings: ClusterSettings, version: str) -> dict[str, Any]:
    """The project's `.env` as an Opaque Secret (key `.env`), mounted read-only at /srv/berth/secret."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(api, secret_name(api, dotenv), settings, version),
        "type": "Opaque",
        "immutable": True,
        "data": {DOTENV_KEY: base64.b64encode(dotenv).decode("ascii")},
    }


def cpu_quantity(cores: float) -> str:
    millis = max(1, round(cores * 1000))
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def memory_quantity(size: float) -> str:
    n = round(size)
    for suffix, unit in (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)


def gpu_count(api: RealtimeAPI) -> int:
    gpu = api.compute.gpu
    if gpu != int(gpu):
        raise ConfigError(
            [f"API {api.name}: compute.gpu: {gpu:g} is a fraction of a GPU; Kubernetes schedules whole GPUs only"],
            hint="ask for whole GPUs (gpu: 1), or share GPUs through the NVIDIA device plugin's time-slicing "
                 "(or MIG), which advertises each share as one nvidia.com/gpu",
        )
    return int(gpu)


def resources(api: RealtimeAPI) -> dict[str, Any]:
    requests: dict[str, Any] = {"cpu": cpu_quantity(api.compute.cpu)}
    limits: dict[str, Any] = {}
    if api.compute.mem is not None:
        # A replica above its memory is killed locally too: limit = request.
        requests["memory"] = limits["memory"] = memory_quantity(api.compute.mem)
    gpus = gpu_count(api)
    if gpus:
        # Extended resources: requests must equal limits.
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = gpus
    out: dict[str, Any] = {"requests": requests}
    if limits:
        out["limits"] = limits
    return out


def grace_period(api: RealtimeAPI) -> int:
    """The preStop sleep, then a drain as long as the longest request may take, then a margin."""
    return PRESTOP_SLEEP + math.ceil(api.networking.timeout) + GRACE_MARGIN


def container(api: RealtimeAPI, settings: ClusterSettings, version: str, dotenv: bool = False) -> dict[str, Any]:
    probe = {"httpGet": {"path": "/healthz", "port": "http"}}
    out: dict[str, Any] = {
        "name": "api",
        "image": runtime_image(settings, gpu=api.compute.gpu > 0),
        "command": list(COMMAND),
        "args": ["--code", f"{CODE_DIR}/{CODE_KEY}", "--spec", f"{CODE_DIR}/{SPEC_KEY}", "--work", WORK_DIR,
                 "--envs", ENVS_DIR, "--port", str(PORT), "--version", version],
        "env": [
            {"name": "BERTH_API", "value": api.name},
            {"name": "BERTH_REPLICA_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "resources": resources(api),
        "startupProbe": {**probe, "periodSeconds": STARTUP_PERIOD, "failureThreshold": STARTUP_FAILURES},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5,
                           "failureThreshold": 2},
        "livenessProbe": {**probe, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3},
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_SLEEP)]}}},
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "code", "mountPath": CODE_DIR, "readOnly": True},
            {"name": "work", "mountPath": WORK_DIR},
            {"name": "envs", "mountPath": ENVS_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    if dotenv:
        out["args"] += ["--dotenv", f"{SECRET_DIR}/{DOTENV_KEY}"]
        out["volumeMounts"].append({"name": "dotenv", "mountPath": SECRET_DIR, "readOnly": True})
    return out


def initial_replicas(api: RealtimeAPI, keda: bool = True) -> int:
    """How many pods a new Deployment starts with: init_replicas, within min..max. At least 1 under the HPA
    fallback, which cannot scale to zero and leaves a Deployment at 0 replicas alone (scaling disabled)."""
    scaling = api.autoscaling
    init = scaling.init_replicas if scaling.init_replicas is not None else scaling.min_replicas
    low = scaling.min_replicas if keda else max(1, scaling.min_replicas)
    return max(low, min(init, scaling.max_replicas))


def deployment(api: RealtimeAPI, settings: ClusterSettings, version: str, code: str,
               autoscaled: bool, *, secret: str | None = None, initial: bool = False,
               keda: bool = True) -> dict[str, Any]:
    """`secret`: the name of the API's `.env` Secret, mounted when given. `initial`: the Deployment does not
    exist yet, so it starts with init_replicas even when an autoscaler will own the count."""
    spec: dict[str, Any] = {}
    if not autoscaled:
        # min == max: nothing else owns the count.
        spec["replicas"] = api.autoscaling.min_replicas
    elif initial:
        # Only on the create. Later applies leave the field out, so a server-side apply neither takes the
        # count back from the autoscaler nor resets it (berth's manager gives the field up).
        spec["replicas"] = initial_replicas(api, keda)
    pod: dict[str, Any] = {
        "securityContext": {"runAsNonRoot": True, "runAsUser": RUNTIME_UID, "runAsGroup": RUNTIME_UID,
                            "fsGroup": RUNTIME_UID},
        "terminationGracePeriodSeconds": grace_period(api),
        "containers": [container(api, settings, version, dotenv=secret is not None)],
        "volumes": [
            {"name": "code", "configMap": {"name": code}},
            {"name": "work", "emptyDir": {}},
            {"name": "envs", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    if secret is not None:
        # Readable by the runtime's group (fsGroup) only.
        pod["volumes"].append({"name": "dotenv", "secret": {"secretName": secret, "defaultMode": 0o440}})
    if api.compute.gpu > 0:
        # GPU nodes are usually tainted; the device plugin's resource does the actual placement.
        pod["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    spec |= {
        "selector": {"matchLabels": api_selector(api.name)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {
            "maxSurge": api.update_strategy.max_surge, "maxUnavailable": api.update_strategy.max_unavailable}},
        "progressDeadlineSeconds": 600 + STARTUP_PERIOD * STARTUP_FAILURES,
        "revisionHistoryLimit": 5,
        "template": {
            "metadata": {
                "labels": object_labels(api.name, version),
                "annotations": {"prometheus.io/path": "/metrics", "prometheus.io/port": str(PORT),
                                "prometheus.io/scrape": "true"},
            },
            "spec": pod,
        },
    }
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": metadata(api, api.name, settings, version), "spec": spec}


def service(api: RealtimeAPI, settings: ClusterSettings, version: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(api, api.name, settings, version),
        "spec": {
            "type": "ClusterIP",
            "selector": api_selector(api.name),
            "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def disruption_budget(api: RealtimeAPI, settings: ClusterSettings, version: str) -> dict[str, Any]:
    # One pod at a time during node drains; never 0, which would block drains forever.
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(api, api.name, settings, version),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": api_selector(api.name)}},
    }
