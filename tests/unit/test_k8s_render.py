"""The Kubernetes rendering: golden files, schemas (built-in kinds and vendored CRDs), semantics, properties.

Regenerate the golden files after an intended change with `BERTH_REGEN_GOLDEN=1 pytest tests/unit/test_k8s_render.py`
and review the diff.
"""

from __future__ import annotations

import base64
import copy
import gzip
import hashlib
import io
import os
import re
import shutil
import tarfile
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from berth import __version__
from berth.backends.kubernetes.labels import API_LABEL, MANAGED_BY, NAME_LABEL, VERSION_LABEL, api_selector
from berth.backends.kubernetes.render import (
    CodeBundle,
    bundle_project,
    render_api,
    render_spec,
    spec_json,
    to_yaml,
    version_of,
)
from berth.backends.kubernetes.render_bundle import MAX_BUNDLE_BYTES
from berth.backends.kubernetes.settings import ClusterSettings
from berth.config.loader import load_spec
from berth.config.schema import RealtimeAPI
from berth.errors import BerthError, ConfigError
from tests.kubernetes.support import (
    GOLDEN,
    KUBERNETES_VERSIONS,
    SPECS,
    golden_view,
    quantity,
    schema_problems,
    semantic_problems,
)

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = "http://prometheus.monitoring:9090"
CASES: dict[str, tuple[Path, ClusterSettings, bool]] = {
    "iris-classifier": (ROOT / "examples" / "iris-classifier", ClusterSettings(prometheus=PROMETHEUS), True),
    "gpu-api": (SPECS / "gpu-api", ClusterSettings(prometheus=PROMETHEUS, image="registry.example/team/vision:3"),
                True),
    "autoscaled-keda": (SPECS / "autoscaled", ClusterSettings(namespace="ml", prometheus=PROMETHEUS), True),
    "autoscaled-hpa": (SPECS / "autoscaled", ClusterSettings(namespace="ml"), False),
    "gateway": (SPECS / "gateway", ClusterSettings(namespace="ml", prometheus=PROMETHEUS, gateway="infra/public"),
                True),
    "splitter": (SPECS / "splitter", ClusterSettings(namespace="ml", prometheus=PROMETHEUS, gateway="infra/public"),
                 True),
}


def rendered(case: str) -> list[dict[str, Any]]:
    path, cluster, keda = CASES[case]
    return render_spec(load_spec(path), cluster, keda=keda)


def api(**fields: Any) -> RealtimeAPI:
    data = {"name": "demo", "kind": "RealtimeAPI", "predictor": {"type": "python", "path": "predictor.py"}}
    for key, value in fields.items():
        data[key] = value
    return RealtimeAPI.model_validate(data)


BUNDLE = CodeBundle(name="code-0123456789", digest="0" * 64, data=b"\x1f\x8b not really a tarball")


def objects_of(spec: RealtimeAPI, cluster: ClusterSettings | None = None, keda: bool = True) -> dict[str, Any]:
    cluster = cluster or ClusterSettings(prometheus=PROMETHEUS)
    return {doc["kind"]: doc for doc in render_api(spec, BUNDLE, cluster, keda=keda, version="v1")}


# --- golden files -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_objects_match_the_golden_file(case: str) -> None:
    objects = rendered(case)
    text = to_yaml(golden_view(objects))
    text = text.replace(f"berth/runtime:{__version__}-", "berth/runtime:<berth version>-")
    if case == "iris-classifier":
        # The example's files are edited for their own sake: its hashes and sizes are left out here
        # (the spec cases under tests/kubernetes/specs keep theirs, so a change of hashing is seen).
        version = objects[0]["metadata"]["labels"][VERSION_LABEL]
        code = objects[0]["metadata"]["name"].rpartition("-")[2]
        text = text.replace(version, "<version>").replace(code, "<code hash>")
        text = re.sub(r" \(\d+ bytes, ", " (", text)
    golden = GOLDEN / f"{case}.yaml"
    if os.environ.get("BERTH_REGEN_GOLDEN"):
        golden.write_text(text, encoding="utf-8")
    assert golden.is_file(), f"no golden file {golden}: run with BERTH_REGEN_GOLDEN=1"
    assert text == golden.read_text(encoding="utf-8"), f"{case} differs from {golden} (BERTH_REGEN_GOLDEN=1 rewrites)"


# --- schemas and semantics of every rendered object -----------------------------------------------------------
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_rendered_object_passes_its_schema_strictly_on_the_oldest_and_newest_kubernetes(case: str) -> None:
    objects = rendered(case)
    assert [problem for doc in objects for problem in schema_problems(doc)] == []


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_rendered_set_is_semantically_sound(case: str) -> None:
    assert semantic_problems(rendered(case)) == []


def test_the_cases_cover_every_kind() -> None:
    kinds = {doc["kind"] for case in CASES for doc in rendered(case)}
    assert kinds == {"ConfigMap", "Deployment", "Service", "ScaledObject", "HorizontalPodAutoscaler",
                     "PodDisruptionBudget", "HTTPRoute"}


def test_the_checks_catch_what_they_are_for() -> None:
    objects = rendered("gateway")
    by_kind = {doc["kind"]: doc for doc in objects}
    scaled = copy.deepcopy(by_kind["ScaledObject"])
    scaled["spec"]["maxReplicas"] = 3  # an HPA field, not KEDA's
    assert any("maxReplicas" in p for p in schema_problems(scaled))
    scaled = copy.deepcopy(by_kind["ScaledObject"])
    scaled["spec"]["maxReplicaCount"] = "ten"
    assert schema_problems(scaled)
    route = copy.deepcopy(by_kind["HTTPRoute"])
    route["spec"]["rules"][0]["timeout"] = "10s"  # the field is `timeouts`
    assert any("timeout" in p for p in schema_problems(route))
    route = copy.deepcopy(by_kind["HTTPRoute"])
    route["spec"]["rules"][0]["timeouts"]["request"] = "ten seconds"
    assert schema_problems(route)
    deployment = copy.deepcopy(by_kind["Deployment"])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["path"] = "/readyz"
    assert schema_problems(deployment)
    assert "no schema" in schema_problems({"apiVersion": "example.com/v1", "kind": "Widget",
                                           "metadata": {"name": "w"}})[0]

    broken = copy.deepcopy(objects)
    deployment = next(doc for doc in broken if doc["kind"] == "Deployment")
    deployment["spec"]["selector"]["matchLabels"][API_LABEL] = "another"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["resources"] = {"requests": {"cpu": "lots", "nvidia.com/gpu": 1}, "limits": {"nvidia.com/gpu": 2}}
    scaler = next(doc for doc in broken if doc["kind"] == "ScaledObject")
    scaler["spec"]["minReplicaCount"] = 200
    deployment["spec"]["replicas"] = 3
    problems = "\n".join(semantic_problems(broken))
    for expected in ("selector is not a subset", "'lots' is not a Kubernetes quantity", "GPU requests 1 != limits 2",
                     "without the nvidia.com/gpu toleration", "replica bounds 200..100", "replicas set although"):
        assert expected in problems
    named = copy.deepcopy(objects)
    named[1]["metadata"]["name"] = "Bad_Name"
    assert any("DNS-1123" in p for p in semantic_problems(named))


# --- what each field becomes -------------------------------------------------------------------------------
def test_resources_come_from_compute_with_the_memory_limit_at_the_request() -> None:
    container = objects_of(api(compute={"cpu": 2, "mem": "1500Mi"}))["Deployment"]["spec"]["template"]["spec"][
        "containers"][0]
    assert container["resources"] == {"requests": {"cpu": "2", "memory": "1500Mi"}, "limits": {"memory": "1500Mi"}}
    container = objects_of(api(compute={"cpu": "250m"}))["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {"requests": {"cpu": "250m"}}


def test_gpus_are_whole_limits_equal_to_requests_with_the_toleration_and_the_cuda_image() -> None:
    pod = objects_of(api(compute={"gpu": 2}))["Deployment"]["spec"]["template"]["spec"]
    resources = pod["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == 2
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["containers"][0]["image"].endswith("-cuda")
    assert "tolerations" not in objects_of(api())["Deployment"]["spec"]["template"]["spec"]


def test_a_fraction_of_a_gpu_is_refused_with_whole_gpus_or_time_slicing_as_the_way_out() -> None:
    with pytest.raises(ConfigError) as caught:
        objects_of(api(compute={"gpu": 0.5}))
    assert "fraction" in str(caught.value) and "whole GPUs" in str(caught.value)
    assert "time-slicing" in str(caught.value)


def test_replicas_are_left_to_the_autoscaler_and_set_only_at_a_fixed_size() -> None:
    objects = objects_of(api(autoscaling={"min_replicas": 2, "max_replicas": 9}))
    assert "replicas" not in objects["Deployment"]["spec"]
    fixed = objects_of(api(autoscaling={"min_replicas": 3, "max_replicas": 3}))
    assert fixed["Deployment"]["spec"]["replicas"] == 3
    assert "ScaledObject" not in fixed and "HorizontalPodAutoscaler" not in fixed


def test_the_scaled_object_scales_on_in_flight_requests_with_cortex_knobs_as_hpa_behavior() -> None:
    spec = api(autoscaling={"min_replicas": 0, "max_replicas": 12, "target_replica_concurrency": 2.5,
                            "window": "30s", "upscale_stabilization_period": "0s",
                            "downscale_stabilization_period": "10m", "max_upscale_factor": 3,
                            "max_downscale_factor": 0.5})
    scaled = objects_of(spec, ClusterSettings(namespace="ml", prometheus=PROMETHEUS))["ScaledObject"]["spec"]
    assert scaled["minReplicaCount"] == 0 and scaled["maxReplicaCount"] == 12
    assert scaled["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "demo"}
    trigger = scaled["triggers"][0]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    assert trigger["metadata"]["query"] == (
        'sum(avg_over_time(berth_replica_in_flight_requests{namespace="ml",api_name="demo"}[30s]))')
    assert trigger["metadata"]["threshold"] == "2.5"
    assert trigger["metadata"]["serverAddress"] == PROMETHEUS
    behavior = scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert behavior["scaleUp"]["policies"] == [{"type": "Percent", "value": 200, "periodSeconds": 15}]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 600
    assert behavior["scaleDown"]["policies"] == [{"type": "Percent", "value": 50, "periodSeconds": 15}]


def test_the_default_target_is_processes_times_threads() -> None:
    spec = api(predictor={"type": "python", "path": "p.py", "processes_per_replica": 2, "threads_per_process": 3})
    assert objects_of(spec)["ScaledObject"]["spec"]["triggers"][0]["metadata"]["threshold"] == "6"


def test_without_keda_an_hpa_on_cpu_with_the_same_bounds_and_behavior_and_at_least_one_replica() -> None:
    spec = api(autoscaling={"min_replicas": 0, "max_replicas": 7})
    objects = objects_of(spec, ClusterSettings(), keda=False)
    hpa = objects["HorizontalPodAutoscaler"]["spec"]
    assert "ScaledObject" not in objects
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 7)
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"
    assert hpa["behavior"] == objects_of(spec)["ScaledObject"]["spec"]["advanced"][
        "horizontalPodAutoscalerConfig"]["behavior"]


def test_keda_needs_a_prometheus_server() -> None:
    with pytest.raises(BerthError, match="--prometheus"):
        objects_of(api(), ClusterSettings())


def test_a_stabilization_period_longer_than_kubernetes_allows_is_refused() -> None:
    with pytest.raises(ConfigError, match="at most 1h"):
        objects_of(api(autoscaling={"downscale_stabilization_period": "2h"}))


def test_rolling_update_probes_and_a_drain_as_long_as_the_timeout() -> None:
    deployment = objects_of(api(update_strategy={"max_surge": 1, "max_unavailable": 0},
                                networking={"timeout": "90s"}))["Deployment"]
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate",
                                              "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    sleep = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > sleep + 90


def test_labels_name_berth_the_api_and_its_version_and_selectors_use_the_stable_ones() -> None:
    objects = objects_of(api())
    for doc in objects.values():
        labels = doc["metadata"]["labels"]
        assert labels[MANAGED_BY[0]] == MANAGED_BY[1]
        assert labels[API_LABEL] == labels[NAME_LABEL] == "demo" and labels[VERSION_LABEL] == "v1"
    assert objects["Service"]["spec"]["selector"] == api_selector("demo")
    assert VERSION_LABEL not in objects["Deployment"]["spec"]["selector"]["matchLabels"]


def test_the_http_route_sends_the_endpoint_prefix_to_the_service_on_the_configured_gateway() -> None:
    spec = api(networking={"endpoint": "/v1/demo", "timeout": "90s"})
    route = objects_of(spec, ClusterSettings(prometheus=PROMETHEUS, gateway="public"))["HTTPRoute"]["spec"]
    assert route["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public"}]
    rule = route["rules"][0]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/v1/demo"}}]
    assert rule["backendRefs"][0]["name"] == "demo" and rule["timeouts"] == {"request": "1m30s"}
    assert "HTTPRoute" not in objects_of(spec)


def test_a_name_that_starts_with_a_digit_cannot_name_a_service() -> None:
    with pytest.raises(ConfigError, match="start with a letter"):
        objects_of(api(name="9lives"))


# --- the code ConfigMap ---------------------------------------------------------------------------------------
def _copy_project(tmp_path: Path) -> Path:
    target = tmp_path / "project"
    shutil.copytree(SPECS / "gateway", target)
    return target


def test_the_bundle_is_reproducible_and_ignores_mtimes_and_leaves_dot_env_out(tmp_path: Path) -> None:
    project = _copy_project(tmp_path)
    (project / ".env").write_text("TOKEN=secret\n")
    (project / "lib").mkdir()
    (project / "lib" / "b.py").write_text("B = 2\n")
    (project / "a.py").write_text("A = 1\n")
    first = bundle_project(project, project / "berth.yaml")
    for path in project.rglob("*"):
        os.utime(path, (1_000_000, 1_000_000))
    again = bundle_project(project, project / "berth.yaml")
    assert first == again
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(first.data))) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["a.py", "lib/b.py", "predictor.py"]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, 0, "", "")}
    assert first.name == f"code-{first.digest[:10]}"


def test_a_bundle_over_the_configmap_limit_points_at_berth_build(tmp_path: Path) -> None:
    project = _copy_project(tmp_path)
    (project / "weights.bin").write_bytes(os.urandom(MAX_BUNDLE_BYTES + 1000))
    with pytest.raises(BerthError) as caught:
        bundle_project(project, project / "berth.yaml")
    assert "berth build" in str(caught.value) and "bytes" in str(caught.value)


def test_the_configmap_is_immutable_and_named_by_its_content() -> None:
    spec = api()
    objects = objects_of(spec)
    configmap = objects["ConfigMap"]
    assert configmap["immutable"] is True
    assert base64.b64decode(configmap["binaryData"]["code.tar.gz"]) == BUNDLE.data
    assert configmap["data"]["spec.json"] == spec_json(spec)
    volume = objects["Deployment"]["spec"]["template"]["spec"]["volumes"][0]
    assert volume == {"name": "code", "configMap": {"name": configmap["metadata"]["name"]}}
    other = objects_of(api(autoscaling={"max_replica_concurrency": 8}))["ConfigMap"]
    assert other["metadata"]["name"] != configmap["metadata"]["name"]


def test_the_version_follows_predictor_compute_and_code_only() -> None:
    base = version_of(api(), BUNDLE)
    assert version_of(api(autoscaling={"max_replicas": 3}), BUNDLE) == base
    assert version_of(api(compute={"cpu": 1}), BUNDLE) != base
    assert version_of(api(), CodeBundle("code-x", "1" * 64, b"")) != base


def test_to_yaml_is_stable_alias_free_and_reads_back() -> None:
    objects = rendered("gateway")
    text = to_yaml(objects)
    assert text == to_yaml(rendered("gateway"))
    assert "&id" not in text and "*id" not in text
    assert list(yaml.safe_load_all(text)) == objects


# --- properties over generated specs --------------------------------------------------------------------------
names = st.from_regex(r"[a-z]([a-z0-9-]{0,40}[a-z0-9])?", fullmatch=True)
cpus = st.integers(min_value=20, max_value=64_000).map(lambda m: f"{m}m")
mems = st.one_of(st.none(), st.integers(min_value=20, max_value=256 * 1024).map(lambda m: f"{m}Mi"))
gpus = st.sampled_from([0, 0, 1, 2, 8])
seconds = st.integers(min_value=0, max_value=3600).map(lambda s: f"{s}s")
surges = st.one_of(st.integers(min_value=0, max_value=5), st.integers(min_value=0, max_value=100).map(lambda p: f"{p}%"))


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    low = draw(st.integers(min_value=0, max_value=20))
    high = draw(st.integers(min_value=max(1, low), max_value=200))
    surge, unavailable = draw(surges), draw(surges)
    if surge in (0, "0%") and unavailable in (0, "0%"):
        unavailable = 1
    return {
        "name": draw(names), "kind": "RealtimeAPI",
        "predictor": {"type": "python", "path": "predictor.py"},
        "compute": {"cpu": draw(cpus), "mem": draw(mems), "gpu": draw(gpus)},
        "autoscaling": {"min_replicas": low, "max_replicas": high,
                        "window": f"{10 * draw(st.integers(min_value=1, max_value=60))}s",
                        "target_replica_concurrency": draw(st.floats(min_value=0.1, max_value=1000)),
                        "upscale_stabilization_period": draw(seconds),
                        "downscale_stabilization_period": draw(seconds),
                        "max_upscale_factor": draw(st.floats(min_value=1.001, max_value=100)),
                        "max_downscale_factor": draw(st.floats(min_value=0, max_value=0.999))},
        "update_strategy": {"max_surge": surge, "max_unavailable": unavailable},
        "networking": {"timeout": f"{draw(st.integers(min_value=1, max_value=86_400))}s"},
    }


clusters = st.builds(ClusterSettings, namespace=names.filter(lambda n: len(n) <= 63),
                     prometheus=st.just(PROMETHEUS), gateway=st.one_of(st.none(), names))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=specs(), cluster=clusters, keda=st.booleans())
def test_every_generated_spec_renders_valid_sound_objects(data: dict[str, Any], cluster: ClusterSettings,
                                                           keda: bool) -> None:
    spec = RealtimeAPI.model_validate(data)
    objects = render_api(spec, BUNDLE, cluster, keda=keda, version=version_of(spec, BUNDLE))
    assert semantic_problems(objects) == []
    # One minor per example keeps the run short; the golden cases cover both.
    assert [p for doc in objects for p in schema_problems(doc, versions=("1.37.0",))] == []
    resources = objects[1]["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert quantity(resources["requests"]["cpu"]) == pytest.approx(spec.compute.cpu, abs=0.0005)
    if spec.compute.mem is not None:
        assert quantity(resources["limits"]["memory"]) == round(spec.compute.mem)


# --- .env Secret, init_replicas, code baked into an image ------------------------------------------------------
DOTENV = b"TOKEN=not-a-real-secret\nREGION=eu\n"
IMAGE = "registry.example/team/big:7"


def _incompressible(size: int) -> bytes:
    """Deterministic bytes gzip cannot shrink (so the golden file's hashes are stable)."""
    out = bytearray()
    block = b"berth"
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


def _builtin_problems(doc: dict[str, Any]) -> list[str]:
    """kubernetes-validate --strict on both minors, for kinds tests/kubernetes/support.py does not list (Secret)."""
    problems = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(copy.deepcopy(doc), version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{doc['kind']} against {version}: {exc}")
    return problems


def test_a_dot_env_becomes_an_immutable_opaque_secret_mounted_read_only_with_the_dotenv_argument(
        tmp_path: Path) -> None:
    project = _copy_project(tmp_path)
    (project / ".env").write_bytes(DOTENV)
    bundle = bundle_project(project, project / "berth.yaml")
    assert bundle.dotenv == DOTENV and "not-a-real-secret" not in repr(bundle)
    spec = api()
    objects = render_api(spec, bundle, ClusterSettings(prometheus=PROMETHEUS), version="v1")
    assert [doc["kind"] for doc in objects][:3] == ["Secret", "ConfigMap", "Deployment"]
    secret = objects[0]
    assert re.fullmatch(r"demo-dotenv-[0-9a-f]{10}", secret["metadata"]["name"])
    assert (secret["type"], secret["immutable"]) == ("Opaque", True)
    assert base64.b64decode(secret["data"][".env"]) == DOTENV
    assert secret["metadata"]["labels"] == objects[1]["metadata"]["labels"]
    pod = objects[2]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"][-2:] == ["--dotenv", "/srv/berth/secret/.env"]
    assert {"name": "dotenv", "mountPath": "/srv/berth/secret", "readOnly": True} in container["volumeMounts"]
    assert {"name": "dotenv", "secret": {"secretName": secret["metadata"]["name"], "defaultMode": 0o440}} in \
        pod["volumes"]
    assert [p for doc in objects for p in (_builtin_problems(doc) if doc["kind"] == "Secret"
                                          else schema_problems(doc))] == []
    assert semantic_problems([doc for doc in objects if doc["kind"] != "Secret"]) == []
    # Another .env is another Secret (immutable, like the code); no .env, no Secret, no mount, no argument.
    (project / ".env").write_bytes(DOTENV + b"MORE=1\n")
    other = render_api(spec, bundle_project(project, project / "berth.yaml"), ClusterSettings(prometheus=PROMETHEUS),
                       version="v1")
    assert other[0]["metadata"]["name"] != secret["metadata"]["name"]
    plain = objects_of(spec)
    assert "Secret" not in plain and "--dotenv" not in plain["Deployment"]["spec"]["template"]["spec"][
        "containers"][0]["args"]


def test_without_secret_data_the_secret_is_left_out_and_still_mounted_by_name(tmp_path: Path) -> None:
    project = _copy_project(tmp_path)
    (project / ".env").write_bytes(DOTENV)
    spec = load_spec(project)
    objects = render_spec(spec, ClusterSettings(prometheus=PROMETHEUS), secret_data=False)
    assert "Secret" not in {doc["kind"] for doc in objects}
    assert "not-a-real-secret" not in to_yaml(objects) and base64.b64encode(DOTENV).decode() not in to_yaml(objects)
    full = render_spec(spec, ClusterSettings(prometheus=PROMETHEUS))
    assert [doc for doc in full if doc["kind"] != "Secret"] == objects


def test_a_new_deployment_starts_with_init_replicas_and_later_applies_leave_the_count_alone() -> None:
    spec = api(autoscaling={"min_replicas": 1, "max_replicas": 5, "init_replicas": 3})
    cluster = ClusterSettings(prometheus=PROMETHEUS)
    created = {d["kind"]: d for d in render_api(spec, BUNDLE, cluster, version="v1", initial=True)}
    assert created["Deployment"]["spec"]["replicas"] == 3
    assert "replicas" not in objects_of(spec)["Deployment"]["spec"]
    # Unset, init_replicas is min_replicas (0 for scale to zero); at a fixed size it is always that size.
    zero = api(autoscaling={"min_replicas": 0, "max_replicas": 4})
    assert render_api(zero, BUNDLE, cluster, version="v1", initial=True)[1]["spec"]["replicas"] == 0
    fixed = api(autoscaling={"min_replicas": 2, "max_replicas": 2})
    assert render_api(fixed, BUNDLE, cluster, version="v1", initial=True)[1]["spec"]["replicas"] == 2
    assert schema_problems(created["Deployment"]) == []


def _big_project(tmp_path: Path) -> Path:
    project = _copy_project(tmp_path)
    (project / "weights.bin").write_bytes(_incompressible(MAX_BUNDLE_BYTES + 1000))
    (project / ".env").write_bytes(DOTENV)
    return project


def test_code_over_the_limit_with_an_image_ships_the_spec_only_and_says_so(tmp_path: Path) -> None:
    project = _big_project(tmp_path)
    lines: list[str] = []
    objects = render_spec(load_spec(project), ClusterSettings(prometheus=PROMETHEUS, image=IMAGE),
                          progress=lines.append)
    configmap = next(doc for doc in objects if doc["kind"] == "ConfigMap")
    assert "binaryData" not in configmap and set(configmap["data"]) == {"spec.json"}
    assert configmap["immutable"] is True
    [line] = lines
    assert IMAGE in line and "berth build" in line and "not-a-real-secret" not in line
    deployment = next(doc for doc in objects if doc["kind"] == "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE
    assert [p for doc in objects for p in (_builtin_problems(doc) if doc["kind"] == "Secret"
                                          else schema_problems(doc))] == []
    # The same project without an image is still the clear error.
    with pytest.raises(BerthError) as caught:
        render_spec(load_spec(project), ClusterSettings(prometheus=PROMETHEUS))
    assert "berth build" in str(caught.value)


def test_the_dot_env_and_baked_image_render_matches_its_golden_file(tmp_path: Path) -> None:
    """Not in CASES: tests/kubernetes/support.py's checks know no Secret and want binaryData; the same
    checks run in the tests above with a Secret schema check of their own."""
    project = _big_project(tmp_path)
    objects = render_spec(load_spec(project), ClusterSettings(namespace="ml", prometheus=PROMETHEUS, image=IMAGE),
                          initial={"summarizer"})
    text = to_yaml(objects).replace(f"berth/runtime:{__version__}-", "berth/runtime:<berth version>-")
    golden = GOLDEN / "dotenv-baked-image.yaml"
    if os.environ.get("BERTH_REGEN_GOLDEN"):
        golden.write_text(text, encoding="utf-8")
    assert golden.is_file(), f"no golden file {golden}: run with BERTH_REGEN_GOLDEN=1"
    assert text == golden.read_text(encoding="utf-8"), f"differs from {golden} (BERTH_REGEN_GOLDEN=1 rewrites)"


def test_under_the_hpa_fallback_a_new_deployment_starts_with_at_least_one_pod() -> None:
    """The HPA leaves a Deployment at 0 replicas alone (scaling disabled), and cannot scale from zero."""
    spec = api(autoscaling={"min_replicas": 0, "max_replicas": 4})
    deployment = render_api(spec, BUNDLE, ClusterSettings(), keda=False, version="v1", initial=True)[1]
    assert deployment["spec"]["replicas"] == 1
