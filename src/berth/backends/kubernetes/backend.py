"""`KubernetesBackend`: the `Backend` the CLI talks to for an environment whose provider is kubernetes.

A deploy renders the spec file (`render.render_spec`), server-side-applies each API's objects with the field
manager `berth`, then prunes what that API no longer renders (an HPA replaced by a ScaledObject, the previous
version's code ConfigMap). The API documents `berth get` prints are read back from the cluster: the
Deployment's rollout by kubectl's rules and its pods' failures, in berth's status words (`status.py`).
No controller of berth runs in the cluster.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx2
from lightkube import ApiError, Client, KubeConfig
from lightkube.core.exceptions import ConfigError as KubeConfigError

from berth.backends.base import APIDocument, Change, Deletion
from berth.backends.environments import Environment
from berth.backends.kubernetes import splitters
from berth.backends.kubernetes import status as rollout
from berth.backends.kubernetes.cluster import Cluster, ConfigMap, key, mounted
from berth.backends.kubernetes.labels import API_LABEL, api_selector
from berth.backends.kubernetes.settings import ClusterSettings, kubeconfig_paths
from berth.config.loader import SpecFile
from berth.errors import BerthError, ConfigError, Conflict, DaemonUnavailable, NotFound

POLL_INTERVAL = 1.0  # get_api answers from what it read this long ago: `deploy --wait` asks 20 times a second
LOCAL_PORT = 8080  # the port-forward berth suggests when no Gateway routes to the APIs


class KubernetesBackend:
    """One command's view of one kubernetes environment (a context and a namespace)."""

    def __init__(self, env: Environment, *, client: Client | None = None) -> None:
        """`client`: an already built lightkube client (tests); else one from the user's kubeconfig and the
        environment's context."""
        self.env = env
        self.settings = ClusterSettings.from_settings(env.settings)
        self._client = client
        self._cluster: Cluster | None = None
        self._specs: dict[str, dict[str, Any]] = {}  # code ConfigMap name -> its spec.json (immutable)
        self._documents: dict[tuple[str, bool], tuple[float, APIDocument]] = {}
        self._gateway: tuple[str | None] | None = None

    # --- connection ----------------------------------------------------------------------------------------
    @property
    def where(self) -> str:
        context = self.settings.context or "the kubeconfig's current context"
        return f"context {context}, namespace {self.settings.namespace}"

    def cluster(self) -> Cluster:
        if self._cluster is None:
            with self._talking():
                client = self._client or Client(_kubeconfig(self.settings), namespace=self.settings.namespace,
                                                field_manager="berth")
            self._cluster = Cluster(client, self.settings.namespace)
        return self._cluster

    @contextmanager
    def _talking(self) -> Iterator[None]:
        """The cluster's failures as berth's errors, naming the environment's context."""
        hint = (f"check that `kubectl{_context_flag(self.settings)} get deployments -n {self.settings.namespace}` "
                f"works: berth uses your kubeconfig's credentials (environment {self.env.name!r})")
        try:
            yield
        except KubeConfigError as exc:
            raise BerthError(f"environment {self.env.name!r}: cannot use the kubeconfig: {exc}", hint=hint) from exc
        except httpx2.TransportError as exc:
            raise DaemonUnavailable(f"cannot reach the Kubernetes API server ({self.where}): {exc}",
                                    hint=hint) from exc
        except httpx2.HTTPStatusError as exc:
            code = exc.response.status_code
            message = _message(exc)
            if code in (401, 403):
                raise BerthError(f"the Kubernetes API server refused berth ({self.where}): {message}",
                                 hint=hint) from exc
            raise BerthError(f"the Kubernetes API server answered {code} ({self.where}): {message}") from exc

    def ensure_running(self) -> str | None:
        """Nothing to start: check that the API server answers, and say nothing when it does."""
        with self._talking():
            self.cluster().check()
        return None

    def close(self) -> None:
        if self._cluster is not None and self._client is None:
            self._cluster.client.close()

    # --- deploy ----------------------------------------------------------------------------------------------
    def deploy(self, spec: SpecFile, verify: bool = False,
               progress: Callable[[str], None] | None = None) -> list[Change]:
        from berth.backends.kubernetes.render import render_spec
        from berth.backends.kubernetes.render_activator import needs_activator, render_activator

        keyed = [api.name for api in spec.apis if api.networking.api_keys == "required"]
        if keyed:  # fail closed: deploying would publish an endpoint its spec says must be protected
            raise ConfigError([f"{name}: networking.api_keys: required is enforced by berth's own gateway only, "
                               "not on kubernetes environments yet" for name in keyed],
                              hint="deploy it with `-e local`, or protect the route at your Gateway and set "
                                   "api_keys: none")
        cluster = self.cluster()
        with self._talking():
            keda = cluster.keda_installed()
        if not keda and progress is not None:
            progress(f"KEDA is not installed in the cluster ({self.where}): autoscaling falls back to an "
                     "autoscaling/v2 HorizontalPodAutoscaler on CPU; install KEDA to scale on in-flight requests")
        live: dict[str, dict[str, Any] | None] = {}
        with self._talking():
            for api in spec.apis:
                found = live[api.name] = cluster.deployment(api.name)
                if found is not None and not cluster_managed(found):
                    raise Conflict(f"a Deployment named {api.name!r} that berth did not create exists in "
                                   f"{self.where}; berth will not take it over",
                                   hint="rename the API in the spec file, or deploy to another namespace "
                                        "(`berth env configure ... --namespace`)")
        objects = render_spec(spec, self.settings, keda=keda, progress=progress,
                              initial={name for name, found in live.items() if found is None})
        if needs_activator(spec.apis, self.settings):
            # Once per namespace, before the routes that point at it; it has no API label, so no API's prune
            # or delete removes it. Re-applied on every such deploy (a no-op unless berth's version changed).
            with self._talking():
                cluster.apply(render_activator(self.settings))
        by_api: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for obj in objects:
            by_api[str(((obj.get("metadata") or {}).get("labels") or {}).get(API_LABEL))].append(obj)
        changes = []
        for api in spec.apis:
            rendered = by_api.get(api.name, [])
            deployment = next((o for o in rendered if o.get("kind") == "Deployment"), None)
            if deployment is None:
                raise BerthError(f"nothing to deploy for {api.name}: the render made no Deployment")
            version = rollout.deployment_version(deployment) or ""
            previous = live[api.name]
            with self._talking():
                cluster.apply(rendered)
                replicas = (deployment.get("spec") or {}).get("replicas")
                if previous is None and replicas is not None and any(
                        o.get("kind") in ("ScaledObject", "HorizontalPodAutoscaler") for o in rendered):
                    cluster.hand_over_replicas(api.name, int(replicas))
                # Keep what the new render applied, what the Deployment ran until now (its new ReplicaSet may
                # not exist yet) and, in `prune`, what any ReplicaSet of the API still mounts.
                keep = {key(o) for o in rendered}
                if previous is not None:
                    keep |= mounted(((previous.get("spec") or {}).get("template")) or {})
                cluster.prune(api.name, keep)
            self._documents.clear()
            if previous is None:
                action = "creating"
            elif rollout.deployment_version(previous) != version:
                action = "updating"
            else:
                action = "up to date"
            message = f"{api.name} is up to date" if action == "up to date" else f"{action} {api.name}"
            changes.append(Change(api=api.name, action=action, version=version, message=message))
        if spec.splitters:
            with self._talking():
                changes += splitters.deploy(cluster, spec.splitters, by_api, {api.name for api in spec.apis},
                                            self.where)
        return changes

    def list_splitters(self) -> list[APIDocument]:
        def status(name: str) -> str:
            deployment = self.cluster().deployment(name)
            return str(self._summary(deployment)["status"]) if deployment is not None else "missing"

        with self._talking():
            return splitters.documents(self.cluster(), status, lambda name, endpoint: self._url(name, endpoint)[0])

    def get_splitter(self, name: str) -> APIDocument:
        found = next((doc for doc in self.list_splitters() if doc["name"] == name), None)
        if found is None:
            raise NotFound(f"no traffic splitter named {name!r} in {self.where}")
        return found

    # --- reading -----------------------------------------------------------------------------------------------
    def list_apis(self, window: float | None = None) -> list[APIDocument]:
        with self._talking():
            return [self._summary(deployment) for deployment in self.cluster().deployments()]

    def get_api(self, name: str, window: float | None = None) -> APIDocument:
        return self._document(name, detail=False)

    def describe(self, name: str) -> APIDocument:
        return self._document(name, detail=True)

    def _document(self, name: str, detail: bool) -> APIDocument:
        cached = self._documents.get((name, detail))
        if cached is not None and time.monotonic() - cached[0] < POLL_INTERVAL:
            return cached[1]
        with self._talking():
            deployment = self._deployment(name)
            pods = self.cluster().pods(api_selector(name))
            document = self._summary(deployment, pods)
            document.update(self._detail(deployment, pods))
        self._documents[(name, detail)] = (time.monotonic(), document)
        return document

    def _deployment(self, name: str) -> dict[str, Any]:
        deployment = self.cluster().deployment(name)
        if deployment is None or not cluster_managed(deployment):
            raise NotFound(f"no API named {name!r} in {self.where}",
                           hint=f"`berth get -e {self.env.name}` lists the deployed APIs")
        return deployment

    def _summary(self, deployment: dict[str, Any], pods: list[dict[str, Any]] | None = None) -> APIDocument:
        name = deployment["metadata"]["name"]
        if pods is None:
            pods = self.cluster().pods(api_selector(name))
        summary = rollout.summarize(deployment, pods)
        spec = self._spec(deployment)
        endpoint = str((spec.get("networking") or {}).get("endpoint") or f"/{name}")
        url, access = self._url(name, endpoint)
        created = rollout.timestamp(deployment["metadata"].get("creationTimestamp")) or 0.0
        return {
            "name": name,
            "status": str(summary.status),
            "up_to_date": summary.up_to_date,
            "stale": summary.stale,
            "requested": summary.requested,
            "failed": summary.failed,
            "version": summary.version,
            "serving_version": summary.serving_version,
            "endpoint": endpoint,
            "url": url,
            "access": access,
            "created_at": created,
            "last_update": _last_update(deployment) or created,
            "metrics": {},  # request counts live in the cluster's Prometheus, not in berth
            "in_flight": None,
            "error": summary.error,
            "traceback": summary.traceback,  # a crash loop's last termination message (its traceback's tail)
            "deleting": bool(deployment["metadata"].get("deletionTimestamp")),
            "rollout": summary.rollout.message,
            "environment_name": self.env.name,
        }

    def _detail(self, deployment: dict[str, Any], pods: list[dict[str, Any]]) -> dict[str, Any]:
        name = deployment["metadata"]["name"]
        now = time.time()
        cluster = self.cluster()
        replica_sets = cluster.replica_sets(api_selector(name))
        versions: dict[str, float] = {}
        for rs in replica_sets:
            version = (((rs.get("spec") or {}).get("template") or {}).get("metadata") or {}).get(
                "labels", {}).get(rollout.VERSION_LABEL)
            at = rollout.timestamp(rs["metadata"].get("creationTimestamp")) or 0.0
            if version:
                versions[version] = max(at, versions.get(version, 0.0))
        involved = {name, *(rs["metadata"]["name"] for rs in replica_sets), *(p["metadata"]["name"] for p in pods)}
        events = [{"at": rollout.timestamp(e.get("lastTimestamp") or e.get("eventTime")) or now,
                   "kind": str(e.get("reason") or e.get("type") or ""),
                   "message": f"{str((e.get('involvedObject') or {}).get('kind', '')).lower()}/"
                              f"{(e.get('involvedObject') or {}).get('name')}: {e.get('message') or ''}"}
                  for e in cluster.events(involved)]
        spec = self._spec(deployment)
        return {
            "spec": spec or None,
            "spec_file": None,
            "replicas": [rollout.replica_row(pod, now) for pod in pods],
            "versions": [{"version": v, "deployed_at": at} for v, at in sorted(versions.items(), key=lambda i: i[1])],
            "events": events[-50:],
            "autoscaler": [],  # the cluster's HPA (KEDA's) decides; `kubectl describe hpa` shows its events
            "monitoring": spec.get("monitoring") if spec else None,
            "predictions": None,
            "drift": None,
        }

    def _spec(self, deployment: dict[str, Any]) -> dict[str, Any]:
        """The API's spec as the pods run it: `spec.json` of the code ConfigMap its pod template mounts."""
        volumes = (((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}).get("volumes") or []
        names = [v["configMap"]["name"] for v in volumes if (v.get("configMap") or {}).get("name")]
        if not names:
            return {}
        config_map = names[0]
        if config_map not in self._specs:
            found = self.cluster().get(ConfigMap, config_map) or {}
            text = (found.get("data") or {}).get("spec.json")
            try:
                self._specs[config_map] = json.loads(text) if text else {}
            except ValueError:
                self._specs[config_map] = {}
        return self._specs[config_map]

    def _url(self, name: str, endpoint: str) -> tuple[str, str | None]:
        """Where clients send requests, and what to run first when that is a port-forward."""
        address = self._gateway_address()
        if address is not None:
            return f"http://{address}{endpoint}", None
        forward = f"kubectl{_context_flag(self.settings)} -n {self.settings.namespace} port-forward svc/{name} " \
                  f"{LOCAL_PORT}:80"
        return f"http://localhost:{LOCAL_PORT}{endpoint}", forward

    def _gateway_address(self) -> str | None:
        ref = self.settings.gateway_ref
        if ref is None:
            return None
        if self._gateway is None:
            self._gateway = (self.cluster().gateway_address(*ref),)
        return self._gateway[0]

    def url(self, name: str) -> str:
        api = self.get_api(name)
        if api.get("access"):
            why = ("no gateway is configured for this environment" if self.settings.gateway is None
                   else f"gateway {self.settings.gateway} has no address yet")
            raise BerthError(f"{name} has no address outside the cluster: {why}",
                             hint=f"run `{api['access']}` in another terminal, then send requests to {api['url']}; "
                                  "or configure one: `berth env configure "
                                  f"{self.env.name} --provider kubernetes --gateway NAME`")
        return str(api["url"])

    def logs(self, name: str, follow: bool = False, tail: int = 200) -> Iterator[str]:
        with self._talking():
            self._deployment(name)
        cluster = self.cluster()

        def pods() -> list[str]:
            return [p["metadata"]["name"] for p in cluster.pods(api_selector(name))]

        with self._talking():
            yield from cluster.logs(pods, follow=follow, tail=tail)

    def request_logs(self, name: str, follow: bool = False, tail: int = 200) -> Iterator[dict[str, Any]]:
        raise self._unsupported("the request log (`berth logs --requests`)")

    def pin_baseline(self, name: str, since: float | None, until: float | None) -> dict[str, Any]:
        raise self._unsupported("drift baselines")

    def unpin_baseline(self, name: str) -> dict[str, Any]:
        raise self._unsupported("drift baselines")

    def _unsupported(self, what: str) -> BerthError:
        return BerthError(f"{what} is not available on kubernetes environments yet ({self.env.name!r})",
                          hint="use it with a local environment (`-e local`)")

    # --- acting ------------------------------------------------------------------------------------------------
    def refresh(self, name: str) -> Change:
        with self._talking():
            deployment = self._deployment(name)
            self.cluster().restart(name)
        self._documents.clear()
        version = rollout.deployment_version(deployment) or ""
        return Change(api=name, action="restarting", version=version, message=f"restarting {name}")

    def delete(self, name: str) -> Deletion:
        with self._talking():
            splitters.refuse_delete(self.cluster(), name)
            deleted = self.cluster().delete_api(name)  # a splitter's HTTPRoute carries its name as API label
        if not deleted:
            raise NotFound(f"no API named {name!r} in {self.where}",
                           hint=f"`berth get -e {self.env.name}` lists the deployed APIs")
        self._documents.clear()
        return Deletion(api=name, stopped=False)  # its pods stop as the cluster deletes them


def _message(exc: httpx2.HTTPStatusError) -> str:
    """The API server's own sentence (its Status object's message), else the HTTP error."""
    if isinstance(exc, ApiError) and exc.status is not None and exc.status.message:
        return str(exc.status.message)
    try:
        return str(exc.response.json().get("message") or exc)
    except (ValueError, AttributeError):
        return str(exc)


def cluster_managed(obj: dict[str, Any]) -> bool:
    from berth.backends.kubernetes.labels import MANAGED_BY

    return ((obj.get("metadata") or {}).get("labels") or {}).get(MANAGED_BY[0]) == MANAGED_BY[1]


def _last_update(deployment: dict[str, Any]) -> float | None:
    """When the Deployment last changed what it rolls out: its Progressing condition's update time."""
    for condition in (deployment.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Progressing":
            return rollout.timestamp(condition.get("lastUpdateTime"))
    return None


def _context_flag(settings: ClusterSettings) -> str:
    return f" --context {settings.context}" if settings.context else ""


def _kubeconfig(settings: ClusterSettings) -> KubeConfig | Any:
    """The user's kubeconfig (the first file of KUBECONFIG that defines the context), at the context asked;
    inside a pod without one, the service account."""
    paths = [path for path in kubeconfig_paths() if path.is_file()]
    if not paths:
        return KubeConfig.from_env()
    for path in paths:
        config = KubeConfig.from_file(path)
        if settings.context is None or settings.context in config.contexts:
            return config.get(context_name=settings.context)
    raise BerthError(f"no context named {settings.context!r} in {', '.join(str(p) for p in paths)}",
                     hint="`kubectl config get-contexts` lists them; change it with `berth env configure`")
