"""Replica placement against the machine's capacity: cpu, memory, and (fractional) GPUs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from berth.config.units import format_bytes

EPSILON = 1e-9


@dataclass(frozen=True)
class Capacity:
    cpu: float
    mem: float
    gpus: tuple[int, ...] = ()  # device indices; each counts as 1.0


@dataclass(frozen=True)
class Request:
    cpu: float
    mem: float
    gpu: float


@dataclass(frozen=True)
class Placement:
    cpu: float
    mem: float
    gpus: tuple[tuple[int, float], ...] = ()  # (device index, share of it)

    def as_dict(self) -> dict[str, object]:
        return {"cpu": self.cpu, "mem": self.mem, "gpus": [list(g) for g in self.gpus]}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Placement:
        gpus = tuple((int(i), float(share)) for i, share in data.get("gpus", []))  # type: ignore[attr-defined]
        return cls(cpu=float(data["cpu"]), mem=float(data["mem"]), gpus=gpus)  # type: ignore[arg-type]


def free_gpu_shares(capacity: Capacity, used: Sequence[Placement]) -> dict[int, float]:
    free = {index: 1.0 for index in capacity.gpus}
    for placement in used:
        for index, share in placement.gpus:
            if index in free:
                free[index] -= share
    return free


def place(request: Request, capacity: Capacity, used: Sequence[Placement]) -> Placement | str:
    """Where the request fits, or a sentence saying what is short."""
    cpu_free = capacity.cpu - sum(p.cpu for p in used)
    mem_free = capacity.mem - sum(p.mem for p in used)
    short = []
    if request.cpu > cpu_free + EPSILON:
        short.append(f"needs {request.cpu:g} cpu, {max(cpu_free, 0):.3g} of {capacity.cpu:g} free")
    if request.mem > mem_free + EPSILON:
        short.append(f"needs {format_bytes(request.mem)} memory, {format_bytes(max(mem_free, 0))} free")
    gpus = _gpus(request.gpu, free_gpu_shares(capacity, used))
    if gpus is None:
        found = f"{len(capacity.gpus)} GPU(s) found" if capacity.gpus else "no GPU found"
        short.append(f"needs {request.gpu:g} GPU, not free ({found})")
    if short:
        return "; ".join(short)
    return Placement(cpu=request.cpu, mem=request.mem, gpus=gpus or ())


def _gpus(amount: float, free: dict[int, float]) -> tuple[tuple[int, float], ...] | None:
    if amount <= 0:
        return ()
    if amount <= 1:
        # Best fit: the fullest GPU that still has room, so whole GPUs stay free for whole requests.
        fits = [(share, index) for index, share in free.items() if share + EPSILON >= amount]
        if not fits:
            return None
        _, index = min(fits)
        return ((index, amount),)
    whole = [index for index, share in sorted(free.items()) if share >= 1 - EPSILON]
    count = round(amount)
    return tuple((index, 1.0) for index in whole[:count]) if len(whole) >= count else None


def never_fits(request: Request, capacity: Capacity) -> list[str]:
    """What no amount of waiting makes room for: more than the whole machine has, one sentence a field.

    Placement waits for what others hold; this refuses, at deploy, what exceeds the machine itself.
    """
    problems = []
    if request.cpu > capacity.cpu + EPSILON:
        problems.append(f"compute.cpu {request.cpu:g} does not fit this machine: it has {capacity.cpu:g} "
                        "cores (the CPUs this daemon may run on); lower compute.cpu")
    if request.mem > capacity.mem + EPSILON:
        problems.append(f"compute.mem {format_bytes(request.mem)} does not fit this machine: it has "
                        f"{format_bytes(capacity.mem)} of memory; lower compute.mem")
    if request.gpu > 0 and not capacity.gpus:
        problems.append(f"compute.gpu {request.gpu:g} does not fit this machine: it has no GPU (none found "
                        "through NVML or nvidia-smi); remove compute.gpu, or deploy where a GPU is")
    elif request.gpu > len(capacity.gpus):
        problems.append(f"compute.gpu {request.gpu:g} does not fit this machine: it has {len(capacity.gpus)} "
                        "GPU(s); lower compute.gpu")
    return problems
