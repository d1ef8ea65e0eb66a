"""A replica out of GPU memory, told apart from any other failure and said plainly, with what to do.

Frameworks report it in their own words: PyTorch raises `torch.OutOfMemoryError` ("CUDA out of
memory. Tried to allocate ..."), CuPy its own `OutOfMemoryError`, ONNX Runtime a `RuntimeException`
whose message holds "CUDA failure 2: out of memory" or its arena's "Failed to allocate memory for
requested buffer", TensorFlow "OOM when allocating tensor ... device:GPU:0", the CUDA driver
`CUDA_ERROR_OUT_OF_MEMORY`, the runtime `cudaErrorMemoryAllocation`. Pure functions of the exception
(and of whether the replica was given a GPU): no GPU, no framework import needed to test them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator

from berth.runtime.errors import BatchError, GpuOutOfMemory, ReplicaError

# Say a GPU ran out of memory whatever else the message holds.
_GPU_OOM = re.compile(
    r"cuda out of memory|cuda_error_out_of_memory|cudaerrormemoryallocation|cuda error: out of memory"
    r"|cuda failure 2\b|cublas_status_alloc_failed|cudnn_status_alloc_failed"
    r"|cufft_alloc_failed|cusolver_status_alloc_failed|cusparse_status_alloc_failed",
    re.IGNORECASE)
# An allocation failure: a GPU one when the message names the GPU, or (the ONNX Runtime arena, XLA's
# RESOURCE_EXHAUSTED) when it names no device at all and the replica runs on a GPU.
_ALLOCATION = re.compile(
    r"out of memory|oom when allocating|failed to allocate memory", re.IGNORECASE)
_NAMES_GPU = re.compile(r"cuda|\bgpu\b|device:gpu|cudnn|cublas", re.IGNORECASE)
_NAMES_CPU = re.compile(r"\bcpu\b|device:cpu|host memory|pinned", re.IGNORECASE)
_OOM_TYPES = {"OutOfMemoryError"}  # torch.OutOfMemoryError (torch.cuda.OutOfMemoryError), cupy's
_GPU_MODULES = ("torch", "cupy", "numba.cuda", "pycuda")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and those it was raised from or during (a BatchError's cause, a wrapper's)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def is_gpu_out_of_memory(exc: BaseException, on_gpu: bool = False) -> bool:
    """Whether `exc` (or an exception it came from) says a GPU ran out of memory.

    `on_gpu`: the replica was given a GPU, so an allocation failure that names no device (ONNX
    Runtime's arena, XLA's RESOURCE_EXHAUSTED) is taken for the GPU's. Python's own MemoryError is
    host memory, never the GPU's.
    """
    for error in _chain(exc):
        kind = type(error)
        if kind.__name__ in _OOM_TYPES and kind.__module__.startswith(_GPU_MODULES):
            return True
        if isinstance(error, MemoryError):
            continue
        message = str(error)
        if _GPU_OOM.search(message):
            return True
        if _ALLOCATION.search(message) and (
                _NAMES_GPU.search(message) or (on_gpu and not _NAMES_CPU.search(message))):
            return True
    return False


def gpu_share(gpu: float, visible: str | None) -> str:
    """Which GPU share the replica had, for the message: "0.5 of GPU 0", "GPUs 0,1", "no GPU"."""
    devices = [d for d in (visible or "").split(",") if d.strip()]
    if gpu <= 0 or not devices:
        return "no GPU (compute.gpu is 0)" if gpu <= 0 else f"compute.gpu {gpu:g}"
    if gpu < 1:
        return f"{gpu:g} of GPU {devices[0]}"
    return f"GPU {devices[0]}" if len(devices) == 1 else f"GPUs {','.join(devices)}"


def out_of_memory_advice(gpu: float, batching: bool) -> str:
    """What to do about it, one sentence, the likeliest fix first."""
    steps = []
    if batching:
        steps.append("a smaller predictor.server_side_batching.max_batch_size")
    else:
        steps.append("smaller batches (fewer items per request)")
    if 0 < gpu < 1:
        steps.append(f"a bigger GPU share (compute.gpu above {gpu:g}, fewer replicas sharing the device)")
        steps.append("a whole GPU (compute.gpu: 1)")
    else:
        steps.append("a smaller model (or half precision)")
        steps.append("a GPU with more memory")
    steps.append("fewer processes_per_replica (each process holds its own copy of the model)")
    return "try " + ", ".join(steps[:-1]) + ", or " + steps[-1]


def describe_gpu_out_of_memory(exc: BaseException, gpu: float, *, batching: bool = False,
                               visible: str | None = None, during: str = "predict") -> str:
    """The failure message: the plain statement first, then what to do, then the framework's own words."""
    if visible is None:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    # A batch's error already names the predictor's exception and the batch's size.
    original = str(exc) if isinstance(exc, ReplicaError) else f"{type(exc).__name__}: {exc}".strip()
    first_line = original.splitlines()[0] if original else type(exc).__name__
    if len(first_line) > 300:
        first_line = first_line[:297] + "..."
    return (f"the replica ran out of GPU memory in {during} ({gpu_share(gpu, visible)}): "
            f"{out_of_memory_advice(gpu, batching)} ({first_line})")


def gpu_out_of_memory_error(exc: BaseException, gpu: float, batching: bool = False) -> GpuOutOfMemory | None:
    """The error a request gets instead of `exc` when `exc` is a GPU out-of-memory, else None."""
    if isinstance(exc, GpuOutOfMemory) or not is_gpu_out_of_memory(exc, on_gpu=gpu > 0):
        return None
    error = GpuOutOfMemory(describe_gpu_out_of_memory(exc, gpu, batching=batching))
    # The predictor's own exception, for the traceback in the API's log.
    error.__cause__ = exc.__cause__ if isinstance(exc, BatchError) and exc.__cause__ is not None else exc
    return error


def init_failure_message(exc: BaseException, gpu: float, batching: bool = False) -> str:
    """What the control plane records for a failed `__init__`: the exception, or the GPU running out."""
    if is_gpu_out_of_memory(exc, on_gpu=gpu > 0):
        return describe_gpu_out_of_memory(exc, gpu, batching=batching, during="__init__")
    return f"{type(exc).__name__}: {exc}"


def visible_device_memory() -> int | None:
    """Bytes of memory of the first GPU this process may use (CUDA_VISIBLE_DEVICES names it as berth
    placed it: an NVML index, or a UUID), from NVML or nvidia-smi; None when unknown."""
    visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    if not visible:
        return None
    device = visible[0]
    try:
        import pynvml  # type: ignore[import-not-found]  # optional: nvidia-ml-py
    except ImportError:
        pynvml = None
    if pynvml is not None:
        try:
            pynvml.nvmlInit()
            try:
                handle = (pynvml.nvmlDeviceGetHandleByIndex(int(device)) if device.isdigit()
                          else pynvml.nvmlDeviceGetHandleByUUID(device))
                return int(pynvml.nvmlDeviceGetMemoryInfo(handle).total)
            finally:
                pynvml.nvmlShutdown()
        except Exception:  # NVMLError, or an odd device name: nvidia-smi may still know
            pass
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "-i", device, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        return int(float(out.split()[0]) * 1024 * 1024)  # MiB
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None
