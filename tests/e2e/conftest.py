"""Against a real Kubernetes cluster: runs when KUBECONFIG is set, and is skipped, saying why, otherwise.

What the cluster needs:
* the runtime image, loadable by its nodes: BERTH_E2E_IMAGE (default `berth/runtime:<version>-cpu`; on kind,
  `docker build -f deploy/Dockerfile -t berth/runtime:0.1.0-cpu . && kind load docker-image ...`);
* `kubectl` on PATH (port-forward, and a load pod inside the cluster);
* for scaling to zero: KEDA, and a Prometheus that scrapes the pods, at BERTH_E2E_PROMETHEUS.

Each test run gets its own namespace, deleted at the end, and its own BERTH_HOME.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from berth import __version__

REPO = Path(__file__).resolve().parents[2]


def _why_skipped() -> str | None:
    if not os.environ.get("KUBECONFIG"):
        return "no real cluster: KUBECONFIG is not set (these tests deploy to the cluster it names)"
    if shutil.which("kubectl") is None:
        return "kubectl is not on PATH (the tests port-forward and run a load pod with it)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _why_skipped()
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.e2e)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


def pytest_report_header(config: pytest.Config) -> str | None:
    reason = _why_skipped()
    return f"tests/e2e: skipped: {reason}" if reason else "tests/e2e: against the cluster KUBECONFIG names"


@dataclass
class Cluster:
    namespace: str
    home: Path
    image: str
    prometheus: str | None

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "BERTH_HOME": str(self.home), "PYTHONUNBUFFERED": "1"}

    def berth(self, *args: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([sys.executable, "-m", "berth", *args], env=self.env, capture_output=True,
                                text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"berth {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def kubectl(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["kubectl", "-n", self.namespace, *args], capture_output=True, text=True,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
        return result


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    namespace = f"berth-e2e-{secrets.token_hex(3)}"
    home = Path(tempfile.mkdtemp(prefix="berth-e2e-"))
    found = Cluster(namespace, home, os.environ.get("BERTH_E2E_IMAGE", f"berth/runtime:{__version__}-cpu"),
                    os.environ.get("BERTH_E2E_PROMETHEUS"))
    subprocess.run(["kubectl", "create", "namespace", namespace], check=True, capture_output=True, timeout=60)
    try:
        configure = ["env", "configure", "e2e", "--provider", "kubernetes", "--namespace", namespace,
                     "--image", found.image]
        if found.prometheus:
            configure += ["--prometheus", found.prometheus]
        found.berth(*configure)
        yield found
    finally:
        subprocess.run(["kubectl", "delete", "namespace", namespace, "--wait=false"], capture_output=True,
                       timeout=120)
        shutil.rmtree(home, ignore_errors=True)
