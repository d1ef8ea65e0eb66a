"""The load balancer's choice: least in-flight, ties broken round-robin."""

from __future__ import annotations

from collections.abc import Sequence


def least_in_flight(in_flight: Sequence[int], start: int) -> int:
    """Index of the endpoint with the fewest requests in flight.

    Among equals, the first found from `start` onwards wins, so a caller that advances
    `start` after each pick spreads an idle pool evenly instead of piling onto index 0.
    Returns -1 for an empty pool.
    """
    count = len(in_flight)
    if count == 0:
        return -1
    best = start % count
    best_load = in_flight[best]
    for step in range(1, count):
        index = (start + step) % count
        load = in_flight[index]
        if load < best_load:
            best, best_load = index, load
    return best


def admits(api_in_flight: int, ready_replicas: int, max_replica_concurrency: int) -> bool:
    """Whether one more request fits under `max_replica_concurrency` per ready replica."""
    return api_in_flight < ready_replicas * max_replica_concurrency
