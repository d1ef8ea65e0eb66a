"""CPU seconds of replica process trees (psutil) and GPU utilisation and memory per device (NVML).

Both run in a thread every few seconds, off the request path. `psutil.Process` objects are kept per
pid, so the CPU reading is one /proc read per process; children are listed again each time because a
replica's processes come and go with it. NVML is optional: without `pynvml` (or without a driver)
there are simply no GPU series.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import Any

import psutil

log = logging.getLogger("berth.control")


@dataclass(frozen=True)
class GPUSample:
    index: int
    utilization: float  # 0..1 over the driver's last sample period
    memory_used: int
    memory_total: int


class ResourceSampler:
    def __init__(self) -> None:
        self._processes: dict[int, psutil.Process] = {}
        self._nvml: Any = None
        self._nvml_tried = False

    def cpu_seconds(self, pids: dict[str, int]) -> dict[str, float]:
        """User plus system CPU seconds of each replica's process tree (replica id -> seconds)."""
        out: dict[str, float] = {}
        alive: set[int] = set()
        for replica_id, pid in pids.items():
            try:
                root = self._process(pid)
                tree = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            total = 0.0
            for process in tree:
                alive.add(process.pid)
                try:
                    times = self._process(process.pid).cpu_times()
                except psutil.Error:
                    continue
                total += times.user + times.system
            out[replica_id] = total
        for pid in [pid for pid in self._processes if pid not in alive]:
            del self._processes[pid]
        return out

    def _process(self, pid: int) -> psutil.Process:
        process = self._processes.get(pid)
        if process is None or not process.is_running():  # is_running also catches a reused pid
            process = self._processes[pid] = psutil.Process(pid)
        return process

    def gpus(self) -> list[GPUSample]:
        nvml = self._load_nvml()
        if nvml is None:
            return []
        samples = []
        try:
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                rates = nvml.nvmlDeviceGetUtilizationRates(handle)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                samples.append(GPUSample(index, rates.gpu / 100.0, int(memory.used), int(memory.total)))
        except Exception as exc:  # a driver hiccup costs this sample, not the collector
            log.debug("NVML sample failed: %s", exc)
        return samples

    def _load_nvml(self) -> Any:
        if self._nvml_tried:
            return self._nvml
        self._nvml_tried = True
        try:
            pynvml = importlib.import_module("pynvml")  # optional: only where NVIDIA's bindings are installed
            pynvml.nvmlInit()
        except Exception as exc:  # not installed, no driver, no device: no GPU series
            log.debug("no GPU metrics: %s", exc)
            return None
        self._nvml = pynvml
        return pynvml
