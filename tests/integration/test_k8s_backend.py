"""The Kubernetes backend's cluster code against kmock, an HTTP-level fake of the API server.

The fake is not faithful, and these tests say where they lean on that:
* it answers 404 to a server-side apply of a missing object (a real API server creates it), so these
  tests talk to it through `CreateOnApplyClient`, a test-support shim that creates on that 404 (every
  test here is named "fake_api" for that reason);
* it runs no controllers: Deployment statuses and pods are seeded by the tests, as scripted states;
* it ignores label selectors on lists, so berth's own label check is what keeps prune to one API.
The sync lightkube client runs in a worker thread while the fake serves on the test's event loop.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx2
import pytest
from lightkube import Client, KubeConfig

from berth.backends.environments import Environment, Provider
from berth.backends.kubernetes.backend import KubernetesBackend
from berth.backends.kubernetes.cluster import RESTARTED_AT, Cluster, code
from berth.config.loader import load_spec
from berth.core.status import APIStatus
from berth.errors import BerthError, Conflict, DaemonUnavailable, NotFound

pytestmark = [pytest.mark.fake_api, pytest.mark.asyncio]

NS = "ml"
T = TypeVar("T")
DEPLOYMENTS = "apps/v1/deployments"


class CreateOnApplyClient(Client):
    """Test support: kmock answers a server-side apply of a missing object with 404, where a real API server
    creates it. This shim creates on that 404, so the code under test sees what a real server does."""

    def apply(self, obj: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        try:
            return super().apply(obj, *args, **kwargs)
        except httpx2.HTTPStatusError as exc:
            if code(exc) != 404:
                raise
            return self.create(obj, namespace=kwargs.get("namespace"), field_manager=kwargs.get("field_manager"))


def client_for(url: str) -> Client:
    # KubeConfig.from_server is broken in lightkube 1.0.1 ("Missing user"): a dict with an empty user works.
    config = KubeConfig.from_dict({
        "clusters": [{"name": "fake", "cluster": {"server": url}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "nobody", "namespace": NS}}],
        "users": [{"name": "nobody", "user": {}}], "current-context": "fake"})
    return CreateOnApplyClient(config, namespace=NS)


async def in_thread(fn: Callable[[], T]) -> T:
    return await asyncio.wait_for(asyncio.to_thread(fn), timeout=15)


@pytest.fixture()
def fake(kmock: Any) -> Any:
    for resource in (DEPLOYMENTS, "v1/services", "v1/configmaps", "v1/secrets", "v1/pods", "v1/events", "apps/v1/replicasets",
                     "policy/v1/poddisruptionbudgets", "autoscaling/v2/horizontalpodautoscalers"):
        kmock.resources[resource] = {}
    return kmock


def cluster_on(fake: Any) -> Cluster:
    return Cluster(client_for(str(fake.url)), NS)


def backend_on(fake: Any, **settings: str) -> KubernetesBackend:
    env = Environment("prod", Provider.KUBERNETES, {"namespace": NS, **settings})
    return KubernetesBackend(env, client=client_for(str(fake.url)))


def labels(api: str, version: str = "v1") -> dict[str, str]:
    return {"app.kubernetes.io/managed-by": "berth", "berth.dev/api": api, "app.kubernetes.io/name": api,
            "berth.dev/version": version}


def obj(kind: str, name: str, api: str, version: str = "v1", **body: Any) -> dict[str, Any]:
    api_version = {"Deployment": "apps/v1", "PodDisruptionBudget": "policy/v1",
                   "HorizontalPodAutoscaler": "autoscaling/v2"}.get(kind, "v1")
    return {"apiVersion": api_version, "kind": kind,
            "metadata": {"name": name, "namespace": NS, "labels": labels(api, version)}, **body}


def stored(fake: Any, resource: str, name: str) -> dict[str, Any] | None:
    for (res, namespace, found), value in fake.objects.items():
        if f"{res.group}/{res.version}/{res.plural}".lstrip("/") == resource and (namespace, found) == (NS, name):
            return None if value.deleted else dict(value.raw)
    return None


def names(fake: Any, resource: str) -> set[str]:
    return {name for (res, namespace, name), value in fake.objects.items()
            if f"{res.group}/{res.version}/{res.plural}".lstrip("/") == resource and not value.deleted}


def deployment(api: str, version: str, *, generation: int = 1, observed: int = 1, replicas: int = 1,
               updated: int = 1, available: int = 1, deadline: bool = False) -> dict[str, Any]:
    progressing = ({"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"} if deadline
                   else {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                         "lastUpdateTime": "2026-12-01T10:00:00Z"})
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": api, "namespace": NS, "labels": labels(api, version), "generation": generation,
                         "creationTimestamp": "2026-12-01T09:00:00Z"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"berth.dev/api": api}},
                     "template": {"metadata": {"labels": labels(api, version)}, "spec": {"containers": []}}},
            "status": {"observedGeneration": observed, "replicas": updated, "updatedReplicas": updated,
                       "availableReplicas": available, "conditions": [progressing]}}


def pod(api: str, name: str, version: str, *, ready: bool = False, waiting: dict[str, Any] | None = None,
        last: dict[str, Any] | None = None) -> dict[str, Any]:
    state = {"waiting": waiting} if waiting else {"running": {}}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "labels": labels(api, version),
                         "creationTimestamp": "2026-12-01T10:00:00Z"},
            "spec": {"containers": [{"name": "api", "resources": {"limits": {"memory": "1Gi"}}}]},
            "status": {"phase": "Running",
                       "conditions": [{"type": "PodScheduled", "status": "True"},
                                      {"type": "Ready", "status": str(ready)}],
                       "containerStatuses": [{"name": "api", "image": "registry.example/berth/runtime:9",
                                              "restartCount": 0, "ready": ready, "state": state,
                                              "lastState": {"terminated": last} if last else {}}]}}


async def test_fake_api_apply_creates_then_updates_with_the_berth_field_manager(fake: Any) -> None:
    cluster = cluster_on(fake)
    service = obj("Service", "iris", "iris", spec={"ports": [{"port": 80}]})
    await in_thread(lambda: cluster.apply([service]))
    assert stored(fake, "v1/services", "iris")["spec"] == {"ports": [{"port": 80}]}  # type: ignore[index]
    changed = obj("Service", "iris", "iris", "v2", spec={"ports": [{"port": 8080}]})
    await in_thread(lambda: cluster.apply([changed]))
    assert stored(fake, "v1/services", "iris")["metadata"]["labels"]["berth.dev/version"] == "v2"  # type: ignore[index]
    applies = [r for r in fake if r.method == "PATCH"]
    assert len(applies) == 2
    for request in applies:
        assert request.params.get("fieldManager") == "berth" and request.params.get("force") == "true"
        assert request.headers.get("Content-Type") == "application/apply-patch+yaml"
    # The create after the fake's 404 (a real API server creates on apply) names the manager too.
    assert [r.params.get("fieldManager") for r in fake if r.method == "POST"] == ["berth"]


async def test_fake_api_prune_removes_what_the_render_dropped_and_leaves_other_apis(fake: Any) -> None:
    cluster = cluster_on(fake)
    iris = [obj("Service", "iris", "iris"), obj("ConfigMap", "iris-code-aaaa", "iris"),
            obj("HorizontalPodAutoscaler", "iris", "iris", spec={"maxReplicas": 2})]
    other = [obj("Service", "text", "text"), obj("ConfigMap", "text-code-bbbb", "text")]
    unlabelled = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "iris-notes", "namespace": NS,
                                                                          "labels": {"berth.dev/api": "iris"}}}
    await in_thread(lambda: cluster.apply([*iris, *other, unlabelled]))
    rendered = [obj("Service", "iris", "iris", "v2"), obj("ConfigMap", "iris-code-cccc", "iris", "v2")]
    await in_thread(lambda: cluster.apply(rendered))
    pruned = await in_thread(lambda: cluster.prune("iris", {("Service", "iris"), ("ConfigMap", "iris-code-cccc")}))
    assert sorted(pruned) == [("ConfigMap", "iris-code-aaaa"), ("HorizontalPodAutoscaler", "iris")]
    assert names(fake, "v1/configmaps") == {"iris-code-cccc", "text-code-bbbb", "iris-notes"}
    assert names(fake, "v1/services") == {"iris", "text"}
    assert names(fake, "autoscaling/v2/horizontalpodautoscalers") == set()


async def test_fake_api_delete_removes_every_labelled_object_of_the_api(fake: Any) -> None:
    cluster = cluster_on(fake)
    await in_thread(lambda: cluster.apply([
        obj("ConfigMap", "iris-code-aaaa", "iris"), deployment("iris", "v1"), obj("Service", "iris", "iris"),
        obj("PodDisruptionBudget", "iris", "iris", spec={"maxUnavailable": 1}), obj("Service", "text", "text")]))
    backend = backend_on(fake)
    deletion = await in_thread(lambda: backend.delete("iris"))
    assert (deletion.api, deletion.stopped) == ("iris", False)
    assert names(fake, DEPLOYMENTS) == set() and names(fake, "v1/configmaps") == set()
    assert names(fake, "v1/services") == {"text"} and names(fake, "policy/v1/poddisruptionbudgets") == set()
    with pytest.raises(NotFound):
        await in_thread(lambda: backend.delete("iris"))


async def test_fake_api_refresh_sets_the_restart_annotation(fake: Any) -> None:
    fake.objects[DEPLOYMENTS, NS, "iris"] = deployment("iris", "v3")
    change = await in_thread(lambda: backend_on(fake).refresh("iris"))
    assert (change.action, change.version, change.message) == ("restarting", "v3", "restarting iris")
    template = stored(fake, DEPLOYMENTS, "iris")["spec"]["template"]  # type: ignore[index]
    assert RESTARTED_AT in template["metadata"]["annotations"]
    assert template["metadata"]["labels"]["berth.dev/version"] == "v3"  # the merge patch kept the rest


@pytest.mark.parametrize(("seed", "status", "error"), [
    (lambda f: None, APIStatus.LIVE, None),
    (lambda f: f.objects.__setitem__(("v1/pods", NS, "iris-new"), pod(
        "iris", "iris-new", "v2", waiting={"reason": "ImagePullBackOff", "message": "not found"})),
     APIStatus.ERROR, "image pull failed: registry.example/berth/runtime:9: not found"),
    (lambda f: f.objects.__setitem__(("v1/pods", NS, "iris-new"), pod(
        "iris", "iris-new", "v2", waiting={"reason": "CrashLoopBackOff"}, last={"reason": "OOMKilled"})),
     APIStatus.ERROR_OOM, "out of memory: container api was killed at its memory limit (1Gi) (OOMKilled)"),
    (lambda f: f.objects.__setitem__(("v1/pods", NS, "iris-new"), pod("iris", "iris-new", "v2")),
     APIStatus.UPDATING, None),
], ids=["live", "image-pull", "oom", "starting"])
async def test_fake_api_status_from_scripted_deployment_and_pods(fake: Any, seed: Callable[[Any], None],
                                                                 status: APIStatus, error: str | None) -> None:
    live = status is APIStatus.LIVE
    fake.objects[DEPLOYMENTS, NS, "iris"] = deployment("iris", "v2", generation=2, observed=2,
                                                        updated=1, available=1 if live else 0)
    fake.objects["v1/pods", NS, "iris-old"] = pod("iris", "iris-old", "v1" if not live else "v2", ready=True)
    seed(fake)
    api = await in_thread(lambda: backend_on(fake).get_api("iris"))
    assert (api["status"], api["error"]) == (status, error)
    assert api["version"] == "v2" and api["requested"] == 1
    assert api["url"] == "http://localhost:8080/iris" and "port-forward svc/iris 8080:80" in api["access"]
    assert {r["id"] for r in api["replicas"]} >= {"iris-old"}


async def test_fake_api_rollout_past_its_deadline_is_an_error(fake: Any) -> None:
    fake.objects[DEPLOYMENTS, NS, "iris"] = deployment("iris", "v2", updated=1, available=0, deadline=True)
    api = await in_thread(lambda: backend_on(fake).get_api("iris"))
    assert api["status"] == APIStatus.ERROR
    assert api["error"].startswith("rollout of version v2 failed: deployment 'iris' exceeded its progress deadline")


async def test_fake_api_get_and_list_only_berths_deployments(fake: Any) -> None:
    fake.objects[DEPLOYMENTS, NS, "iris"] = deployment("iris", "v1")
    fake.objects[DEPLOYMENTS, NS, "someone-elses"] = {
        **deployment("x", "v1"), "metadata": {"name": "someone-elses", "namespace": NS, "labels": {}}}
    backend = backend_on(fake)
    assert [api["name"] for api in await in_thread(backend.list_apis)] == ["iris"]
    with pytest.raises(NotFound):
        await in_thread(lambda: backend.get_api("someone-elses"))


async def test_fake_api_logs_merge_pods_with_prefixes(fake: Any) -> None:
    fake.objects[DEPLOYMENTS, NS, "iris"] = deployment("iris", "v1")
    for name in ("iris-a", "iris-b"):
        fake.objects["v1/pods", NS, name] = pod("iris", name, "v1", ready=True)
    fake[f"get /api/v1/namespaces/{NS}/pods/iris-a/log"] << b"loading model\nready\n"
    fake[f"get /api/v1/namespaces/{NS}/pods/iris-b/log"] << b"ready\n"
    lines = await in_thread(lambda: list(backend_on(fake).logs("iris", tail=50)))
    assert lines == ["[iris-a] loading model\n", "[iris-a] ready\n", "[iris-b] ready\n"]
    asked = [r for r in fake if r.url.path.endswith("/log")]
    assert {r.params.get("container") for r in asked} == {"api"} and {r.params.get("tailLines") for r in asked} \
        == {"50"}


async def test_fake_api_logs_follow_streams_until_the_reader_stops(fake: Any) -> None:
    fake.objects[DEPLOYMENTS, NS, "iris"] = deployment("iris", "v1")
    fake.objects["v1/pods", NS, "iris-a"] = pod("iris", "iris-a", "v1", ready=True)
    fake[f"get /api/v1/namespaces/{NS}/pods/iris-a/log"] << b"one\ntwo\n"

    def first_two() -> list[str]:
        stream = backend_on(fake).logs("iris", follow=True, tail=0)
        try:
            return [next(stream), next(stream)]
        finally:
            stream.close()

    assert await in_thread(first_two) == ["[iris-a] one\n", "[iris-a] two\n"]


async def test_fake_api_an_unreachable_server_is_said_with_the_context(fake: Any) -> None:
    env = Environment("prod", Provider.KUBERNETES, {"namespace": NS, "context": "prod-eu"})
    backend = KubernetesBackend(env, client=client_for("http://127.0.0.1:9"))
    with pytest.raises(DaemonUnavailable) as raised:
        await in_thread(backend.ensure_running)
    assert "context prod-eu, namespace ml" in raised.value.message
    assert "kubectl --context prod-eu get deployments -n ml" in (raised.value.hint or "")


async def test_fake_api_deploy_applies_prunes_and_reports_changes(fake: Any, tmp_path: Path) -> None:
    (tmp_path / "predictor.py").write_text(textwrap.dedent("""
        class PythonPredictor:
            def __init__(self, config):
                self.config = config

            def predict(self, payload):
                return payload
    """))
    spec_file = tmp_path / "berth.yaml"
    spec_file.write_text("- name: hello\n  kind: RealtimeAPI\n  predictor:\n    type: python\n"
                         "    path: predictor.py\n    config: {greeting: hi}\n")
    backend = backend_on(fake)
    [created] = await in_thread(lambda: backend.deploy(load_spec(spec_file)))
    assert (created.api, created.action, created.message) == ("hello", "creating", "creating hello")
    # KEDA absent from the fake: the HPA fallback is rendered and applied.
    assert names(fake, "autoscaling/v2/horizontalpodautoscalers") == {"hello"}
    first_code = names(fake, "v1/configmaps")
    assert len(first_code) == 1
    [same] = await in_thread(lambda: backend_on(fake).deploy(load_spec(spec_file)))
    assert (same.action, same.message, same.version) == ("up to date", "hello is up to date", created.version)
    (tmp_path / "predictor.py").write_text((tmp_path / "predictor.py").read_text() + "\n# changed\n")
    [updated] = await in_thread(lambda: backend_on(fake).deploy(load_spec(spec_file)))
    assert updated.action == "updating" and updated.version != created.version
    # The previous version's code ConfigMap stays while the Deployment ran it until now (its pods may restart
    # mid-rollout); the retention tests below follow it until it is pruned.
    assert len(names(fake, "v1/configmaps")) == 2 and first_code < names(fake, "v1/configmaps")


async def test_fake_api_deploy_refuses_to_take_over_a_deployment_berth_did_not_make(fake: Any,
                                                                                     tmp_path: Path) -> None:
    (tmp_path / "predictor.py").write_text("class PythonPredictor:\n    def __init__(self, config):\n        pass\n\n"
                                           "    def predict(self, payload):\n        return payload\n")
    (tmp_path / "berth.yaml").write_text("- name: hello\n  kind: RealtimeAPI\n  predictor:\n    type: python\n"
                                         "    path: predictor.py\n")
    theirs = deployment("hello", "v1")
    theirs["metadata"]["labels"] = {"app": "hello"}
    fake.objects[DEPLOYMENTS, NS, "hello"] = theirs
    with pytest.raises(Conflict):
        await in_thread(lambda: backend_on(fake).deploy(load_spec(tmp_path / "berth.yaml")))
    assert stored(fake, DEPLOYMENTS, "hello")["metadata"]["labels"] == {"app": "hello"}  # type: ignore[index]


async def test_fake_api_cli_get_and_logs_read_a_kubernetes_environment(fake: Any, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI end to end: environments.json names a context of the user's kubeconfig, which points at the fake."""
    import json

    from click.testing import CliRunner

    from berth.cli.main import cli

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "other",
        "clusters": [{"name": "fake", "cluster": {"server": str(fake.url)}},
                     {"name": "nowhere", "cluster": {"server": "http://127.0.0.1:9"}}],
        "contexts": [{"name": "prod-eu", "context": {"cluster": "fake", "user": "nobody"}},
                     {"name": "other", "context": {"cluster": "nowhere", "user": "nobody"}}],
        "users": [{"name": "nobody", "user": {}}]}))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    home = tmp_path / "home"
    home.mkdir()
    (home / "environments.json").write_text(json.dumps({"version": 1, "default": "local", "environments": {
        "prod": {"provider": "kubernetes", "settings": {"context": "prod-eu", "namespace": NS}}}}))
    fake.objects[DEPLOYMENTS, NS, "iris"] = deployment("iris", "v1")
    fake.objects["v1/pods", NS, "iris-a"] = pod("iris", "iris-a", "v1", ready=True)
    fake[f"get /api/v1/namespaces/{NS}/pods/iris-a/log"] << b"ready\n"

    def run(*args: str) -> Any:
        return CliRunner().invoke(cli, ["--home", str(home), *args])

    got = await in_thread(lambda: run("get", "-e", "prod", "-o", "json"))
    assert got.exit_code == 0, got.output
    [api] = json.loads(got.output)
    assert (api["name"], api["status"], api["up_to_date"]) == ("iris", "live", 1)
    logs = await in_thread(lambda: run("logs", "iris", "-e", "prod"))
    assert (logs.exit_code, logs.output) == (0, "[iris-a] ready\n")
    missing = await in_thread(lambda: run("get", "nope", "-e", "prod"))
    assert missing.exit_code == 3 and "no API named 'nope'" in missing.output


async def test_fake_api_url_is_the_gateways_address_or_a_port_forward_hint(fake: Any) -> None:
    from berth.errors import BerthError

    fake.objects[DEPLOYMENTS, NS, "iris"] = deployment("iris", "v1")
    with pytest.raises(BerthError) as raised:
        await in_thread(lambda: backend_on(fake).url("iris"))
    assert "kubectl -n ml port-forward svc/iris 8080:80" in (raised.value.hint or "")
    fake.objects["gateway.networking.k8s.io/v1/gateways", "edge", "public"] = {
        "metadata": {"name": "public", "namespace": "edge"}, "status": {"addresses": [{"value": "203.0.113.7"}]}}
    url = await in_thread(lambda: backend_on(fake, gateway="edge/public").url("iris"))
    assert url == "http://203.0.113.7/iris"


PREDICTOR = """\
class PythonPredictor:
    def __init__(self, config):
        self.config = config

    def predict(self, payload):
        return payload
"""


def hello_project(folder: Path, autoscaling: str = "") -> Path:
    (folder / "predictor.py").write_text(PREDICTOR)
    (folder / "berth.yaml").write_text("- name: hello\n  kind: RealtimeAPI\n  predictor:\n    type: python\n"
                                       f"    path: predictor.py\n{autoscaling}")
    return folder / "berth.yaml"


def change_code(folder: Path) -> None:
    (folder / "predictor.py").write_text((folder / "predictor.py").read_text() + "# changed\n")


def mounted_configmap(fake: Any) -> str:
    volumes = stored(fake, DEPLOYMENTS, "hello")["spec"]["template"]["spec"]["volumes"]  # type: ignore[index]
    return str(next(v["configMap"]["name"] for v in volumes if "configMap" in v))


def replica_set(name: str, configmap: str, secret: str | None = None) -> dict[str, Any]:
    volumes: list[dict[str, Any]] = [{"name": "code", "configMap": {"name": configmap}}]
    if secret is not None:
        volumes.append({"name": "dotenv", "secret": {"secretName": secret}})
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": NS, "labels": labels("hello", "old")},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"berth.dev/api": "hello"}},
                     "template": {"metadata": {"labels": labels("hello", "old")},
                                  "spec": {"containers": [], "volumes": volumes}}}}


async def test_fake_api_deploy_keeps_the_code_configmaps_a_replica_set_still_mounts_and_prunes_the_rest(
        fake: Any, tmp_path: Path) -> None:
    spec_file = hello_project(tmp_path)
    await in_thread(lambda: backend_on(fake).deploy(load_spec(spec_file)))
    first = mounted_configmap(fake)
    change_code(tmp_path)
    await in_thread(lambda: backend_on(fake).deploy(load_spec(spec_file)))
    second = mounted_configmap(fake)
    # The old ReplicaSet of the first version (within revisionHistoryLimit) still mounts its ConfigMap.
    fake.objects["apps/v1/replicasets", NS, "hello-first"] = replica_set("hello-first", first)
    change_code(tmp_path)
    await in_thread(lambda: backend_on(fake).deploy(load_spec(spec_file)))
    third = mounted_configmap(fake)
    assert names(fake, "v1/configmaps") == {first, second, third}
    # The Deployment controller dropped that ReplicaSet (revisionHistoryLimit): its ConfigMap goes at the next
    # deploy, and so does the one no ReplicaSet mounts any more.
    del fake.objects["apps/v1/replicasets", NS, "hello-first"]
    change_code(tmp_path)
    await in_thread(lambda: backend_on(fake).deploy(load_spec(spec_file)))
    assert names(fake, "v1/configmaps") == {third, mounted_configmap(fake)}
    deployment_spec = stored(fake, DEPLOYMENTS, "hello")["spec"]  # type: ignore[index]
    assert deployment_spec["revisionHistoryLimit"] == 5


async def test_fake_api_deploy_applies_the_dot_env_secret_and_never_says_its_values(fake: Any,
                                                                                  tmp_path: Path) -> None:
    spec_file = hello_project(tmp_path)
    (tmp_path / ".env").write_text("TOKEN=not-a-real-secret\n")
    lines: list[str] = []
    await in_thread(lambda: backend_on(fake).deploy(load_spec(spec_file), progress=lines.append))
    [secret_name] = names(fake, "v1/secrets")
    secret = stored(fake, "v1/secrets", secret_name)
    assert secret is not None and secret["type"] == "Opaque" and secret["immutable"] is True
    assert base64.b64decode(secret["data"][".env"]) == b"TOKEN=not-a-real-secret\n"
    assert secret["metadata"]["labels"]["berth.dev/api"] == "hello"
    pod = stored(fake, DEPLOYMENTS, "hello")["spec"]["template"]["spec"]  # type: ignore[index]
    assert {"name": "dotenv", "secret": {"secretName": secret_name, "defaultMode": 0o440}} in pod["volumes"]
    assert "--dotenv" in pod["containers"][0]["args"]
    # A changed .env is a new Secret; the old one stays while the Deployment ran it, then goes.
    (tmp_path / ".env").write_text("TOKEN=another-one\n")
    await in_thread(lambda: backend_on(fake).deploy(load_spec(spec_file), progress=lines.append))
    assert secret_name in names(fake, "v1/secrets") and len(names(fake, "v1/secrets")) == 2
    change_code(tmp_path)
    await in_thread(lambda: backend_on(fake).deploy(load_spec(spec_file), progress=lines.append))
    assert secret_name not in names(fake, "v1/secrets") and len(names(fake, "v1/secrets")) == 1
    assert not any("not-a-real-secret" in line or "another-one" in line for line in lines)
    # delete removes the Secrets with the rest.
    await in_thread(lambda: backend_on(fake).delete("hello"))
    assert names(fake, "v1/secrets") == set()


def _deployment_applies(fake: Any, manager: str = "berth") -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in fake if r.method == "PATCH" and r.name == "hello"
            and r.resource is not None and r.resource.plural == "deployments"
            and r.params.get("fieldManager") == manager]


async def test_fake_api_a_new_deployment_starts_at_init_replicas_and_updates_send_no_replicas(
        fake: Any, tmp_path: Path) -> None:
    spec_file = hello_project(tmp_path, "  autoscaling:\n    min_replicas: 1\n    max_replicas: 6\n"
                                        "    init_replicas: 4\n")
    await in_thread(lambda: backend_on(fake).deploy(load_spec(spec_file)))
    [create] = _deployment_applies(fake)
    assert create["spec"]["replicas"] == 4
    # The count gets a second owner, so that leaving it out of berth's next applies does not reset it.
    [hand_over] = _deployment_applies(fake, "berth-initial-replicas")
    assert hand_over["spec"] == {"replicas": 4}
    assert stored(fake, DEPLOYMENTS, "hello")["spec"]["replicas"] == 4  # type: ignore[index]
    # The autoscaler scales it; an update (new code) must not touch the live count.
    fake.objects[DEPLOYMENTS, NS, "hello"] = {**stored(fake, DEPLOYMENTS, "hello"),  # type: ignore[dict-item]
                                              "spec": {**stored(fake, DEPLOYMENTS, "hello")["spec"],  # type: ignore[index]
                                                       "replicas": 6}}
    change_code(tmp_path)
    [update] = await in_thread(lambda: backend_on(fake).deploy(load_spec(spec_file)))
    assert update.action == "updating"
    applies = _deployment_applies(fake)
    assert len(applies) == 2 and "replicas" not in applies[1]["spec"]
    assert len(_deployment_applies(fake, "berth-initial-replicas")) == 1
    assert stored(fake, DEPLOYMENTS, "hello")["spec"]["replicas"] == 6  # type: ignore[index]


async def test_fake_api_code_over_the_configmap_limit_deploys_with_a_baked_image(fake: Any, tmp_path: Path) -> None:
    spec_file = hello_project(tmp_path)
    (tmp_path / "weights.bin").write_bytes(os.urandom(1100 * 1024))
    lines: list[str] = []
    backend = backend_on(fake, image="registry.example/team/hello:2")
    [created] = await in_thread(lambda: backend.deploy(load_spec(spec_file), progress=lines.append))
    assert created.action == "creating"
    [configmap] = [stored(fake, "v1/configmaps", name) for name in names(fake, "v1/configmaps")]
    assert configmap is not None and "binaryData" not in configmap and set(configmap["data"]) == {"spec.json"}
    assert any("registry.example/team/hello:2" in line and "berth build" in line for line in lines)
    with pytest.raises(BerthError, match="berth build"):
        await in_thread(lambda: backend_on(fake).deploy(load_spec(spec_file)))


async def test_fake_api_credentials_that_may_not_list_secrets_still_deploy_and_prune(fake: Any,
                                                                                   tmp_path: Path) -> None:
    fake[f"get /api/v1/namespaces/{NS}/secrets"] << 403 << {"kind": "Status", "code": 403, "message": "forbidden"}
    spec_file = hello_project(tmp_path)
    await in_thread(lambda: backend_on(fake).deploy(load_spec(spec_file)))
    change_code(tmp_path)
    [updated] = await in_thread(lambda: backend_on(fake).deploy(load_spec(spec_file)))
    assert updated.action == "updating" and len(names(fake, "v1/configmaps")) == 2


async def test_fake_api_a_scale_to_zero_api_behind_a_gateway_brings_the_shared_activator(fake: Any,
                                                                                        tmp_path: Path) -> None:
    spec_file = hello_project(tmp_path, "  autoscaling:\n    min_replicas: 0\n")
    backend = backend_on(fake, gateway="edge")
    await in_thread(lambda: backend.deploy(load_spec(spec_file)))
    assert names(fake, "apps/v1/deployments") == {"hello", "berth-activator"}
    assert names(fake, "rbac.authorization.k8s.io/v1/roles") == {"berth-activator"}
    assert names(fake, "v1/serviceaccounts") == {"berth-activator"}
    route = stored(fake, "gateway.networking.k8s.io/v1/httproutes", "hello")
    assert route is not None and route["spec"]["rules"][0]["backendRefs"][0]["name"] == "berth-activator"
    # Shared, so it is no API: `berth get` does not list it, and deleting the API leaves it serving the others.
    assert [api["name"] for api in await in_thread(backend_on(fake, gateway="edge").list_apis)] == ["hello"]
    await in_thread(lambda: backend_on(fake, gateway="edge").delete("hello"))
    assert names(fake, "apps/v1/deployments") == {"berth-activator"}


async def test_fake_api_without_a_gateway_nothing_routes_through_an_activator(fake: Any, tmp_path: Path) -> None:
    spec_file = hello_project(tmp_path, "  autoscaling:\n    min_replicas: 0\n")
    await in_thread(lambda: backend_on(fake).deploy(load_spec(spec_file)))
    assert names(fake, "apps/v1/deployments") == {"hello"}
