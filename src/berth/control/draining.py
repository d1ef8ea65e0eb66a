"""Stopping replicas without losing a request: out of the routing table, drained, SIGTERM, then SIGKILL."""

from __future__ import annotations

from collections.abc import Callable

from berth.control.fleet import Fleet, Timeouts
from berth.control.gateways import GatewayLinks
from berth.control.replica import Replica
from berth.control.routing import Routing
from berth.control.store import Store
from berth.control.supervisor import Supervisor
from berth.core.lifecycle import Phase

UNREADY_STOP = 2.0  # seconds a replica that never became ready gets between SIGTERM and SIGKILL


class Draining:
    def __init__(self, fleet: Fleet, supervisor: Supervisor, store: Store, routing: Routing, gateways: GatewayLinks,
                 timeouts: Timeouts) -> None:
        self.fleet = fleet
        self.supervisor = supervisor
        self.store = store
        self.routing = routing
        self.gateways = gateways
        self.timeouts = timeouts
        # Asked before SIGTERM, until it answers True: the metrics collector's last poll of the replica.
        self.before_stop: Callable[[Replica], bool] = lambda replica: True

    def request_stop(self, replica: Replica, now: float) -> None:
        if replica.phase in (Phase.DRAINING, Phase.STOPPING):
            return
        if replica.gone or replica.pid is None:
            self.forget(replica)  # nothing runs: nothing to drain
            return
        replica.stop_requested(now)

    def progress(self, now: float) -> None:
        """Draining replicas get SIGTERM once no gateway holds a request for them (or the drain timed
        out); signalled ones get SIGKILL when they outstay the stop timeout."""
        for replica in list(self.fleet.replicas.values()):
            if replica.phase is Phase.DRAINING and replica.stop_requested_at is not None:
                held = self.gateways.in_flight_of(replica.id, since=self.routing.left_at.get(replica.id, 0))
                if ((held == 0 or now - replica.stop_requested_at >= self.timeouts.drain)
                        and self.before_stop(replica)):
                    self.supervisor.terminate(replica, now)
            elif (replica.phase is Phase.STOPPING and replica.signalled_at is not None
                  and now - replica.signalled_at >= self._stop_timeout(replica)):
                self.supervisor.kill(replica)

    def _stop_timeout(self, replica: Replica) -> float:
        """A replica that never became ready has no request to finish, and an `__init__` still running on
        the event loop cannot even see SIGTERM: it gets SIGKILL after a short grace, not the full one."""
        return self.timeouts.stop if replica.ready_at is not None else min(self.timeouts.stop, UNREADY_STOP)

    def forget(self, replica: Replica) -> None:
        self.fleet.replicas.pop(replica.id, None)
        self.routing.forget(replica.id)
        self.store.delete_replica(replica.id)
        self.supervisor.cleanup(replica)
