"""What the control plane and a replica process (`python -m berth.runtime`) agree on.

Both sides of the process boundary import this module and nothing else of each other: the command
line, the files in the replica's socket folder, the exit codes. It imports only the standard
library, so the control plane spawns replicas without loading a web framework.

The socket folder holds:

* `spec.json` — the API spec, written by the control plane before the start;
* `proc-<i>.sock` — process i's unix socket;
* `failure.json` — written by the replica when the predictor's `__init__` failed, read by the
  control plane to show why without parsing logs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypedDict

MODULE = "berth.runtime"
SPEC_FILE = "spec.json"
FAILURE_FILE = "failure.json"

EXIT_INIT_FAILED = 3  # the predictor failed to initialise: the failure file says why
EXIT_SIBLING_DIED = 4  # another process of the replica died unasked, so the whole replica stops

DEFAULT_HOST = "127.0.0.1"
DEFAULT_REPLICA_ID = "local"

# A predictor opts in to a streamed request body by naming a `predict` parameter so: it then gets the
# body as an async iterator of bytes chunks instead of a parsed payload. The control plane asks too
# (the gateway must not buffer such a route's bodies), hence this one rule here, standard library only.
BODY_STREAM = "body_stream"


def streams_request_body(parameters: Iterable[str]) -> bool:
    """Whether a `predict` with these parameter names takes its request body as a stream."""
    return BODY_STREAM in parameters


def socket_path(socket_dir: Path, process_index: int) -> Path:
    return socket_dir / f"proc-{process_index}.sock"


@dataclass(frozen=True)
class Failure:
    """Why a replica's predictor failed to initialise: the message and the user's traceback."""

    error: str
    traceback: str


def write_failure(socket_dir: Path, failure: Failure) -> None:
    # Through a temporary file so that a reader never sees half of it.
    tmp = socket_dir / (FAILURE_FILE + ".tmp")
    tmp.write_text(json.dumps({"error": failure.error, "traceback": failure.traceback}))
    os.replace(tmp, socket_dir / FAILURE_FILE)


def read_failure(socket_dir: Path) -> Failure | None:
    try:
        failure = json.loads((socket_dir / FAILURE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return Failure(str(failure.get("error", "")), str(failure.get("traceback", "")))


def clear_failure(socket_dir: Path) -> None:
    """Before a start: a failure left by an earlier start must not be taken for this one's."""
    (socket_dir / FAILURE_FILE).unlink(missing_ok=True)


@dataclass(frozen=True)
class ReplicaArgs:
    """The command line of one replica process; `to_argv` and `parse` are each other's inverse."""

    spec: Path
    project: Path
    socket_dir: Path  # sockets and the failure file
    port: int | None = None  # listen on this TCP port instead of a unix socket; process 0 only
    host: str = DEFAULT_HOST
    model_cache: Path | None = None  # where remote models are mirrored
    replica_id: str = DEFAULT_REPLICA_ID
    process_index: int = 0
    version: str | None = None  # the API version served, reported by GET /stats

    def to_argv(self) -> list[str]:
        argv = ["--spec", str(self.spec), "--project", str(self.project), "--socket-dir", str(self.socket_dir)]
        if self.port is not None:
            argv += ["--port", str(self.port)]
        if self.host != DEFAULT_HOST:
            argv += ["--host", self.host]
        if self.model_cache is not None:
            argv += ["--model-cache", str(self.model_cache)]
        if self.replica_id != DEFAULT_REPLICA_ID:
            argv += ["--replica-id", self.replica_id]
        if self.process_index != 0:
            argv += ["--process-index", str(self.process_index)]
        if self.version is not None:
            argv += ["--version", self.version]
        return argv

    def command(self, python: str) -> list[str]:
        return [python, "-m", MODULE, *self.to_argv()]

    def for_process(self, process_index: int) -> ReplicaArgs:
        return dataclasses.replace(self, process_index=process_index)

    @classmethod
    def parse(cls, argv: Sequence[str] | None = None) -> ReplicaArgs:
        args = _parser().parse_args(argv)
        return cls(spec=args.spec, project=args.project, socket_dir=args.socket_dir, port=args.port,
                   host=args.host, model_cache=args.model_cache, replica_id=args.replica_id,
                   process_index=args.process_index, version=args.version)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}")
    parser.add_argument("--spec", type=Path, required=True, help="the API spec as JSON")
    parser.add_argument("--project", type=Path, required=True)
    parser.add_argument("--socket-dir", type=Path, required=True, help="sockets, failure report")
    parser.add_argument("--port", type=int, default=None,
                        help="listen on this TCP port (127.0.0.1) instead of a unix socket; process 0 only")
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--model-cache", type=Path, default=None, help="where remote models are mirrored")
    parser.add_argument("--replica-id", default=DEFAULT_REPLICA_ID)
    parser.add_argument("--process-index", type=int, default=0)
    parser.add_argument("--version", default=None, help="the API version served (reported by GET /stats)")
    return parser


# --- GET /stats: what each replica process reports to the daemon's collector ----------------------
#
# Every replica process answers `GET /stats` on its own socket with `ReplicaStats` as JSON, cumulative
# since that process started; the daemon turns readings into deltas per `incarnation` (a restarted
# process starts from zero under a new incarnation). Histograms are `berth.observability.histogram`'s
# `as_json()` (bounds, counts non-cumulative with +Inf last, sum, count).

STATS_PATH = "/stats"
MAX_CLASSES = 100  # distinct labels counted per process; later new labels are counted as OTHER_CLASS
OTHER_CLASS = "__other__"


def _log_symmetric_bounds() -> tuple[float, ...]:
    """1e-3 .. 1e6 in steps of 1, 2.5, 5 per decade, mirrored below zero, with 0 in the middle: no fixed
    set of bounds fits every regression model, and this one keeps a relative resolution of ~2.5x over
    nine decades on either side of zero."""
    positive = [float(f"{mantissa}e{exponent}") for exponent in range(-3, 6) for mantissa in ("1", "2.5", "5")]
    positive.append(1e6)
    return (*(-bound for bound in reversed(positive)), 0.0, *positive)


PREDICTION_VALUE_BOUNDS: tuple[float, ...] = _log_symmetric_bounds()


class HistogramJSON(TypedDict):
    """`Histogram.as_json()`."""

    bounds: list[float]
    counts: list[int]  # one more than bounds: the last is +Inf
    sum: float
    count: int


class ValuesJSON(HistogramJSON):
    """A regression API's predicted values: the histogram (PREDICTION_VALUE_BOUNDS) plus the extremes
    seen (None until a value was)."""

    min: float | None
    max: float | None


class PredictionStats(TypedDict):
    model_type: Literal["classification", "regression"]
    key: str | None
    classes: dict[str, int]  # classification: count per str(label); {} for regression
    values: ValuesJSON | None  # regression; None for classification
    wrong_type: int  # predictions that were not of the expected type (logged once per process)


class ReplicaStats(TypedDict):
    incarnation: str  # "<pid>-<process start time>": changes whenever the process is a new one
    process: int  # the process index within its replica
    version: str | None  # the API version the replica serves, when the control plane passed it
    init_seconds: float | None  # the predictor's __init__ (and init_thread) time; None until loaded
    predict: HistogramJSON  # LATENCY_BOUNDS: seconds the predictor call took (one per call/batch)
    batch_size: HistogramJSON  # BATCH_SIZE_BOUNDS (server-side batching only; empty otherwise)
    batch_wait: HistogramJSON  # BATCH_WAIT_BOUNDS
    requests: dict[str, int]  # {"2XX": n, "4XX": n, "5XX": n}
    in_flight: int  # predict requests being handled at the time of the reading (a gauge)
    predictions: PredictionStats | None  # None when the spec has no `monitoring`
