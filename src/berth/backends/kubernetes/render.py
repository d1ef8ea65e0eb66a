"""What a deploy applies to a cluster, as plain dicts: pure functions of the spec, the code and the settings.

Per RealtimeAPI, in apply order: the `.env` Secret when the project has a `.env`, the code ConfigMap (both
immutable, named by the hash of their content), the Deployment, the Service, the autoscaler (a KEDA
ScaledObject, or an autoscaling/v2 HPA without KEDA; none when min_replicas == max_replicas), the
PodDisruptionBudget, and an HTTPRoute when the environment names a Gateway. The same inputs always give the
same objects and the same YAML.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Collection, Iterable
from typing import Any

import yaml

from berth.backends.kubernetes.render_activator import ACTIVATOR
from berth.backends.kubernetes.render_bundle import CodeBundle, bundle_project
from berth.backends.kubernetes.render_route import http_route
from berth.backends.kubernetes.render_scaling import autoscaled, horizontal_pod_autoscaler, scaled_object
from berth.backends.kubernetes.render_splitter import splitter_route
from berth.backends.kubernetes.render_workload import (
    configmap,
    configmap_name,
    deployment,
    disruption_budget,
    dotenv_secret,
    secret_name,
    service,
)
from berth.backends.kubernetes.settings import ClusterSettings
from berth.config.loader import SpecFile
from berth.config.schema import RealtimeAPI
from berth.config.units import format_bytes
from berth.errors import ConfigError

__all__ = ["CodeBundle", "bundle_project", "render_api", "render_spec", "spec_json", "to_yaml", "version_of"]

# Service names are DNS-1035 labels: they must start with a letter.
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def version_of(api: RealtimeAPI, bundle: CodeBundle) -> str:
    """What the pods run: a hash of the predictor, the compute and the code (10 hex digits, a label value)."""
    key = json.dumps({"predictor": api.predictor.model_dump(mode="json"),
                      "compute": api.compute.model_dump(mode="json"), "code": bundle.digest},
                     sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(key.encode()).hexdigest()[:10]


def spec_json(api: RealtimeAPI) -> str:
    """The API's spec as the runtime reads it (ConfigMap key `spec.json`)."""
    return json.dumps(api.model_dump(mode="json"), sort_keys=True)


def render_api(api: RealtimeAPI, bundle: CodeBundle, settings: ClusterSettings, *, keda: bool = True,
               version: str, initial: bool = False, secret_data: bool = True) -> list[dict[str, Any]]:
    """Every object of one API, in apply order (the Secret and ConfigMap before the Deployment that mounts them).

    `initial`: the Deployment is being created, so it starts with init_replicas (later applies leave the
    count to the autoscaler). `secret_data=False` leaves the `.env` Secret out of the objects (what
    `berth export` prints) while the Deployment still mounts it by name: it is created apart, never printed.
    """
    if api.name == ACTIVATOR:
        raise ConfigError([f"API {api.name}: the name is berth's own (the scale-to-zero activator)"],
                          hint="rename the API (name: in the spec)")
    if not _DNS1035_LABEL.match(api.name):
        raise ConfigError([f"API {api.name}: a Kubernetes Service name must start with a letter"],
                          hint="rename the API (name: in the spec) to start with a letter")
    data = spec_json(api)
    objects: list[dict[str, Any]] = []
    secret = None
    if bundle.dotenv is not None:
        secret = secret_name(api, bundle.dotenv)
        if secret_data:
            objects.append(dotenv_secret(api, bundle.dotenv, settings, version))
    objects += [
        configmap(api, bundle, settings, version, data),
        deployment(api, settings, version, configmap_name(api, bundle, data), autoscaled(api), secret=secret,
                   initial=initial, keda=keda),
        service(api, settings, version),
    ]
    if autoscaled(api):
        scaler = scaled_object if keda else horizontal_pod_autoscaler
        objects.append(scaler(api, settings, version))
    objects.append(disruption_budget(api, settings, version))
    route = http_route(api, settings, version)
    if route is not None:
        objects.append(route)
    return objects


def render_spec(spec: SpecFile, settings: ClusterSettings, *, keda: bool = True, initial: Collection[str] = (),
                secret_data: bool = True, progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Every API of a spec file, in the file's order, sharing one code bundle.

    `initial`: names of the APIs whose Deployment does not exist yet (see `render_api`). `progress` hears
    what the render decided on its own (code left to a baked image); never a `.env` value.
    """
    bundle = bundle_project(spec.root, spec.path, image=settings.image is not None)
    if bundle.baked and progress is not None:
        progress(f"the project's code is {format_bytes(bundle.size)} compressed, more than a Kubernetes ConfigMap "
                 f"holds: it is not shipped, and the pods serve the project baked into image {settings.image} "
                 "(made by `berth build`; rebuild and push it after changing the code)")
    objects: list[dict[str, Any]] = []
    for api in spec.apis:
        objects += render_api(api, bundle, settings, keda=keda, version=version_of(api, bundle),
                              initial=api.name in initial, secret_data=secret_data)
    apis = {api.name: api for api in spec.apis}
    objects += [splitter_route(splitter, settings, apis) for splitter in spec.splitters]
    return objects


class _Dumper(yaml.SafeDumper):
    """No anchors or aliases (a selector used twice is written twice), block style."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def to_yaml(objects: Iterable[dict[str, Any]]) -> str:
    """Multi-document YAML, keys in the order rendered (apiVersion, kind, metadata, spec, ...)."""
    return yaml.dump_all(list(objects), Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                         explicit_start=True, width=2**20, allow_unicode=True)
