"""What the management API reports about an API: summary rows and the detailed view."""

from __future__ import annotations

from typing import Any

from berth.control.reconciler import DeployedAPI, Reconciler
from berth.control.store import Store
from berth.control.supervisor import Replica
from berth.core.status import ReplicaState, ReplicaView, derive_status


def replica_view(replica: Replica, version: str) -> ReplicaView:
    return ReplicaView(state=replica.state, current=replica.version == version, failures=replica.failures)


def summary(api: DeployedAPI, reconciler: Reconciler, gateway_url: str) -> dict[str, Any]:
    replicas = reconciler.replicas_of(api.name)
    requested = api.spec.init_replicas
    status = derive_status([replica_view(r, api.record.version) for r in replicas], requested)
    route = reconciler.routes.by_api.get(api.name)
    stats = route.stats.as_dict() if route else {}
    error = next((r for r in reversed(replicas)
                  if r.version == api.record.version and r.last_error and r.state is not ReplicaState.READY),
                 None)
    return {
        "name": api.name,
        "status": str(status.status),
        "up_to_date": status.up_to_date,
        "stale": status.stale,
        "requested": requested,
        "failed": status.failed,
        "version": api.record.version,
        "endpoint": api.spec.endpoint,
        "url": gateway_url + api.spec.endpoint,
        "created_at": api.record.created_at,
        "last_update": api.record.updated_at,
        "metrics": stats,
        "in_flight": route.in_flight if route else 0,
        "error": error.last_error if error else None,
        "traceback": error.last_traceback if error else None,
        "deleting": api.deleting,
    }


def detail(api: DeployedAPI, reconciler: Reconciler, store: Store, gateway_url: str, now: float) -> dict[str, Any]:
    view = summary(api, reconciler, gateway_url)
    view["spec"] = api.record.spec
    view["spec_file"] = api.record.spec_file
    view["replicas"] = [replica_row(r, now) for r in reconciler.replicas_of(api.name)]
    view["versions"] = [{"version": v, "deployed_at": at} for v, at in store.versions(api.name)]
    view["events"] = [{"at": e.at, "kind": e.kind, "message": e.message} for e in store.events(api.name)]
    return view


def replica_row(replica: Replica, now: float) -> dict[str, Any]:
    return {
        "id": replica.id,
        "version": replica.version,
        "status": str(replica.state),
        "pid": replica.pid if replica.exit_code is None else None,
        "processes": replica.processes,
        "restarts": replica.restarts,
        "age": now - replica.created_at,
        "last_error": replica.last_error,
    }
