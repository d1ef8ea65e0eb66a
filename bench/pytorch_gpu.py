"""The PyTorch example on the GPU vs the same model on the CPU: batch throughput, and cold start.

    python bench/pytorch_gpu.py [--duration 2] [--threads 1] [--no-serve]

In-process: the example's PythonPredictor (examples/pytorch-classifier) built with `device: cpu` and
`device: cuda`, its batched `predict` called in a loop on batches of 1, 8 and 32 held-out digits for
`--duration` seconds each (after a warm-up); predictions per second and the median milliseconds per
batch call (JSON-ready answers included, so the GPU's results are copied back as they are in serving).
The CPU runs on `--threads` threads (1: what the example's `compute.cpu: 1` gives a replica).

Served (unless --no-serve): the example deployed through a throwaway berth, once with `compute.gpu: 0`
and once with `gpu: 1`: cold start from `berth deploy` to the first 200 (the daemon already running;
the replica's start, torch's import, the model to the device and the first answer), then closed-loop
clients (1 and 32; wrk when installed, else Python threads, which on a small machine measure
themselves as much as berth) posting the sample for `--duration` seconds, requests per second; with
32 clients the requests are gathered by server-side batching.

Without an NVIDIA GPU (NVML / nvidia-smi find none), or with a CPU-only torch, the GPU half prints
why it was skipped and the CPU half still runs; the exit status is 0.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from common import REPO, BerthInstance, wrk

EXAMPLE = REPO / "examples" / "pytorch-classifier"
BATCH_SIZES = (1, 8, 32)
CLIENTS = (1, 32)


def gpu_unavailable() -> str | None:
    """Why the GPU half cannot run here, or None when it can."""
    from berth.control.capacity import detect_gpus

    if not detect_gpus():
        return "no GPU: skipped (NVML/nvidia-smi found none)"
    import torch

    if torch.version.cuda is None:
        return f"no GPU: skipped (a GPU is here, but torch {torch.__version__} is a CPU build)"
    if not torch.cuda.is_available():
        return "no GPU: skipped (a GPU is here, but torch.cuda.is_available() is False: check the driver)"
    return None


def held_out_images(count: int) -> list[dict[str, list[int]]]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    _, test_x, _, _ = train_test_split(digits.data, digits.target, test_size=0.2, random_state=0)
    rows = [{"image": [int(v) for v in row]} for row in test_x]
    return [rows[i % len(rows)] for i in range(count)]


def load_predictor(device: str) -> Any:
    sys.path.insert(0, str(EXAMPLE))
    from predictor import PythonPredictor  # examples/pytorch-classifier/predictor.py

    return PythonPredictor({"model_path": "model.pt", "device": device})


def in_process(device: str, duration: float) -> dict[int, tuple[float, float]]:
    """{batch size: (predictions/s, median ms per batch call)}."""
    predictor = load_predictor(device)
    results = {}
    for size in BATCH_SIZES:
        batch = held_out_images(size)
        for _ in range(50):  # warm-up: CUDA kernels, the allocator, the CPU's caches
            predictor.predict(batch)
        times = []
        deadline = time.perf_counter() + duration
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            answers = predictor.predict(batch)
            times.append(time.perf_counter() - started)
        assert all(answer["device"] == device for answer in answers), answers[:1]
        results[size] = (size * len(times) / sum(times), statistics.median(times) * 1000)
    return results


def project_with_gpu(folder: Path, gpu: float) -> Path:
    project = Path(shutil.copytree(EXAMPLE, folder / f"pytorch-classifier-gpu{gpu:g}",
                                   ignore=shutil.ignore_patterns("__pycache__")))
    spec = project / "berth.yaml"
    text, count = re.subn(r"(?m)^(\s+gpu:)\s*[0-9.]+", rf"\1 {gpu:g}", spec.read_text())
    assert count == 1, "examples/pytorch-classifier/berth.yaml has no compute.gpu line"
    spec.write_text(text)
    return project


def closed_loop(url: str, body: bytes, clients: int, duration: float) -> tuple[float, int]:
    """(requests/s answered 200, non-200 count) from `clients` threads posting `body` for `duration` s."""
    counts = [0] * clients
    errors = [0] * clients
    # Made before the clock starts: an httpx client loads its CA bundle, tens of milliseconds each.
    https = [httpx.Client(timeout=30, headers={"content-type": "application/json"}) for _ in range(clients)]
    start = threading.Barrier(clients + 1)
    stop = [0.0]

    def client(index: int) -> None:
        http = https[index]
        start.wait()
        while time.perf_counter() < stop[0]:
            if http.post(url, content=body).status_code == 200:
                counts[index] += 1
            else:
                errors[index] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    stop[0] = started + duration
    start.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    for http in https:
        http.close()
    return sum(counts) / elapsed, sum(errors)


def load(url: str, body: bytes, clients: int, duration: float) -> tuple[float, int]:
    """wrk when it is installed (the other benchmarks' client), else Python threads."""
    if shutil.which("wrk") is None:
        return closed_loop(url, body, clients, duration)
    result = wrk(url, clients, duration, body.decode().strip())
    return result.rps, result.errors


def served(gpu: float, duration: float) -> tuple[float, dict[int, tuple[float, int]]]:
    """(seconds from deploy to the first 200, {clients: (req/s, errors)}) for the example with `gpu`."""
    body = (EXAMPLE / "sample.json").read_bytes()
    instance = BerthInstance()
    folder = Path(tempfile.mkdtemp(prefix="bench-torch-"))
    try:
        instance.cli("cluster", "up")  # the daemon's own start is not the API's cold start
        project = project_with_gpu(folder, gpu)
        url = instance.url("/pytorch-classifier")
        started = time.perf_counter()
        instance.cli("deploy", str(project))
        cold = _first_200(url, body, started, timeout=300)
        answer = httpx.post(url, content=body, headers={"content-type": "application/json"}).json()
        assert answer["device"] == ("cuda" if gpu else "cpu"), answer
        loads = {clients: load(url, body, clients, duration) for clients in CLIENTS}
        return cold, loads
    finally:
        instance.close()
        shutil.rmtree(folder, ignore_errors=True)


def _first_200(url: str, body: bytes, started: float, timeout: float) -> float:
    while time.perf_counter() - started < timeout:
        try:
            if httpx.post(url, content=body, headers={"content-type": "application/json"},
                          timeout=30).status_code == 200:
                return time.perf_counter() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"{url} did not answer 200 within {timeout}s of the deploy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the CPU in-process runs")
    parser.add_argument("--no-serve", action="store_true", help="in-process only: no berth deploys")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    skipped = gpu_unavailable()
    devices = ["cpu"] if skipped else ["cpu", "cuda"]
    print(f"torch {torch.__version__}; CPU runs on {args.threads} thread(s)"
          + ("" if skipped else f"; GPU {torch.cuda.get_device_name(0)}"))
    if skipped:
        print(skipped)

    measured = {device: in_process(device, args.duration) for device in devices}
    print("in-process predict (the example's batched predict, answers included):")
    for size in BATCH_SIZES:
        cpu_rate, cpu_ms = measured["cpu"][size]
        line = f"  batch {size:>2}: cpu {cpu_rate:>9.0f} predictions/s ({cpu_ms:.3f} ms per call)"
        if "cuda" in measured:
            gpu_rate, gpu_ms = measured["cuda"][size]
            line += f"; cuda {gpu_rate:>9.0f} predictions/s ({gpu_ms:.3f} ms per call), {gpu_rate / cpu_rate:.2f}x"
        print(line)

    if args.no_serve:
        return
    for gpu in ([0.0] if skipped else [0.0, 1.0]):
        cold, loads = served(gpu, args.duration)
        where = "cuda (compute.gpu: 1)" if gpu else "cpu (compute.gpu: 0)"
        rates = ", ".join(f"{clients} client(s) {rate:.0f} req/s" + (f" ({errors} errors)" if errors else "")
                          for clients, (rate, errors) in loads.items())
        print(f"served on {where}: deploy -> first 200 in {cold:.2f} s; {rates}")


if __name__ == "__main__":
    main()
