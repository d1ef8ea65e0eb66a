"""What the management API reports about an API: summary rows and the detailed view."""

from __future__ import annotations

from typing import Any

from berth.control.apis import DeployedAPI
from berth.control.fleet import FleetView
from berth.control.gateways import GatewayLinks
from berth.control.replica import Replica
from berth.control.store import Store
from berth.core.status import ReplicaState, ReplicaView, derive_status, making_room


def replica_view(replica: Replica, version: str) -> ReplicaView:
    return ReplicaView(state=replica.state, current=replica.version == version, failures=replica.failures,
                       unplaceable=replica.pending_reason is not None)


def summary(api: DeployedAPI, fleet: FleetView, gateways: GatewayLinks, gateway_url: str) -> dict[str, Any]:
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
        "metrics": gateways.stats(api.name).as_dict(),
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


def detail(api: DeployedAPI, fleet: FleetView, gateways: GatewayLinks, store: Store, gateway_url: str,
           now: float) -> dict[str, Any]:
    view = summary(api, fleet, gateways, gateway_url)
    view["spec"] = api.record.spec
    view["spec_file"] = api.record.spec_file
    view["replicas"] = [replica_row(r, now) for r in fleet.replicas_of(api.name)]
    view["versions"] = [{"version": v, "deployed_at": at} for v, at in store.versions(api.name)]
    view["events"] = [{"at": e.at, "kind": e.kind, "message": e.message} for e in store.events(api.name)]
    view["autoscaler"] = store.decisions(api.name, limit=10)
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
