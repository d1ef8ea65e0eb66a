"""A replica's own limit on predict requests in flight, for where no berth gateway stands in front of it.

Locally the gateway holds `max_replica_concurrency` for every replica of an API; on Kubernetes the
cluster's proxy knows nothing of it, so the replica turns requests beyond it away itself, in the
gateway's words: 503, `x-berth-reason: max-replica-concurrency`, a JSON error. The limit reaches the
replica process as `BERTH_MAX_CONCURRENCY` (set by `berth.runtime.bootstrap` from the spec).
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.types import Send

from berth.runtime.errors import ReplicaError, error_response

VARIABLE = "BERTH_MAX_CONCURRENCY"
REASON = b"max-replica-concurrency"  # the gateway's x-berth-reason for an API at its limit


class ReplicaBusy(ReplicaError):
    status = 503


def limit_from(environ: Mapping[str, str]) -> int | None:
    """The limit the process was started with; None (no limit of its own) when unset, empty or not positive."""
    text = environ.get(VARIABLE, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise SystemExit(f"{VARIABLE}={text!r}: not a whole number") from None
    return value if value > 0 else None


def busy_message(api: str, limit: int) -> str:
    return (f"API {api!r} is at max_replica_concurrency on this replica ({limit} requests in flight); "
            "retry later or raise max_replica_concurrency")


async def send_busy(send: Send, api: str, limit: int, request_id: str) -> int:
    """The 503 for a request over the limit; its body is not read (the server discards it)."""
    status, body = error_response(ReplicaBusy(busy_message(api, limit)), request_id)
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", request_id.encode("latin-1")),
            (b"x-berth-reason", REASON),
        ],
    })
    await send({"type": "http.response.body", "body": body})
    return status
