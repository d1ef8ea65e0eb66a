"""Telling a GPU out of memory apart from any other failure, from the exception alone (no GPU needed)."""

from __future__ import annotations

import pytest

from berth.runtime.errors import BatchError, GpuOutOfMemory, error_response
from berth.runtime.gpu import (
    describe_gpu_out_of_memory,
    gpu_out_of_memory_error,
    gpu_share,
    init_failure_message,
    is_gpu_out_of_memory,
    out_of_memory_advice,
)


def _foreign(module: str, name: str, base: type[Exception] = RuntimeError) -> type[Exception]:
    """An exception class as a framework defines it (torch.OutOfMemoryError, cupy's), without the framework."""
    return type(name, (base,), {"__module__": module})


TorchOOM = _foreign("torch", "OutOfMemoryError")
TorchCudaOOM = _foreign("torch.cuda", "OutOfMemoryError")
CupyOOM = _foreign("cupy.cuda.memory", "OutOfMemoryError")
OrtRuntimeException = _foreign("onnxruntime.capi.onnxruntime_pybind11_state", "RuntimeException")
OrtFail = _foreign("onnxruntime.capi.onnxruntime_pybind11_state", "Fail")
TfResourceExhausted = _foreign("tensorflow.python.framework.errors_impl", "ResourceExhaustedError")
XlaRuntimeError = _foreign("jaxlib.xla_extension", "XlaRuntimeError")
SomeOOM = _foreign("mylib", "OutOfMemoryError")

TORCH_MESSAGE = ("CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of 79.19 GiB of which "
                 "3.12 GiB is free. Including non-PyTorch memory, this process has 76.06 GiB memory in use.")
ORT_CUDA = ("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running MatMul node. "
            "Name:'MatMul_0' Status Message: CUDA failure 2: out of memory ; GPU=0 ; hostname=box ; "
            "expr=cudaMalloc((void**)&p, size);")
ORT_ARENA = ("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running Gemm node. "
             "Status Message: /onnxruntime_src/onnxruntime/core/framework/bfc_arena.cc:376 void* "
             "onnxruntime::BFCArena::AllocateRawInternal(size_t, bool) Failed to allocate memory for requested "
             "buffer of size 1073741824")

# (exception, replica on a GPU, a GPU out of memory?)
CASES: list[tuple[str, BaseException, bool, bool]] = [
    ("torch.OutOfMemoryError", TorchOOM(TORCH_MESSAGE), True, True),
    ("torch.cuda.OutOfMemoryError, whatever its message", TorchCudaOOM("boom"), False, True),
    ("cupy's OutOfMemoryError", CupyOOM("Out of memory allocating 1,024 bytes (allocated so far: 0 bytes)."),
     True, True),
    ("torch's older RuntimeError", RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be "
                                                "asynchronously reported"), True, True),
    ("the CUDA driver's code", RuntimeError("cuMemAlloc failed: CUDA_ERROR_OUT_OF_MEMORY"), False, True),
    ("the CUDA runtime's code", RuntimeError("cudaErrorMemoryAllocation: out of memory"), True, True),
    ("cuBLAS", RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
     True, True),
    ("cuDNN", RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"), True, True),
    ("onnxruntime's CUDA failure", OrtRuntimeException(ORT_CUDA), True, True),
    ("onnxruntime's CUDA failure, said on a replica without a GPU share", OrtFail(ORT_CUDA), False, True),
    ("onnxruntime's arena on a GPU replica", OrtRuntimeException(ORT_ARENA), True, True),
    ("onnxruntime's arena without a GPU: host memory", OrtRuntimeException(ORT_ARENA), False, False),
    ("TensorFlow on the GPU", TfResourceExhausted("OOM when allocating tensor with shape[8192,8192] and type float "
                                                  "on /job:localhost/replica:0/task:0/device:GPU:0"), False, True),
    ("TensorFlow on the CPU", TfResourceExhausted("OOM when allocating tensor with shape[8192,8192] and type float "
                                                  "on /job:localhost/replica:0/task:0/device:CPU:0"), True, False),
    ("XLA on a GPU replica", XlaRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate "
                                             "17179869184 bytes."), True, True),
    ("pinned host memory on a GPU replica", RuntimeError("out of memory allocating pinned host memory"), True, False),
    ("Python's MemoryError is the host's", MemoryError("CUDA out of memory"), True, False),
    ("a MemoryError on a GPU replica", MemoryError(), True, False),
    ("another library's OutOfMemoryError names no GPU", SomeOOM("arena full"), False, False),
    ("an unrelated error", ValueError("expected 64 pixels"), True, False),
    ("a CUDA error that is not memory", RuntimeError("CUDA error: device-side assert triggered"), True, False),
    ("an illegal address", RuntimeError("CUDA error: an illegal memory access was encountered"), True, False),
    ("a word in passing", RuntimeError("the gpu is busy"), True, False),
    ("a gRPC RESOURCE_EXHAUSTED is no memory", RuntimeError("RESOURCE_EXHAUSTED: Received message larger than max"),
     True, False),
]


@pytest.mark.parametrize(("exc", "on_gpu", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_gpu_out_of_memory_is_told_from_its_exception(exc: BaseException, on_gpu: bool, expected: bool) -> None:
    assert is_gpu_out_of_memory(exc, on_gpu=on_gpu) is expected


def _raised_from(outer: BaseException, inner: BaseException, cause: bool) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as exc:
            if cause:
                raise outer from exc
            raise outer  # noqa: B904 (implicitly chained: __context__)
    except BaseException as caught:
        return caught


@pytest.mark.parametrize("cause", [True, False], ids=["raised from", "raised during"])
def test_a_wrapped_gpu_out_of_memory_is_found_down_the_chain(cause: bool) -> None:
    wrapped = _raised_from(RuntimeError("model failed to load"), TorchOOM(TORCH_MESSAGE), cause)
    assert is_gpu_out_of_memory(wrapped)
    assert not is_gpu_out_of_memory(_raised_from(RuntimeError("model failed"), KeyError("weights"), cause))


def test_a_cycle_in_the_chain_ends() -> None:
    first, second = RuntimeError("a"), RuntimeError("b")
    first.__context__, second.__context__ = second, first
    assert not is_gpu_out_of_memory(first, on_gpu=True)


def test_real_torch_out_of_memory_error_when_torch_is_installed() -> None:
    torch = pytest.importorskip("torch")
    assert is_gpu_out_of_memory(torch.OutOfMemoryError(TORCH_MESSAGE))
    assert is_gpu_out_of_memory(torch.cuda.OutOfMemoryError("x"))


@pytest.mark.parametrize(("gpu", "visible", "expected"), [
    (0.5, "0", "0.5 of GPU 0"),
    (0.25, "3", "0.25 of GPU 3"),
    (1, "1", "GPU 1"),
    (2, "0,1", "GPUs 0,1"),
    (0, "", "no GPU (compute.gpu is 0)"),
    (1, None, "compute.gpu 1"),
])
def test_the_share_is_named(gpu: float, visible: str | None, expected: str) -> None:
    assert gpu_share(gpu, visible) == expected


def test_the_advice_says_what_to_do_likeliest_first() -> None:
    fractional = out_of_memory_advice(0.5, batching=True)
    assert fractional.startswith("try a smaller predictor.server_side_batching.max_batch_size, a bigger GPU share")
    assert "a whole GPU (compute.gpu: 1)" in fractional
    whole = out_of_memory_advice(1, batching=False)
    assert whole.startswith("try smaller batches") and "whole GPU" not in whole and "more memory" in whole


def test_the_message_says_plainly_what_happened_and_what_to_do() -> None:
    message = describe_gpu_out_of_memory(TorchOOM(TORCH_MESSAGE), 0.5, batching=True, visible="0", during="__init__")
    assert message.startswith("the replica ran out of GPU memory in __init__ (0.5 of GPU 0): try a smaller ")
    assert "a bigger GPU share" in message and "a whole GPU (compute.gpu: 1)" in message
    assert message.endswith(f"(OutOfMemoryError: {TORCH_MESSAGE})")
    long = describe_gpu_out_of_memory(RuntimeError("CUDA out of memory " + "x" * 1000 + "\nsecond line"), 1,
                                      visible="0")
    assert "second line" not in long and "..." in long and len(long) < 700


def test_init_failure_message() -> None:
    assert init_failure_message(FileNotFoundError("model.pkl is missing"), 1) == \
        "FileNotFoundError: model.pkl is missing"
    message = init_failure_message(OrtRuntimeException(ORT_ARENA), 1)
    assert message.startswith("the replica ran out of GPU memory in __init__")
    assert "RuntimeException: [ONNXRuntimeError]" in message


def test_a_request_gets_an_exposed_error_that_says_so() -> None:
    oom = TorchOOM(TORCH_MESSAGE)
    error = gpu_out_of_memory_error(oom, 1)
    assert isinstance(error, GpuOutOfMemory) and error.__cause__ is oom
    status, body = error_response(error, "req-1")
    assert status == 500 and b"the replica ran out of GPU memory in predict" in body and b"req-1" in body
    assert gpu_out_of_memory_error(ValueError("bad input"), 1) is None
    assert gpu_out_of_memory_error(error, 1) is None  # already said


def test_a_batch_that_ran_out_says_its_size_and_keeps_the_cause() -> None:
    oom = TorchOOM(TORCH_MESSAGE)
    batch = BatchError(f"predict raised OutOfMemoryError for a batch of 32: {oom}")
    batch.__cause__ = oom
    error = gpu_out_of_memory_error(batch, 0.5, batching=True)
    assert error is not None and error.__cause__ is oom
    assert "a batch of 32" in str(error) and "max_batch_size" in str(error)
