"""The iris example on a real cluster: deploy, predict, a rolling update under load, scale to zero and back, delete.

Skipped without KUBECONFIG (see conftest.py for what the cluster needs). The load runs inside the cluster,
in a pod of the runtime image, against the API's Service: a port-forward pins one pod, which a rolling
update replaces, so load through it would measure kubectl, not berth.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.e2e.conftest import REPO, Cluster

SAMPLE = json.loads((REPO / "examples" / "iris-classifier" / "sample.json").read_text())
# Sends requests to a URL for SECONDS, then prints {"ok": n, "failed": n, "errors": [...]} as its last line.
LOAD = """
import json, sys, time, httpx
url, seconds, body, headers = sys.argv[1], float(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])
ok = failed = 0
errors = []
deadline = time.monotonic() + seconds
with httpx.Client(timeout=30) as client:
    while time.monotonic() < deadline:
        try:
            answer = client.post(url, json=body, headers=headers)
            if answer.status_code == 200:
                ok += 1
            else:
                failed += 1
                errors.append(f"{answer.status_code} {answer.text[:200]}")
        except httpx.HTTPError as exc:
            failed += 1
            errors.append(repr(exc))
print(json.dumps({"ok": ok, "failed": failed, "errors": errors[:20]}))
"""


@pytest.fixture(scope="module")
def iris(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = tmp_path_factory.mktemp("iris") / "iris-classifier"
    shutil.copytree(REPO / "examples" / "iris-classifier", project)
    return project


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_forward(cluster: Cluster, service: str) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(["kubectl", "-n", cluster.namespace, "port-forward", f"svc/{service}", f"{port}:80"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if process.poll() is not None:
                    raise AssertionError(f"kubectl port-forward exited: {process.stderr.read().decode()}") from None
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def run_load(cluster: Cluster, name: str, url: str, seconds: float, headers: dict[str, str] | None = None) -> None:
    cluster.kubectl("run", name, f"--image={cluster.image}", "--restart=Never", "--command", "--",
                    "python", "-c", LOAD, url, str(seconds), json.dumps(SAMPLE), json.dumps(headers or {}))


def load_result(cluster: Cluster, name: str, timeout: float) -> dict[str, object]:
    cluster.kubectl("wait", f"pod/{name}", "--for=jsonpath={.status.phase}=Succeeded", f"--timeout={timeout:.0f}s",
                    timeout=timeout + 30)
    logs = cluster.kubectl("logs", name).stdout.strip().splitlines()
    return json.loads(logs[-1])  # type: ignore[no-any-return]


def test_deploy_predict_update_under_load_and_delete(cluster: Cluster, iris: Path) -> None:
    deployed = cluster.berth("deploy", str(iris), "-e", "e2e", "--wait", "--timeout", "600")
    assert "iris-classifier is live" in deployed.stdout
    for url in port_forward(cluster, "iris-classifier"):
        answer = httpx.post(f"{url}/", json=SAMPLE, timeout=30)
        assert answer.status_code == 200 and answer.json() == "setosa", answer.text

    service = f"http://iris-classifier.{cluster.namespace}.svc.cluster.local/"
    run_load(cluster, "load-update", service, seconds=90)
    spec = yaml.safe_load((iris / "berth.yaml").read_text())
    spec[0]["predictor"]["config"]["max_iter"] = 2000  # a new version: every pod is replaced
    spec[0]["autoscaling"] = {"min_replicas": 2, "max_replicas": 2}
    (iris / "berth.yaml").write_text(yaml.safe_dump(spec))
    updated = cluster.berth("deploy", str(iris), "-e", "e2e", "--wait", "--timeout", "600")
    assert "updating iris-classifier" in updated.stdout
    result = load_result(cluster, "load-update", timeout=300)
    assert result["failed"] == 0 and int(str(result["ok"])) > 0, result

    got = json.loads(cluster.berth("get", "iris-classifier", "-e", "e2e", "-o", "json").stdout)
    assert got["status"] == "live" and got["up_to_date"] == 2

    cluster.berth("delete", "iris-classifier", "-e", "e2e")
    left = cluster.kubectl("get", "deployments,services,configmaps,poddisruptionbudgets", "-l",
                           "berth.dev/api=iris-classifier", "-o", "name").stdout.strip()
    assert left == ""


def test_scale_to_zero_and_back(cluster: Cluster, iris: Path) -> None:
    if not cluster.prometheus:
        pytest.skip("scaling to zero needs KEDA and Prometheus: set BERTH_E2E_PROMETHEUS")
    spec = yaml.safe_load((iris / "berth.yaml").read_text())
    spec[0]["name"] = "iris-zero"
    spec[0]["autoscaling"] = {"min_replicas": 0, "max_replicas": 2, "downscale_stabilization_period": "30s",
                              "window": "30s"}
    (iris / "berth.yaml").write_text(yaml.safe_dump(spec))
    cluster.berth("deploy", str(iris), "-e", "e2e", "--timeout", "600")
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        replicas = cluster.kubectl("get", "deployment/iris-zero", "-o", "jsonpath={.spec.replicas}").stdout.strip()
        if replicas == "0":
            break
        time.sleep(5)
    else:
        raise AssertionError("iris-zero did not scale to zero within 15 minutes")
    # The activator holds the request, scales the Deployment to one, and forwards it once a pod is ready.
    # (What the HTTPRoute's filter adds: the activator serves every scale-to-zero API of the namespace.)
    run_load(cluster, "load-wake", f"http://berth-activator.{cluster.namespace}.svc.cluster.local/", seconds=1,
             headers={"x-berth-api": "iris-zero"})
    result = load_result(cluster, "load-wake", timeout=600)
    assert result["failed"] == 0, result
    replicas = cluster.kubectl("get", "deployment/iris-zero", "-o", "jsonpath={.spec.replicas}").stdout.strip()
    assert replicas not in ("", "0")
    cluster.berth("delete", "iris-zero", "-e", "e2e")
