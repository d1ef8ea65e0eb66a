"""Tests that need an NVIDIA GPU: every test here is skipped, with the reason, on a machine without one.

They run a real daemon (the `berth` fixture of tests/process) on whatever GPUs NVML or nvidia-smi finds,
the same way berth finds them.
"""

from __future__ import annotations

import pytest

from berth.control.capacity import detect_gpus
from tests.process.conftest import berth  # noqa: F401  (the fixture, for the tests here)

NO_GPU = "no NVIDIA GPU on this machine (NVML/nvidia-smi found none)"
GPUS = detect_gpus()


@pytest.fixture(autouse=True)
def _needs_a_gpu() -> None:
    if not GPUS:
        pytest.skip(NO_GPU)
