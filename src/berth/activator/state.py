"""The activator's decisions, as pure functions over a small state per API (no I/O, no clock of its own).

For an API with `min_replicas: 0` the HTTPRoute always sends traffic through the activator. For each request
it looks at what it last read of the API's Deployment (an `Observation`, at most `CACHE_SECONDS` old):

* a ready pod: forward at once;
* no ready pod: hold the request, up to `scale_from_zero_queue` held per API (beyond: 503
  `scale-from-zero-queue-full`), for up to `scale_from_zero_timeout` from its arrival (then 503
  `scale-from-zero-timeout`), the status and reason words of the local gateway;
* while it holds requests, one waker per API polls the Deployment and scales it to 1 through the scale
  subresource, but only while `spec.replicas` is 0 (never against an autoscaler that already scaled it up).
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from berth.config.schema import Autoscaling, Networking

# How long an answer about a Deployment's readiness is reused.
CACHE_SECONDS = 1.0
# How often a waker reads the Deployment of an API it holds requests for.
POLL_SECONDS = 0.5

# The local gateway's words (README "Scale to zero"), in the x-berth-reason header.
QUEUE_FULL = "scale-from-zero-queue-full"
TIMED_OUT = "scale-from-zero-timeout"
# The local gateway answers both with 503; so does the activator.
QUEUE_FULL_STATUS = 503
TIMED_OUT_STATUS = 503
UNKNOWN_API = "unknown-api"
NO_API_HEADER = "no-api-header"
REPLICA_UNREACHABLE = "replica-unreachable"
UPSTREAM_TIMEOUT = "upstream-timeout"
CLUSTER_UNAVAILABLE = "control-plane-unavailable"

BODY_TOO_LARGE = "body-too-large"
CLIENT_GONE = "client-gone"

API_HEADER = "x-berth-api"
# The local gateway's max_body_size: a request body beyond it is answered 413 body-too-large.
MAX_BODY_SIZE = 64 * 2**20
# What an API is named on a cluster: a DNS-1035 label (render.py refuses any other name). Any other value of
# x-berth-api is unknown at once, without a read of the API server.
_API_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def valid_api_name(name: str) -> bool:
    return len(name) <= 63 and _API_NAME.fullmatch(name) is not None


def _default(model: type[Any], name: str) -> Any:
    return model.model_fields[name].default


@dataclass(frozen=True)
class Limits:
    """What one API allows the activator: read from its spec.json, the schema's defaults otherwise."""

    queue: int = _default(Autoscaling, "scale_from_zero_queue")
    timeout: float = _default(Autoscaling, "scale_from_zero_timeout")
    request_timeout: float = _default(Networking, "timeout")  # networking.timeout, for the forwarded request

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | None) -> Limits:
        """The limits in an API's spec.json (a RealtimeAPI dumped as JSON); a missing or malformed value
        keeps its default (the runtime refuses a bad spec; the activator still answers)."""
        if not isinstance(spec, Mapping):
            return cls()
        scaling = _mapping(spec.get("autoscaling"))
        networking = _mapping(spec.get("networking"))
        default = cls()
        queue = scaling.get("scale_from_zero_queue")
        timeout = scaling.get("scale_from_zero_timeout")
        request = networking.get("timeout")
        return cls(
            queue=queue if isinstance(queue, int) and not isinstance(queue, bool) and queue >= 1 else default.queue,
            timeout=_seconds(timeout, default.timeout),
            request_timeout=_seconds(request, default.request_timeout) or default.request_timeout,
        )


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _seconds(value: Any, default: float) -> float:
    """A duration as spec.json holds it (seconds, a number), else the default."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
        return float(value)
    return default


@dataclass(frozen=True)
class Observation:
    """What the activator read of an API's Deployment."""

    exists: bool  # a Deployment of that name that berth manages for that API
    spec_replicas: int = 0  # spec.replicas (None in the object counts as 1, the API server's default)
    ready_replicas: int = 0  # status.readyReplicas
    code: str | None = None  # the code ConfigMap its pods mount (holds spec.json)
    read_at: float = 0.0  # monotonic seconds

    @property
    def ready(self) -> bool:
        return self.exists and self.ready_replicas >= 1


def observation_of(deployment: Mapping[str, Any] | None, api: str, read_at: float) -> Observation:
    """An Observation of a Deployment as the API server returns it (None: not found). A Deployment that berth
    does not manage for this API counts as unknown: the activator never scales what is not an API's."""
    if deployment is None:
        return Observation(False, read_at=read_at)
    meta = deployment.get("metadata") or {}
    labels = meta.get("labels") or {}
    if labels.get("app.kubernetes.io/managed-by") != "berth" or labels.get("berth.dev/api") != api:
        return Observation(False, read_at=read_at)
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    replicas = spec.get("replicas")
    volumes = ((spec.get("template") or {}).get("spec") or {}).get("volumes") or []
    code = next((v["configMap"].get("name") for v in volumes
                 if v.get("name") == "code" and isinstance(v.get("configMap"), Mapping)), None)
    return Observation(True, spec_replicas=1 if replicas is None else int(replicas),
                       ready_replicas=int(status.get("readyReplicas") or 0), code=code, read_at=read_at)


def fresh(observation: Observation | None, now: float, ttl: float = CACHE_SECONDS) -> bool:
    """Whether a cached observation may answer a request at `now`."""
    return observation is not None and 0 <= now - observation.read_at < ttl


class Verdict(enum.Enum):
    FORWARD = "forward"
    HOLD = "hold"
    QUEUE_FULL = "queue-full"
    UNKNOWN = "unknown"


@dataclass
class APIState:
    """The activator's state for one API: how many requests it holds, since when it is waking the API, and
    how many scale patches it sent (for logs and tests)."""

    holding: int = 0
    waking_since: float | None = None
    patches: int = 0
    last_patch: float | None = None

    def admit(self, observation: Observation, limits: Limits, now: float) -> Verdict:
        """What to do with a new request; a HOLD counts it as held (call `release` when it stops waiting)."""
        if not observation.exists:
            return Verdict.UNKNOWN
        if observation.ready:
            return Verdict.FORWARD
        if self.holding >= limits.queue:
            return Verdict.QUEUE_FULL
        self.holding += 1
        if self.waking_since is None:
            self.waking_since = now
        return Verdict.HOLD

    def release(self) -> None:
        """A held request stopped waiting (forwarded, timed out, or its client left)."""
        self.holding = max(0, self.holding - 1)
        if self.holding == 0:
            self.waking_since = None

    def woke(self) -> None:
        """The API has a ready pod: the wake is over (the held requests are forwarded)."""
        self.waking_since = None

    def should_scale(self, observation: Observation) -> bool:
        """Patch spec.replicas to 1 only while requests are held and the Deployment is at 0: an autoscaler
        (KEDA) or a person who scaled it up already is never overridden, and never scaled down."""
        return self.holding > 0 and observation.exists and observation.spec_replicas == 0

    def scaled(self, now: float) -> None:
        self.patches += 1
        self.last_patch = now

    @property
    def waking(self) -> bool:
        return self.holding > 0


def remaining(arrived: float, limits: Limits, now: float) -> float:
    """Seconds a request that arrived at `arrived` may still be held (0 when its time is up)."""
    return max(0.0, arrived + limits.timeout - now)


def queue_full_message(api: str, limits: Limits) -> str:
    return (f"API {api!r} is starting a replica and already holds {limits.queue} requests "
            "(scale_from_zero_queue); retry later")


def timed_out_message(api: str, limits: Limits) -> str:
    return (f"no replica of API {api!r} became ready within {limits.timeout:g}s (scale_from_zero_timeout); "
            f"see `berth get {api} -e ENV`")
