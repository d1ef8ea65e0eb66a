"""Prediction drift: how far a recent distribution moved from a reference one.

The population stability index compares two distributions over the same buckets (class labels, or a
histogram's bucket counts): PSI = sum((a - e) * ln(a / e)) over the buckets' proportions a (recent) and
e (reference). It is 0 for identical distributions, positive otherwise, and symmetric in its two
arguments. An empty bucket would make the logarithm infinite, so proportions are floored at EPSILON.
The usual reading: below 0.1 stable, below 0.25 shifting, drifted beyond.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

EPSILON = 1e-4  # the proportion an empty bucket counts as
STABLE_BELOW = 0.1
SHIFTING_BELOW = 0.25
MIN_SAMPLES = 100  # fewer predictions than this in either window: too few to judge
# Two samples of one distribution over k buckets differ by chance: their PSI is about
# (k - 1) * (1/n1 + 1/n2). Asking for NOISE_FACTOR * (k - 1) predictions on each side keeps that below
# 0.05, half the "stable" threshold, so ten classes at 100 predictions do not read as "shifting".
NOISE_FACTOR = 40

STABLE = "stable"
SHIFTING = "shifting"
DRIFTED = "drifted"
NOT_ENOUGH_DATA = "not enough data"


@dataclass(frozen=True)
class Assessment:
    psi: float | None  # None when there were too few samples to compute a meaningful one
    verdict: str
    reference_samples: int
    recent_samples: int
    required: int = MIN_SAMPLES  # the samples each side needs for a verdict


def required_samples(reference: Sequence[float], recent: Sequence[float], min_samples: int = MIN_SAMPLES) -> int:
    """Predictions each side needs: MIN_SAMPLES, more with many buckets in use (see NOISE_FACTOR)."""
    used = sum(1 for a, b in zip(reference, recent, strict=True) if a or b)
    return max(min_samples, NOISE_FACTOR * (used - 1))


def psi(reference: Sequence[float], recent: Sequence[float], epsilon: float = EPSILON) -> float:
    """The population stability index of two bucket-count vectors of the same length."""
    if len(reference) != len(recent):
        raise ValueError(f"distributions over different buckets: {len(reference)} and {len(recent)} buckets")
    expected, actual = _proportions(reference, epsilon), _proportions(recent, epsilon)
    return math.fsum((a - e) * math.log(a / e) for e, a in zip(expected, actual, strict=True))


def psi_of_counts(reference: Mapping[str, float], recent: Mapping[str, float],
                  epsilon: float = EPSILON) -> float:
    """PSI of two label -> count mappings; a label missing on one side counts as an empty bucket."""
    labels = sorted(set(reference) | set(recent))
    return psi([reference.get(label, 0) for label in labels], [recent.get(label, 0) for label in labels], epsilon)


def verdict(value: float) -> str:
    if value < STABLE_BELOW:
        return STABLE
    if value < SHIFTING_BELOW:
        return SHIFTING
    return DRIFTED


def assess(reference: Sequence[float], recent: Sequence[float], min_samples: int = MIN_SAMPLES) -> Assessment:
    """PSI and its verdict, or NOT_ENOUGH_DATA when either side has fewer samples than `required_samples`."""
    total_reference, total_recent = int(sum(reference)), int(sum(recent))
    required = required_samples(reference, recent, min_samples)
    if total_reference < required or total_recent < required:
        return Assessment(None, NOT_ENOUGH_DATA, total_reference, total_recent, required)
    value = psi(reference, recent)
    return Assessment(value, verdict(value), total_reference, total_recent, required)


def assess_counts(reference: Mapping[str, float], recent: Mapping[str, float],
                  min_samples: int = MIN_SAMPLES) -> Assessment:
    labels = sorted(set(reference) | set(recent))
    return assess([reference.get(label, 0) for label in labels], [recent.get(label, 0) for label in labels],
                  min_samples)


def _proportions(counts: Sequence[float], epsilon: float) -> list[float]:
    total = math.fsum(counts)
    if total <= 0:
        return [1.0 / len(counts)] * len(counts) if counts else []
    return [max(count / total, epsilon) for count in counts]
