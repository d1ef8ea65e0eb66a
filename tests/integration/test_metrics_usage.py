"""Resource sampling: CPU seconds of a real process tree (psutil), GPUs through NVML's Python bindings.

No GPU here, so NVML is a stand-in module with pynvml's names; the real bindings run the same calls.
"""

from __future__ import annotations

import subprocess
import sys
import time
import types
from typing import Any

import pytest

from berth.control.usage import ResourceSampler


def test_cpu_seconds_cover_the_whole_process_tree() -> None:
    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\ntime.sleep(30)"
    parent = subprocess.Popen([sys.executable, "-c",
                               f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {burn!r}]); "
                               "time.sleep(30)"])
    sampler = ResourceSampler()
    try:
        deadline = time.monotonic() + 20
        while sampler.cpu_seconds({"r1": parent.pid}).get("r1", 0.0) < 0.3:
            assert time.monotonic() < deadline, "the child's CPU time was never counted"
            time.sleep(0.1)
    finally:
        for child in __import__("psutil").Process(parent.pid).children(recursive=True):
            child.kill()
        parent.kill()
        parent.wait()
    assert sampler.cpu_seconds({"gone": parent.pid}) == {}  # a process that exited has no series


class FakeNVML(types.ModuleType):
    def __init__(self) -> None:
        super().__init__("pynvml")

    def nvmlInit(self) -> None:  # NVML's names, as pynvml spells them
        pass

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        return types.SimpleNamespace(gpu=40 + handle, memory=0)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        return types.SimpleNamespace(used=2**30 * (handle + 1), total=2**34, free=0)


def test_gpus_through_nvml_when_the_bindings_are_there(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", FakeNVML())
    samples = ResourceSampler().gpus()
    assert [(g.index, g.utilization, g.memory_used, g.memory_total) for g in samples] == [
        (0, 0.40, 2**30, 2**34), (1, 0.41, 2**31, 2**34)]


def test_no_gpu_series_without_the_bindings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    assert ResourceSampler().gpus() == []
