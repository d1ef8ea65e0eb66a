"""What the management API reports about an API: summary rows and the detailed view."""

from __future__ import annotations

from typing import Any

from berth.control import history
from berth.control.apis import DeployedAPI
from berth.control.fleet import FleetView
from berth.control.gateways import GatewayLinks
from berth.control.replica import Replica
from berth.control.store import Store
from berth.core.status import ReplicaState, ReplicaView, derive_status, making_room


def replica_view(replica: Replica, version: str) -> ReplicaView:
    return ReplicaView(state=replica.state, current=replica.version == version, failures=replica.failures,
                       unplaceable=replica.pending_reason is not None)


def summary(api: DeployedAPI, fleet: FleetView, gateways: GatewayLinks, gateway_url: str,
            window: tuple[Store, float, float] | None = None) -> dict[str, Any]:
    """`window` (store, since, until): request figures over that window from the history, instead of the
    ledger's all-time totals."""
    replicas = list(fleet.replicas_of(api.name))
    views = [replica_view(r, api.record.version) for r in replicas]
    status = derive_status(views, api.desired, rollout_failed=api.rollout_failed)
    error, traceback = _error(api, replicas, making_room(views))
    return {
        "name": api.name,
        "status": str(status.status),
        "up_to_date": status.up_to_date,
        "stale": status.stale,
        "requested": api.desired,
        "failed": status.failed,
        "version": api.record.version,
        "serving_version": api.target.id,
        "endpoint": api.spec.endpoint,
        "url": gateway_url + api.spec.endpoint,
        "created_at": api.record.created_at,
        "last_update": api.record.updated_at,
        "metrics": gateways.stats(api.name).as_dict() if window is None else windowed_metrics(api.name, *window),
        "in_flight": gateways.load(api.name),
        "error": error,
        "traceback": traceback,
        "deleting": api.deleting,
    }


def _error(api: DeployedAPI, replicas: list[Replica], room_coming: bool) -> tuple[str | None, str | None]:
    """The one reason to show: a failed rollout, else a failing replica, else missing compute."""
    failing = next((r for r in reversed(replicas) if r.version == api.record.version and r.last_error
                    and r.state is not ReplicaState.READY), None)
    if api.rollout_failed:
        return api.record.failed_reason, failing.last_traceback if failing else None
    if failing is not None:
        return failing.last_error, failing.last_traceback
    pending = next((r for r in replicas if r.pending_reason), None)
    if pending is not None and not room_coming:
        return f"compute unavailable: replica {pending.id} {pending.pending_reason}", None
    return None, None


def windowed_metrics(name: str, store: Store, since: float, until: float) -> dict[str, Any]:
    """The same keys as the ledger's totals (2XX, 4XX, 5XX, avg_request_seconds, requests), plus p50 / p99
    and the window, summed over the history buckets that overlap it."""
    return history.request_totals(store, name, since, until)


def monitoring(api: DeployedAPI, store: Store, now: float, since: float | None = None) -> dict[str, Any]:
    """The spec's `monitoring`, what the replicas predicted (over the window, else all retained history)
    and the drift of the last hour against the reference window."""
    if api.spec.monitoring is None:
        return {"monitoring": None, "predictions": None, "drift": None}
    return {"monitoring": api.spec.monitoring.model_dump(mode="json"),
            "predictions": history.prediction_summary(store, api.name, 0.0 if since is None else since, now),
            "drift": history.drift(store, api.name, now)}


def detail(api: DeployedAPI, fleet: FleetView, gateways: GatewayLinks, store: Store, gateway_url: str,
           now: float, since: float | None = None) -> dict[str, Any]:
    window = None if since is None else (store, since, now)
    view = summary(api, fleet, gateways, gateway_url, window)
    view["spec"] = api.record.spec
    view["spec_file"] = api.record.spec_file
    view["replicas"] = [replica_row(r, now) for r in fleet.replicas_of(api.name)]
    view["versions"] = [{"version": v, "deployed_at": at} for v, at in store.versions(api.name)]
    view["events"] = [{"at": e.at, "kind": e.kind, "message": e.message} for e in store.events(api.name)]
    view["autoscaler"] = store.decisions(api.name, limit=10)
    view.update(monitoring(api, store, now, since))
    return view


def replica_row(replica: Replica, now: float) -> dict[str, Any]:
    placement = replica.placement
    return {
        "id": replica.id,
        "version": replica.version,
        "status": str(replica.state),
        "pid": None if replica.gone else replica.pid,
        "processes": replica.processes,
        "restarts": replica.restarts,
        "age": now - replica.created_at,
        "last_error": replica.last_error,
        "pending_reason": replica.pending_reason,
        "cpu": placement.cpu if placement else None,
        "mem": placement.mem if placement else None,
        "gpus": [list(g) for g in placement.gpus] if placement else [],
        "rss": replica.rss,
    }
