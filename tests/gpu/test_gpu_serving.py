"""On a machine with an NVIDIA GPU, with a real daemon: the PyTorch example answering from CUDA, two replicas
sharing one device, the ONNX predictor on the CUDA execution provider, and an out-of-GPU-memory failure said
as such. Skipped, with the reason, where NVML and nvidia-smi find no GPU (tests/gpu/conftest.py).

The PyTorch tests need torch with CUDA in berth's own environment (the example's requirements.txt is then
already satisfied and nothing is installed); the ONNX one needs onnxruntime-gpu. Each skips saying so.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import shutil
import textwrap
from pathlib import Path

import httpx
import psutil
import pytest

from tests.gpu.conftest import GPUS
from tests.process.harness import EXAMPLES, Berth, wait_for, write_project

pytestmark = pytest.mark.gpu

PYTORCH_SAMPLE = json.loads((EXAMPLES / "pytorch-classifier" / "sample.json").read_text())
ONNX_SAMPLE = json.loads((EXAMPLES / "onnx-classifier" / "sample.json").read_text())
DEPLOY_TIMEOUT = 240  # the first CUDA start on a machine loads and JIT-links kernels


def _first_device() -> int:
    """Where placement puts the first replica: best fit among equally free devices is the lowest index."""
    return min(GPUS)


def _torch_with_cuda() -> None:
    torch = pytest.importorskip("torch", reason="torch is not installed in berth's environment")
    if torch.version.cuda is None:
        pytest.skip(f"torch {torch.__version__} in berth's environment is a CPU build (torch.version.cuda is None)")


def _example_on_gpu(tmp_path: Path, example: str, gpu: float) -> Path:
    """A copy of the example whose berth.yaml asks for `gpu`."""
    project = Path(shutil.copytree(EXAMPLES / example, tmp_path / example,
                                   ignore=shutil.ignore_patterns("__pycache__")))
    spec = project / "berth.yaml"
    text = spec.read_text()
    if re.search(r"(?m)^\s+gpu:", text):
        text, count = re.subn(r"(?m)^(\s+gpu:)\s*[0-9.]+", rf"\1 {gpu:g}", text)
    else:
        text, count = re.subn(r"(?m)^(\s+)(cpu:.*)$", rf"\1\2\n\1gpu: {gpu:g}", text, count=1)
    assert count == 1, text
    spec.write_text(text)
    return project


def _visible_devices(pid: int) -> str | None:
    return psutil.Process(pid).environ().get("CUDA_VISIBLE_DEVICES")


def test_the_pytorch_example_on_a_whole_gpu_answers_from_cuda(berth: Berth, tmp_path: Path) -> None:
    _torch_with_cuda()
    project = _example_on_gpu(tmp_path, "pytorch-classifier", 1)
    berth.run("deploy", str(project), "--wait", timeout=DEPLOY_TIMEOUT)
    url = f"{berth.base_url}/pytorch-classifier"
    answer = httpx.post(url, json=PYTORCH_SAMPLE, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"label": 2, "confidence": 1.0, "device": "cuda"}

    (replica,) = berth.get("pytorch-classifier")["replicas"]
    device = _first_device()
    assert replica["gpus"] == [[device, 1.0]]
    assert _visible_devices(replica["pid"]) == str(device)

    # Concurrent requests are batched on the GPU; every one is answered from it.
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: httpx.post(url, json=PYTORCH_SAMPLE, timeout=60), range(32)))
    assert [a.status_code for a in answers] == [200] * 32
    assert all(a.json()["device"] == "cuda" and a.json()["label"] == 2 for a in answers)
    logs = wait_for(lambda: (out := berth.run("logs", "pytorch-classifier").stdout) and
                    "pytorch-classifier on cuda" in out and out, 10, "the replica saying it runs on cuda")
    assert "pytorch-classifier on cpu" not in logs


SHARE = """
import os

class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        return {"pid": os.getpid(), "visible": os.environ.get("CUDA_VISIBLE_DEVICES")}
"""


def _share_spec(name: str, replicas: int) -> str:
    return f"""
    - name: {name}
      kind: RealtimeAPI
      predictor:
        type: python
        path: predictor.py
      compute: {{cpu: 0.1, gpu: 0.5}}
      autoscaling:
        min_replicas: {replicas}
        max_replicas: {replicas}
    """


def test_two_half_gpu_replicas_share_one_device(berth: Berth, tmp_path: Path) -> None:
    project = write_project(tmp_path / "shared", _share_spec("shared", 2), SHARE)
    berth.run("deploy", str(project), "--wait", timeout=DEPLOY_TIMEOUT)
    replicas = berth.get("shared")["replicas"]
    device = _first_device()
    assert len(replicas) == 2 and all(r["status"] == "ready" for r in replicas)
    assert [r["gpus"] for r in replicas] == [[[device, 0.5]]] * 2  # best fit: the same device, not two
    assert [_visible_devices(r["pid"]) for r in replicas] == [str(device)] * 2
    answers = [httpx.post(f"{berth.base_url}/shared", json={}, timeout=10).json() for _ in range(10)]
    seen = {(answer["pid"], answer["visible"]) for answer in answers}
    assert {visible for _, visible in seen} == {str(device)}
    assert {pid for pid, _ in seen} <= {r["pid"] for r in replicas}

    if len(GPUS) == 1:  # the device is fully shared: a third half waits, saying why
        other = write_project(tmp_path / "third", _share_spec("third", 1), SHARE)
        berth.run("deploy", str(other), timeout=DEPLOY_TIMEOUT)
        pending = wait_for(lambda: (r := berth.get("third")["replicas"]) and r[0]["pending_reason"], 30,
                           "the third half-GPU replica to wait for a GPU")
        assert "needs 0.5 GPU, not free (1 GPU(s) found)" in pending


def test_the_onnx_predictor_runs_on_the_cuda_execution_provider(berth: Berth, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip(f"onnxruntime {ort.__version__} in berth's environment has no CUDAExecutionProvider "
                    "(install onnxruntime-gpu)")
    project = _example_on_gpu(tmp_path, "onnx-classifier", 1)
    berth.run("deploy", str(project), "--wait", timeout=DEPLOY_TIMEOUT)
    answer = httpx.post(f"{berth.base_url}/onnx-classifier", json=ONNX_SAMPLE, timeout=120)
    assert answer.status_code == 200, answer.text
    assert answer.json()["label"] == [2]
    (replica,) = berth.get("onnx-classifier")["replicas"]
    assert _visible_devices(replica["pid"]) == str(_first_device())
    logs = wait_for(lambda: (out := berth.run("logs", "onnx-classifier").stdout) and
                    "onnxruntime session on" in out and out, 10, "the session's providers in the log")
    assert "model.onnx: onnxruntime session on CUDAExecutionProvider, CPUExecutionProvider" in logs, logs


OUT_OF_MEMORY = """
import torch

class PythonPredictor:
    def __init__(self, config):
        self.too_much = 2 * torch.cuda.get_device_properties(0).total_memory
        if config.get("in_init"):
            self.hog = torch.empty(self.too_much, dtype=torch.uint8, device="cuda")

    def predict(self, payload):
        if payload.get("hog"):
            torch.empty(self.too_much, dtype=torch.uint8, device="cuda")
        return {"ok": True}
"""


def _oom_spec(name: str, in_init: bool) -> str:
    return f"""
    - name: {name}
      kind: RealtimeAPI
      predictor:
        type: python
        path: predictor.py
        config: {{in_init: {str(in_init).lower()}}}
      compute: {{cpu: 0.5, gpu: 0.5}}
    """


def test_out_of_gpu_memory_is_reported_as_such(berth: Berth, tmp_path: Path) -> None:
    _torch_with_cuda()
    device = _first_device()
    in_predict = write_project(tmp_path / "hog-predict", _oom_spec("hog-predict", False), OUT_OF_MEMORY)
    berth.run("deploy", str(in_predict), "--wait", timeout=DEPLOY_TIMEOUT)
    url = f"{berth.base_url}/hog-predict"
    failed = httpx.post(url, json={"hog": True}, timeout=60)
    assert failed.status_code == 500
    error = failed.json()["error"]
    assert error.startswith(f"the replica ran out of GPU memory in predict (0.5 of GPU {device}): try ")
    assert "a bigger GPU share" in error and "a whole GPU (compute.gpu: 1)" in error
    assert "CUDA out of memory" in error
    assert httpx.post(url, json={}, timeout=60).json() == {"ok": True}  # the replica goes on serving

    in_init = write_project(tmp_path / "hog-init", _oom_spec("hog-init", True), textwrap.dedent(OUT_OF_MEMORY))
    result = berth.run("deploy", str(in_init), "--wait", check=False, timeout=DEPLOY_TIMEOUT)
    assert result.returncode == 6, result.stdout + result.stderr
    assert "hog-init failed to start: the replica ran out of GPU memory in __init__" in result.stderr
    api = berth.get("hog-init")
    assert api["status"] == "error" and "ran out of GPU memory" in api["error"]
    assert "CUDA out of memory" in api["error"]
