"""The activator's objects and the HTTPRoute of an API that scales to zero: golden file, schemas, semantics.

Regenerate the golden file after an intended change with
`BERTH_REGEN_GOLDEN=1 pytest tests/unit/test_k8s_activator_render.py` and review the diff.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from berth import __version__
from berth.backends.kubernetes.labels import API_LABEL, MANAGED_BY, NAME_LABEL, VERSION_LABEL
from berth.backends.kubernetes.render import render_api, render_spec, to_yaml
from berth.backends.kubernetes.render_activator import ACTIVATOR, needs_activator, render_activator
from berth.backends.kubernetes.render_bundle import CodeBundle
from berth.backends.kubernetes.settings import ClusterSettings
from berth.config.loader import load_spec
from berth.config.schema import RealtimeAPI
from tests.kubernetes.support import GOLDEN, SPECS, golden_view, schema_problems, semantic_problems

PROMETHEUS = "http://prometheus.monitoring:9090"
CLUSTER = ClusterSettings(namespace="ml", prometheus=PROMETHEUS, gateway="infra/public")
BUNDLE = CodeBundle(name="code-0123456789", digest="0" * 64, data=b"\x1f\x8b not really a tarball")


def rendered() -> list[dict[str, Any]]:
    """What a deploy of the scale-to-zero spec applies: every API's objects, then the namespace's activator."""
    spec = load_spec(SPECS / "scale-to-zero")
    objects = render_spec(spec, CLUSTER)
    assert needs_activator(spec.apis, CLUSTER)
    return objects + render_activator(CLUSTER)


def api(**fields: Any) -> RealtimeAPI:
    return RealtimeAPI.model_validate({"name": "demo", "kind": "RealtimeAPI",
                                       "predictor": {"type": "python", "path": "predictor.py"}, **fields})


def route_rule(spec: RealtimeAPI, cluster: ClusterSettings) -> dict[str, Any]:
    route = next(d for d in render_api(spec, BUNDLE, cluster, version="v1") if d["kind"] == "HTTPRoute")
    return dict(route["spec"]["rules"][0])


def test_the_scale_to_zero_rendering_matches_the_golden_file() -> None:
    text = to_yaml(golden_view(rendered())).replace(f"berth/runtime:{__version__}-", "berth/runtime:<berth version>-")
    golden = GOLDEN / "scale-to-zero.yaml"
    if os.environ.get("BERTH_REGEN_GOLDEN"):
        golden.write_text(text, encoding="utf-8")
    assert golden.is_file(), f"no golden file {golden}: run with BERTH_REGEN_GOLDEN=1"
    assert text == golden.read_text(encoding="utf-8"), f"differs from {golden} (BERTH_REGEN_GOLDEN=1 rewrites)"


def test_every_object_passes_its_schema_strictly_and_the_set_is_sound() -> None:
    objects = rendered()
    assert [problem for doc in objects for problem in schema_problems(doc)] == []
    assert semantic_problems(objects) == []
    kinds = {doc["kind"] for doc in objects}
    assert {"ServiceAccount", "Role", "RoleBinding", "HTTPRoute"} <= kinds


def test_an_api_that_scales_to_zero_is_routed_through_the_activator_with_its_name_in_a_header() -> None:
    spec = api(autoscaling={"min_replicas": 0, "scale_from_zero_timeout": "2m"},
               networking={"endpoint": "/v1/demo", "timeout": "90s"})
    rule = route_rule(spec, ClusterSettings(prometheus=PROMETHEUS, gateway="public"))
    assert rule["backendRefs"] == [{"group": "", "kind": "Service", "name": ACTIVATOR, "port": 80}]
    assert rule["filters"] == [
        {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}},
        {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x-berth-api", "value": "demo"}]}},
    ]
    assert rule["timeouts"] == {"request": "3m30s"}  # the wait for a pod, then networking.timeout
    other = route_rule(api(autoscaling={"min_replicas": 1}), ClusterSettings(prometheus=PROMETHEUS, gateway="public"))
    assert other["backendRefs"][0]["name"] == "demo"
    assert [f["type"] for f in other["filters"]] == ["URLRewrite"]


def test_the_activator_is_needed_only_for_an_api_at_zero_behind_a_gateway() -> None:
    zero, one = api(autoscaling={"min_replicas": 0}), api(name="other")
    assert needs_activator([one, zero], CLUSTER)
    assert not needs_activator([one], CLUSTER)
    assert not needs_activator([zero], ClusterSettings(prometheus=PROMETHEUS))  # no Gateway, no HTTPRoute


def test_the_activator_is_shared_least_privilege_and_runs_like_the_api_pods() -> None:
    cluster = ClusterSettings(namespace="ml", image="registry.example/team/runtime:7")
    objects = {doc["kind"]: doc for doc in render_activator(cluster)}
    assert list(objects) == ["ServiceAccount", "Role", "RoleBinding", "Deployment", "Service"]
    for doc in objects.values():
        assert doc["metadata"]["name"] == ACTIVATOR and doc["metadata"]["namespace"] == "ml"
        labels = doc["metadata"]["labels"]
        assert labels[MANAGED_BY[0]] == MANAGED_BY[1] and labels[NAME_LABEL] == ACTIVATOR
        assert API_LABEL not in labels and VERSION_LABEL not in labels  # no API's prune or delete touches it
    rules = {(rule["apiGroups"][0], rule["resources"][0]): set(rule["verbs"]) for rule in objects["Role"]["rules"]}
    assert rules == {("apps", "deployments"): {"get", "list", "watch"},
                     ("apps", "deployments/scale"): {"get", "patch", "update"}, ("", "configmaps"): {"get", "list"}}
    assert all(len(rule["resources"]) == 1 for rule in objects["Role"]["rules"])
    assert objects["RoleBinding"]["subjects"] == [{"kind": "ServiceAccount", "name": ACTIVATOR, "namespace": "ml"}]
    assert objects["RoleBinding"]["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                                 "name": ACTIVATOR}
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == ACTIVATOR
    container = pod["containers"][0]
    assert container["image"] == "registry.example/team/runtime:7"
    assert container["command"] == ["python", "-m", "berth.activator"]
    assert container["args"] == ["--namespace", "ml", "--port", "8080"]
    api_pod = next(d for d in render_api(api(), BUNDLE, cluster, keda=False, version="v1") if d["kind"] == "Deployment")
    api_pod = api_pod["spec"]["template"]["spec"]
    assert pod["securityContext"] == api_pod["securityContext"]
    assert container["securityContext"] == api_pod["containers"][0]["securityContext"]
    assert objects["Service"]["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    default = render_activator(ClusterSettings())[3]["spec"]["template"]["spec"]["containers"][0]
    assert default["image"] == f"berth/runtime:{__version__}-cpu"


def test_an_api_may_not_take_the_activators_name() -> None:
    from berth.backends.kubernetes.render import render_api
    from berth.backends.kubernetes.render_bundle import CodeBundle
    from berth.config.schema import RealtimeAPI
    from berth.errors import ConfigError

    api = RealtimeAPI.model_validate({"name": "berth-activator", "kind": "RealtimeAPI",
                                      "predictor": {"type": "python", "path": "p.py"}})
    with pytest.raises(ConfigError, match="the name is berth's own"):
        render_api(api, CodeBundle(name="code-0", digest="0", data=b""), ClusterSettings(), version="v")
