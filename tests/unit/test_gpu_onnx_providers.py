"""The ONNX predictor's execution providers from compute.gpu, and its sessions without a usable CUDA."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from berth.config.schema import RealtimeAPI
from berth.runtime.gpu import visible_device_memory
from berth.runtime.onnx import CUDA, cuda_providers, session_factory

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "onnx-classifier"
GI = 1024**3
WITH_CUDA = ["TensorrtExecutionProvider", CUDA, "CPUExecutionProvider"]


@pytest.mark.parametrize(("gpu", "available", "memory", "processes", "expected"), [
    (0, WITH_CUDA, None, 1, ["CPUExecutionProvider"]),
    (1, ["CPUExecutionProvider"], None, 1, ["CPUExecutionProvider"]),  # onnxruntime, not onnxruntime-gpu
    (1, WITH_CUDA, 80 * GI, 1, [CUDA, "CPUExecutionProvider"]),  # a whole device: no cap
    (2, WITH_CUDA, None, 1, [CUDA, "CPUExecutionProvider"]),
    (0.5, WITH_CUDA, 80 * GI, 1, [(CUDA, {"device_id": "0", "arena_extend_strategy": "kSameAsRequested",
                                          "gpu_mem_limit": str(40 * GI)}), "CPUExecutionProvider"]),
    (0.5, WITH_CUDA, 80 * GI, 2, [(CUDA, {"device_id": "0", "arena_extend_strategy": "kSameAsRequested",
                                          "gpu_mem_limit": str(20 * GI)}), "CPUExecutionProvider"]),
    (0.25, WITH_CUDA, None, 1, [(CUDA, {"device_id": "0", "arena_extend_strategy": "kSameAsRequested"}),
                                "CPUExecutionProvider"]),  # the device's size unknown: no cap, still no doubling
])
def test_cuda_providers(gpu: float, available: list[str], memory: int | None, processes: int,
                        expected: list[object]) -> None:
    assert cuda_providers(gpu, available, memory, processes) == expected


def test_no_visible_device_no_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_device_memory() is None
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert visible_device_memory() is None


def test_a_device_nothing_can_measure_is_unknown(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    monkeypatch.setitem(__import__("sys").modules, "pynvml", None)  # no NVML bindings
    assert visible_device_memory() is None


def test_a_gpu_asked_of_an_onnxruntime_without_cuda_says_so_and_runs_on_the_cpu(
        caplog: pytest.LogCaptureFixture) -> None:
    ort = pytest.importorskip("onnxruntime")
    if CUDA in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: tests/gpu covers it")
    api = RealtimeAPI.model_validate({"name": "onnx", "kind": "RealtimeAPI", "compute": {"cpu": 1, "gpu": 0.5},
                                      "predictor": {"type": "onnx", "models": {"path": "model.onnx"}}})
    with caplog.at_level(logging.INFO, logger="berth.replica"):
        session = session_factory(api)(EXAMPLE / "model.onnx")
    assert session.get_providers() == ["CPUExecutionProvider"]
    messages = [r.getMessage() for r in caplog.records]
    assert any("compute.gpu is 0.5 but this onnxruntime has no CUDAExecutionProvider" in m
               and "install onnxruntime-gpu" in m for m in messages), messages
    assert "model.onnx: onnxruntime session on CPUExecutionProvider" in messages
