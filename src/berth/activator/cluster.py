"""The three calls the activator makes to the API server, over lightkube's async client.

Read a Deployment (readiness, spec.replicas, which code ConfigMap it mounts), patch its scale subresource
to 1 replica, and read an API's spec.json from its code ConfigMap. What the activator's RBAC allows, and
nothing more (render_activator.py renders that Role).
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import httpx2
from lightkube import AsyncClient
from lightkube.core import resource as res
from lightkube.generic_resource import GenericNamespacedResource, create_api_info
from lightkube.types import PatchType

FIELD_MANAGER = "berth-activator"
SPEC_KEY = "spec.json"


class _Deployment(GenericNamespacedResource):
    _api_info = create_api_info("apps", "v1", "Deployment", "deployments")


class _ConfigMap(GenericNamespacedResource):
    _api_info = create_api_info("", "v1", "ConfigMap", "configmaps")


class _DeploymentScale(res.NamespacedSubResource, GenericNamespacedResource):  # type: ignore[misc]
    """deployments/<name>/scale, kept as a plain dict both ways."""

    _api_info = res.ApiInfo(resource=res.ResourceDef("autoscaling", "v1", "Scale"),
                            parent=res.ResourceDef("apps", "v1", "Deployment"),
                            plural="deployments", verbs=["get", "patch", "put"], action="scale")


class ClusterReader(Protocol):
    """What the app needs of the cluster (a fake in unit tests, `LightkubeCluster` otherwise)."""

    async def deployment(self, name: str) -> dict[str, Any] | None: ...

    async def scale_to_one(self, name: str) -> None: ...

    async def api_spec(self, config_map: str) -> dict[str, Any] | None: ...


def _status(exc: httpx2.HTTPStatusError) -> int:
    return exc.response.status_code


def _as_dict(obj: Any) -> dict[str, Any]:
    return dict(obj.to_dict()) if hasattr(obj, "to_dict") else dict(obj)


class LightkubeCluster:
    """One namespace, through an AsyncClient (in a pod: its service account, lightkube's default)."""

    def __init__(self, client: AsyncClient, namespace: str) -> None:
        self.client = client
        self.namespace = namespace

    async def deployment(self, name: str) -> dict[str, Any] | None:
        try:
            return _as_dict(await self.client.get(_Deployment, name, namespace=self.namespace))
        except httpx2.HTTPStatusError as exc:
            if _status(exc) == 404:
                return None
            raise

    async def scale_to_one(self, name: str) -> None:
        await self.client.patch(_DeploymentScale, name, {"spec": {"replicas": 1}}, namespace=self.namespace,
                                patch_type=PatchType.MERGE, field_manager=FIELD_MANAGER)

    async def api_spec(self, config_map: str) -> dict[str, Any] | None:
        try:
            found = _as_dict(await self.client.get(_ConfigMap, config_map, namespace=self.namespace))
        except httpx2.HTTPStatusError as exc:
            if _status(exc) == 404:
                return None
            raise
        text = (found.get("data") or {}).get(SPEC_KEY)
        if not isinstance(text, str):
            return None
        try:
            spec = json.loads(text)
        except ValueError:
            return None
        return spec if isinstance(spec, dict) else None

    async def close(self) -> None:
        await self.client.close()
