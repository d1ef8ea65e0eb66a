"""What this machine offers replicas: cores, memory, GPUs (through NVML, or nvidia-smi, when present)."""

from __future__ import annotations

import os
import shutil
import subprocess

import psutil

from berth.core.placement import Capacity


def detect_capacity() -> Capacity:
    cpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (psutil.cpu_count() or 1)
    return Capacity(cpu=float(cpu), mem=float(psutil.virtual_memory().total), gpus=detect_gpus())


def detect_gpus() -> tuple[int, ...]:
    try:
        import pynvml  # type: ignore[import-not-found]  # optional: nvidia-ml-py
    except ImportError:
        return _gpus_from_nvidia_smi()
    try:
        pynvml.nvmlInit()
        try:
            return tuple(range(pynvml.nvmlDeviceGetCount()))
        finally:
            pynvml.nvmlShutdown()
    except pynvml.NVMLError:
        return _gpus_from_nvidia_smi()


def _gpus_from_nvidia_smi() -> tuple[int, ...]:
    if shutil.which("nvidia-smi") is None:
        return ()
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(int(line) for line in out.split() if line.strip().isdigit())
