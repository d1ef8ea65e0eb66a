"""The labels berth puts on every object it renders, and the selector that finds an API's pods.

Selectors use only labels that never change for an API (its name), because a Deployment's selector is
immutable; the version label changes with every new predictor, compute or code and sits on the objects
and the pod template only.
"""

from __future__ import annotations

MANAGED_BY = ("app.kubernetes.io/managed-by", "berth")
API_LABEL = "berth.dev/api"
VERSION_LABEL = "berth.dev/version"
NAME_LABEL = "app.kubernetes.io/name"


def api_selector(name: str) -> dict[str, str]:
    """What selects an API's pods (Service, PodDisruptionBudget, Deployment selector): name + API labels."""
    return {NAME_LABEL: name, API_LABEL: name}


def object_labels(api_name: str, version: str) -> dict[str, str]:
    """The labels of every object of an API and of its pods, sorted by key."""
    labels = {**api_selector(api_name), MANAGED_BY[0]: MANAGED_BY[1], VERSION_LABEL: version}
    return dict(sorted(labels.items()))


def managed_selector(api_name: str) -> str:
    """A label selector string (for list/prune) naming berth's objects of one API."""
    return f"{MANAGED_BY[0]}={MANAGED_BY[1]},{API_LABEL}={api_name}"
