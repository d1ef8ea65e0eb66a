"""What the dashboard reads: a read-only view of the daemon's state, history and prediction monitoring.

The daemon's observe app implements this Protocol (control/observe.py); the dashboard's routes only
call it, so the page can be developed and tested against a fake source without a daemon. Every method
is called from the event loop thread of the observe app and must return quickly (a store read, no
network round trip), and every value returned must be JSON-serialisable.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class DashboardSource(Protocol):
    def overview(self) -> list[dict[str, Any]]:
        """One row per API, as the management API's summary (control/views.summary): name, status,
        requested, up_to_date, stale, failed, version, endpoint, url, metrics {2XX, 4XX, 5XX,
        avg_request_seconds, requests}, in_flight, error, deleting."""
        ...

    def api(self, name: str) -> dict[str, Any]:
        """An API's detailed view (control/views.detail): the summary plus replicas, versions, events
        ({at, kind, message}) and autoscaler (recent decisions). Raises berth.errors.NotFound when the
        API does not exist."""
        ...

    def series(self, name: str, since: float, until: float) -> list[dict[str, Any]]:
        """Request history buckets in [since, until), oldest first: history.HistoryRow as a dict
        (start, seconds, code_2xx, code_4xx, code_5xx, count, seconds_sum, replicas_ready,
        replicas_desired, in_flight) with p50 and p99 (seconds or None) instead of the histogram."""
        ...

    def predictions(self, name: str) -> dict[str, Any] | None:
        """Prediction monitoring of the API, None without `monitoring` in its spec:
        {"model_type", "key", "summary": history.prediction_summary(...) over the last hour,
         "drift": history.drift(...) or None}."""
        ...

    def metrics_text(self) -> bytes:
        """The Prometheus exposition served at /_berth/metrics (text format)."""
        ...
