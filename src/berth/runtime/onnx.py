"""The ONNX predictor: `onnx_client` over onnxruntime sessions, JSON lists in, arrays out."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from berth.config.schema import RealtimeAPI
from berth.runtime.errors import InferenceRequestError, ModelInputError
from berth.runtime.gpu import visible_device_memory
from berth.runtime.models import ModelCache, ModelSource, model_file

log = logging.getLogger("berth.replica")
CUDA = "CUDAExecutionProvider"

# onnxruntime type -> (numpy dtype, Open Inference Protocol datatype)
TYPES: dict[str, tuple[Any, str]] = {
    "tensor(float)": (np.float32, "FP32"), "tensor(double)": (np.float64, "FP64"),
    "tensor(float16)": (np.float16, "FP16"), "tensor(int64)": (np.int64, "INT64"),
    "tensor(int32)": (np.int32, "INT32"), "tensor(int16)": (np.int16, "INT16"), "tensor(int8)": (np.int8, "INT8"),
    "tensor(uint64)": (np.uint64, "UINT64"), "tensor(uint32)": (np.uint32, "UINT32"),
    "tensor(uint16)": (np.uint16, "UINT16"), "tensor(uint8)": (np.uint8, "UINT8"), "tensor(bool)": (np.bool_, "BOOL"),
    "tensor(string)": (np.object_, "BYTES"),
}


def session_factory(api: RealtimeAPI) -> Any:
    """Sessions whose intra-op threads follow compute.cpu, on CUDA when a GPU is asked for and there.

    With `compute.gpu`, the replica sees only its own GPU(s) (CUDA_VISIBLE_DEVICES), so the CUDA
    execution provider's device 0 is the one it was given. A session that could not get onto the
    GPU (onnxruntime without CUDA, or the CUDA/cuDNN libraries missing: onnxruntime then falls back
    to the CPU quietly) is logged as a warning saying why, and each session's providers are logged.
    """
    import onnxruntime as ort

    threads = max(1, math.floor(api.compute.cpu / api.predictor.processes_per_replica))
    gpu, available = api.compute.gpu, ort.get_available_providers()
    on_cuda = gpu > 0 and CUDA in available
    providers = cuda_providers(gpu, available, visible_device_memory() if on_cuda and gpu < 1 else None,
                               api.predictor.processes_per_replica)
    if on_cuda:
        if isinstance(providers[0], tuple):
            log.info("compute.gpu %g: onnxruntime's CUDA arena per process: %s", gpu,
                     ", ".join(f"{k}={v}" for k, v in providers[0][1].items()))
        preload = getattr(ort, "preload_dlls", None)  # onnxruntime-gpu >= 1.21: CUDA/cuDNN from pip packages
        if preload is not None:
            try:
                preload()
            except Exception as exc:  # the session's own start says what is missing
                log.debug("onnxruntime.preload_dlls failed: %s", exc)
    elif gpu > 0:
        log.warning("compute.gpu is %g but this onnxruntime has no CUDAExecutionProvider (it has %s): models run "
                    "on the CPU; install onnxruntime-gpu instead of onnxruntime for the GPU",
                    api.compute.gpu, ", ".join(ort.get_available_providers()))

    def load(path: Path) -> Any:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        file = model_file(path)
        session = ort.InferenceSession(str(file), sess_options=options, providers=providers)
        used = session.get_providers()
        log.info("%s: onnxruntime session on %s", file.name, ", ".join(used))
        if on_cuda and CUDA not in used:
            log.warning("%s: compute.gpu is %g but the session could not use CUDA (the CUDA 12 or cuDNN 9 "
                        "libraries are missing or do not match: see onnxruntime's message above; "
                        "pip install 'onnxruntime-gpu[cuda,cudnn]' brings them): it runs on the CPU",
                        file.name, api.compute.gpu)
        return session

    return load


def cuda_providers(gpu: float, available: list[str], device_memory: int | None = None,
                   processes: int = 1) -> list[str | tuple[str, dict[str, str]]]:
    """The execution providers to ask for: CUDA first when the replica has a GPU and onnxruntime offers it.

    On a share of a device (`gpu` below 1), each process's CUDA memory arena is capped at its part of
    the share (of `device_memory`, the device's bytes, when known) and grows by what is asked, not by
    powers of two: a replica that outgrows its share then fails in its own process, saying it ran out
    of GPU memory, rather than starving the replica it shares the device with.
    """
    if gpu <= 0 or CUDA not in available:
        return ["CPUExecutionProvider"]
    if gpu >= 1:
        return [CUDA, "CPUExecutionProvider"]
    options = {"device_id": "0", "arena_extend_strategy": "kSameAsRequested"}
    if device_memory:
        options["gpu_mem_limit"] = str(int(device_memory * gpu / max(1, processes)))
    return [(CUDA, options), "CPUExecutionProvider"]


class OnnxClient:
    """What an ONNXPredictor gets as `onnx_client` (Cortex's contract, outputs by name)."""

    def __init__(self, cache: ModelCache) -> None:
        self.cache = cache

    def predict(self, model_input: Any, model_name: str | None = None,
                model_version: str = "latest") -> dict[str, np.ndarray]:
        _, _, session = self.cache.get(model_name, model_version)
        feed = to_feed(session.get_inputs(), model_input)
        names = [output.name for output in session.get_outputs()]
        return dict(zip(names, session.run(names, feed), strict=True))

    def infer(self, model_name: str, model_version: str, outputs: list[str],
              tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The inference protocol's call: tensors by input name in, the `outputs` asked for (all if none) out."""
        _, _, session = self.cache.get(model_name, model_version)
        expected = {i.name for i in session.get_inputs()}
        if set(tensors) != expected:
            raise InferenceRequestError(f"the model's inputs are {', '.join(sorted(expected))}; "
                                        f"got {', '.join(tensors)}")
        wanted = outputs or [o.name for o in session.get_outputs()]
        return dict(zip(wanted, session.run(wanted, tensors), strict=True))

    def metadata(self, model_name: str | None = None, model_version: str = "latest") -> dict[str, Any]:
        name, _, session = self.cache.get(model_name, model_version)
        source: ModelSource = self.cache.source(name)
        return {
            "name": name, "versions": source.versions(), "platform": "onnxruntime_onnx",
            "inputs": [_tensor(i) for i in session.get_inputs()],
            "outputs": [_tensor(o) for o in session.get_outputs()],
        }


def _tensor(arg: Any) -> dict[str, Any]:
    shape = [dim if isinstance(dim, int) else -1 for dim in arg.shape]
    return {"name": arg.name, "datatype": TYPES.get(arg.type, (None, arg.type))[1], "shape": shape}


def to_feed(inputs: list[Any], model_input: Any) -> dict[str, np.ndarray]:
    """JSON values to arrays of the model's dtypes; a lone example gets its batch dimension added."""
    expected = [i.name for i in inputs]
    if not isinstance(model_input, dict):
        if len(inputs) != 1:
            raise ModelInputError(f"the model takes {len(inputs)} inputs ({', '.join(expected)}): "
                                  "send an object with one key per input")
        model_input = {inputs[0].name: model_input}
    missing = [name for name in expected if name not in model_input]
    unknown = [name for name in model_input if name not in expected]
    if missing or unknown:
        raise ModelInputError(f"the model's inputs are {', '.join(expected)}; missing: {', '.join(missing) or '-'}, "
                              f"unknown: {', '.join(unknown) or '-'}")
    return {i.name: _array(i, model_input[i.name]) for i in inputs}


def _array(arg: Any, value: Any) -> np.ndarray:
    dtype = TYPES.get(arg.type, (None, ""))[0]
    if dtype is None:
        raise ModelInputError(f"input {arg.name!r} has type {arg.type}, which berth cannot build from JSON")
    try:
        array = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ModelInputError(f"input {arg.name!r} must be {arg.type}: {exc}") from exc
    if array.ndim + 1 == len(arg.shape):
        array = array[np.newaxis]
    if array.ndim != len(arg.shape) or any(isinstance(d, int) and d != n for d, n in zip(arg.shape, array.shape,
                                                                                         strict=True)):
        shape = ["?" if not isinstance(d, int) else d for d in arg.shape]
        raise ModelInputError(f"input {arg.name!r} must have shape {shape}; got {list(array.shape)}")
    return array


class DefaultONNXPredictor:
    """Without a predictor file: the request's inputs go to the model, its outputs come back as JSON.

    `?model=NAME&version=N` picks a model when the API serves several.
    """

    def __init__(self, onnx_client: OnnxClient) -> None:
        self.client = onnx_client

    def predict(self, payload: Any, query_params: dict[str, str]) -> dict[str, Any]:
        outputs = self.client.predict(payload, query_params.get("model"), query_params.get("version", "latest"))
        return {name: value.tolist() for name, value in outputs.items()}
