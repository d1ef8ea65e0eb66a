"""Cortex's request-based autoscaler (reference §3.2), as one pure function of its inputs.

Every tick (10 s) the average in-flight request count over `window` becomes a recommendation,
which tolerances, per-step factor clamps, min/max and stabilization then temper. Nothing here
keeps state: the caller passes in the samples, the recommendation history and `now`, and stores
what comes back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from berth.config.schema import Autoscaling

TICK_SECONDS = 10.0


@dataclass(frozen=True)
class Recommendation:
    at: float
    replicas: int


@dataclass(frozen=True)
class Decision:
    """A tick's outcome with every intermediate value, as Cortex logged them."""

    at: float
    avg_in_flight: float
    target_replica_concurrency: float
    raw_recommendation: float
    current_replicas: int
    downscale_factor_floor: int
    upscale_factor_ceil: int
    recommendation: int
    downscale_stabilization_floor: int | None
    upscale_stabilization_ceil: int | None
    request: int

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def average_in_flight(samples: Sequence[tuple[float, float]], window: float, now: float) -> float | None:
    """Mean of the (time, in-flight) samples within the last `window` seconds; None without any."""
    recent = [value for at, value in samples if now - window < at <= now]
    return sum(recent) / len(recent) if recent else None


def recommend(avg_in_flight: float, current: int, spec: Autoscaling) -> tuple[float, int, int, int]:
    """Steps 1-4: raw recommendation, factor floor and ceiling, and the clamped recommendation."""
    target = spec.target_replica_concurrency or 1.0
    raw = avg_in_flight / target
    recommendation = math.ceil(raw)
    if current * (1 - spec.downscale_tolerance) < raw < current:
        recommendation = current
    if current < raw < current * (1 + spec.upscale_tolerance):
        recommendation = current
    floor = min(current - 1, math.ceil(current * spec.max_downscale_factor))
    ceil = max(current + 1, math.ceil(current * spec.max_upscale_factor))
    recommendation = min(max(recommendation, floor), ceil)
    recommendation = min(max(recommendation, spec.min_replicas), spec.max_replicas)
    return raw, floor, ceil, recommendation


def stabilize(recommendation: int, current: int, history: Sequence[Recommendation], spec: Autoscaling,
              now: float, started_at: float) -> tuple[int, int | None, int | None]:
    """Step 6 (v0.42's form): never below the highest recent recommendation, never above the lowest.

    `history` includes this tick's recommendation. Returns the request and the bounds that applied.
    """
    request = recommendation
    floor: int | None = None
    ceil: int | None = None
    if request < current:
        if now - started_at < spec.downscale_stabilization_period:
            floor = current
        else:
            recent = [r.replicas for r in history if now - r.at <= spec.downscale_stabilization_period]
            floor = min(max(recent, default=request), current)
        request = max(request, floor)
    elif request > current:
        if now - started_at < spec.upscale_stabilization_period:
            ceil = current
        else:
            recent = [r.replicas for r in history if now - r.at <= spec.upscale_stabilization_period]
            ceil = max(min(recent, default=request), current)
        request = min(request, ceil)
    return request, floor, ceil


def decide(samples: Sequence[tuple[float, float]], history: Sequence[Recommendation], current: int,
           spec: Autoscaling, now: float, started_at: float) -> tuple[Decision | None, list[Recommendation]]:
    """One tick. Returns the decision (None when there are no samples yet) and the history to keep."""
    avg = average_in_flight(samples, spec.window, now)
    if avg is None:
        return None, list(history)
    raw, floor, ceil, recommendation = recommend(avg, current, spec)
    keep_for = max(spec.downscale_stabilization_period, spec.upscale_stabilization_period)
    kept = [r for r in history if now - r.at <= keep_for] + [Recommendation(now, recommendation)]
    request, down_floor, up_ceil = stabilize(recommendation, current, kept, spec, now, started_at)
    decision = Decision(
        at=now, avg_in_flight=avg, target_replica_concurrency=spec.target_replica_concurrency or 1.0,
        raw_recommendation=raw, current_replicas=current, downscale_factor_floor=floor,
        upscale_factor_ceil=ceil, recommendation=recommendation, downscale_stabilization_floor=down_floor,
        upscale_stabilization_ceil=up_ceil, request=request,
    )
    return decision, kept
