"""Request and prediction history in time buckets, kept in the store so it survives daemon restarts.

Write side: the daemon's collector hands `HistoryRecorder` deltas (gateway counters, replica
prediction counts) and samples (replicas, in-flight); the recorder adds them to an in-memory bucket
for the current minute, and `flush` adds the buffered deltas into the stored minute row and into its
hour row (read, merge, write, in one transaction; a daemon restart only loses what was not flushed).
`fold` drops minute rows older than a day (their hour rows hold them) and hour rows older than two
weeks.

Read side: plain functions of the store (`request_series`, `request_totals`, `prediction_summary`,
`drift`) used by the management API, the observe app and the dashboard. A window is made of whole
hours from hour rows and of minute rows for its partial hours (see `_pieces`), so reading two weeks
adds up a few hundred rows, and nothing is counted twice.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from berth.control.store import Store
from berth.core import drift as psi
from berth.observability.histogram import LATENCY_BOUNDS, Histogram

MINUTE = 60
HOUR = 3600
MINUTES_KEPT = 24 * HOUR  # minute rows older than this are folded into hour rows
HOURS_KEPT = 14 * 24 * HOUR  # hour rows older than this are dropped
DRIFT_WINDOW = HOUR  # the recent window drift compares with the reference
DEPLOY_BASELINE = 24 * HOUR  # without a pinned window: the first day after the latest deploy

# The ledger's delta keys as the contract names them, and the APIStats field names the ledger uses.
_REQUEST_KEYS = {"2XX": "code_2xx", "4XX": "code_4xx", "5XX": "code_5xx", "requests": "latency_count",
                 "seconds": "latency_sum"}


@dataclass
class HistoryRow:
    start: float
    seconds: float  # bucket length: 60 (minute) or 3600 (hour)
    code_2xx: int = 0
    code_4xx: int = 0
    code_5xx: int = 0
    count: int = 0
    seconds_sum: float = 0.0
    latency: Histogram = field(default_factory=lambda: Histogram.empty(LATENCY_BOUNDS))
    replicas_ready: int = 0
    replicas_desired: int = 0
    in_flight: float = 0.0  # average of the samples taken in the bucket
    samples: int = 0  # in-flight samples behind the average (so that merged averages stay exact)

    def merge(self, other: HistoryRow) -> None:
        """Add a later row (or delta) of the same bucket: counts add up, replica figures are the later ones."""
        self.code_2xx += other.code_2xx
        self.code_4xx += other.code_4xx
        self.code_5xx += other.code_5xx
        self.count += other.count
        self.seconds_sum += other.seconds_sum
        _merge_histogram(self.latency, other.latency)
        if other.samples:
            total = self.in_flight * self.samples + other.in_flight * other.samples
            self.samples += other.samples
            self.in_flight = total / self.samples
            self.replicas_ready, self.replicas_desired = other.replicas_ready, other.replicas_desired

    def as_dict(self) -> dict[str, Any]:
        """JSON for the dashboard: the row with p50 / p99 and the average request time."""
        return {"start": self.start, "seconds": self.seconds, "2XX": self.code_2xx, "4XX": self.code_4xx,
                "5XX": self.code_5xx, "requests": self.count, "seconds_sum": self.seconds_sum,
                "avg": self.seconds_sum / self.count if self.count else None,
                "p50": self.latency.quantile(0.5), "p99": self.latency.quantile(0.99),
                "replicas_ready": self.replicas_ready, "replicas_desired": self.replicas_desired,
                "in_flight": self.in_flight}


def _merge_histogram(into: Histogram, other: Histogram) -> None:
    if other.count == 0:
        return
    if into.bounds == other.bounds:
        into.merge(other)
    elif into.count == 0:  # bounds changed between versions: keep the newer ones
        into.bounds, into.counts, into.sum, into.count = other.bounds, list(other.counts), other.sum, other.count


# --- prediction data: the /stats "predictions" shape, merged -----------------------------------------
def merge_predictions(into: dict[str, Any] | None, delta: dict[str, Any]) -> dict[str, Any]:
    """Add a predictions delta into accumulated data (a new dict when `into` is None). A different
    model type than what was accumulated (a redeploy changed `monitoring`) starts over."""
    if into is None or into.get("model_type") != delta.get("model_type"):
        into = {"model_type": delta.get("model_type"), "key": delta.get("key"), "classes": {},
                "values": None, "wrong_type": 0}
    into["key"] = delta.get("key")
    into["wrong_type"] = int(into.get("wrong_type") or 0) + int(delta.get("wrong_type") or 0)
    classes: dict[str, int] = into["classes"]
    for label, count in (delta.get("classes") or {}).items():
        classes[str(label)] = classes.get(str(label), 0) + int(count)
    values = delta.get("values")
    if values and int(values.get("count") or 0):
        into["values"] = _merge_values(into.get("values"), values)
    return into


def _merge_values(into: dict[str, Any] | None, values: dict[str, Any]) -> dict[str, Any]:
    histogram = Histogram.from_json(values)
    if into is not None:
        merged = Histogram.from_json(into)
        _merge_histogram(merged, histogram)
        histogram = merged
    result = histogram.as_json()
    result["min"] = _extreme(min, into.get("min") if into else None, values.get("min"))
    result["max"] = _extreme(max, into.get("max") if into else None, values.get("max"))
    return result


def _extreme(pick: Callable[[float, float], float], a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return b if a is None else a
    return pick(a, b)


def _prediction_count(data: dict[str, Any]) -> int:
    if data.get("model_type") == "classification":
        return sum(int(n) for n in data.get("classes", {}).values())
    return int((data.get("values") or {}).get("count") or 0)


# --- write side ---------------------------------------------------------------------------------
class HistoryRecorder:
    """Buffers deltas per (API, minute) until `flush`; only the daemon's event loop calls it."""

    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        self.store = store
        self.clock = clock
        self._requests: dict[tuple[str, float], HistoryRow] = {}
        self._predictions: dict[tuple[str, float], dict[str, Any]] = {}

    def _row(self, api: str) -> HistoryRow:
        start = _bucket(self.clock(), MINUTE)
        row = self._requests.get((api, start))
        if row is None:
            row = self._requests[(api, start)] = HistoryRow(start, MINUTE)
        return row

    def add_requests(self, api: str, counters_delta: dict[str, Any], latency: Histogram | None) -> None:
        delta = {field_name: counters_delta.get(key, counters_delta.get(field_name, 0)) or 0
                 for key, field_name in _REQUEST_KEYS.items()}
        row = self._row(api)
        row.code_2xx += int(delta["code_2xx"])
        row.code_4xx += int(delta["code_4xx"])
        row.code_5xx += int(delta["code_5xx"])
        row.count += int(delta["latency_count"])
        row.seconds_sum += float(delta["latency_sum"])
        if latency is not None:
            _merge_histogram(row.latency, latency)

    def add_predictions(self, api: str, delta: dict[str, Any]) -> None:
        key = (api, _bucket(self.clock(), MINUTE))
        self._predictions[key] = merge_predictions(self._predictions.get(key), delta)

    def sample(self, api: str, ready: int, desired: int, in_flight: float) -> None:
        row = self._row(api)
        row.merge(HistoryRow(row.start, MINUTE, replicas_ready=ready, replicas_desired=desired,
                             in_flight=in_flight, samples=1))

    def flush(self, now: float) -> None:
        """Add everything buffered into the stored minute rows and their hour rows (one transaction), and
        forget it. Hour rows are kept up to date as minutes come, so a read over days adds up hours."""
        requests, predictions = self._requests, self._predictions
        if not requests and not predictions:
            return
        with self.store.transaction():
            for (api, start), row in requests.items():
                _add_request_row(self.store, api, row)
                hour = HistoryRow(_bucket(start, HOUR), HOUR)
                hour.merge(row)
                _add_request_row(self.store, api, hour)
            for (api, start), data in predictions.items():
                _add_prediction_row(self.store, api, start, MINUTE, data)
                _add_prediction_row(self.store, api, _bucket(start, HOUR), HOUR, data)
        self._requests, self._predictions = {}, {}

    def fold(self, now: float) -> None:
        """Minute rows older than a day dropped (their hour rows hold them); hour rows older than two weeks
        dropped."""
        fold(self.store, now)


def fold(store: Store, now: float) -> None:
    cutoff, oldest = _bucket(now - MINUTES_KEPT, MINUTE), now - HOURS_KEPT
    with store.transaction() as db:
        for table in ("request_history", "prediction_history"):
            db.execute(f"DELETE FROM {table} WHERE seconds = ? AND start < ?", (MINUTE, cutoff))
            db.execute(f"DELETE FROM {table} WHERE seconds = ? AND start < ?", (HOUR, oldest))
            # Rows flushed just after the API's delete would greet an API deployed again under its name.
            db.execute(f"DELETE FROM {table} WHERE api NOT IN (SELECT name FROM apis)")
        # Reads need to know from when on every minute is still there.
        db.execute("INSERT INTO history_horizon VALUES (0, ?) ON CONFLICT(id) DO UPDATE SET "
                   "minutes_from = MAX(minutes_from, excluded.minutes_from)", (cutoff,))


def _minutes_from(store: Store) -> float:
    """Minute rows before this were dropped by `fold`; after it, every minute recorded is there."""
    row = store.db.execute("SELECT minutes_from FROM history_horizon WHERE id = 0").fetchone()
    return float(row[0]) if row else -math.inf


def _pieces(store: Store, api: str, since: float, until: float) -> list[tuple[int, float, float]]:
    """Which rows make up [since, until) without counting anything twice: (bucket seconds, first start,
    end) with rows `first start <= start < end`. Whole hours come from hour rows; the partial hours at
    either end from minute rows where those hours still have all theirs (within the last day), else
    from their hour row (the window widens to whole hours there)."""
    complete_from = _minutes_from(store)
    first_hour, last_hour = _bucket(since, HOUR), _bucket(until, HOUR)

    def partial(hour: float, start: float, end: float) -> tuple[int, float, float]:
        return (MINUTE, _bucket(start, MINUTE), end) if hour >= complete_from else (HOUR, hour, hour + 1)

    if first_hour == last_hour:
        return [partial(first_hour, since, until)]
    pieces = []
    whole_from = first_hour if since == first_hour else first_hour + HOUR
    if whole_from > first_hour:
        pieces.append(partial(first_hour, since, whole_from))
    if last_hour > whole_from:
        pieces.append((HOUR, whole_from, last_hour))
    if until > last_hour:
        pieces.append(partial(last_hour, last_hour, until))
    return pieces


def _where(pieces: list[tuple[int, float, float]]) -> tuple[str, list[float]]:
    """A WHERE clause (after `api = ?`) selecting the pieces' rows, and its parameters."""
    clause = " OR ".join("(seconds = ? AND start >= ? AND start < ?)" for _ in pieces)
    return f"({clause})", [value for piece in pieces for value in piece]


# --- rows in the store (callers hold a transaction) -------------------------------------------------
_REQUEST_COLUMNS = ("api, start, seconds, code_2xx, code_4xx, code_5xx, seconds_sum, count, latency, "
                    "replicas_ready, replicas_desired, in_flight_sum, samples")


def _add_request_row(store: Store, api: str, row: HistoryRow) -> None:
    stored = store.db.execute(f"SELECT {_REQUEST_COLUMNS} FROM request_history WHERE api = ? AND start = ? "
                              "AND seconds = ?", (api, row.start, row.seconds)).fetchone()
    if stored is not None:
        merged = _history_row(stored)
        merged.merge(row)
        row = merged
    store.db.execute(
        f"INSERT OR REPLACE INTO request_history ({_REQUEST_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (api, row.start, int(row.seconds), row.code_2xx, row.code_4xx, row.code_5xx, row.seconds_sum, row.count,
         json.dumps(row.latency.as_json()) if row.latency.count else None, row.replicas_ready,
         row.replicas_desired, row.in_flight * row.samples, row.samples))


def _history_row(raw: Any) -> HistoryRow:
    (_api, start, seconds, c2, c4, c5, seconds_sum, count, latency, ready, desired, in_flight_sum,
     samples) = raw
    histogram = Histogram.from_json(json.loads(latency)) if latency else Histogram.empty(LATENCY_BOUNDS)
    return HistoryRow(start=start, seconds=seconds, code_2xx=c2, code_4xx=c4, code_5xx=c5, count=count,
                      seconds_sum=seconds_sum, latency=histogram, replicas_ready=ready, replicas_desired=desired,
                      in_flight=in_flight_sum / samples if samples else 0.0, samples=samples)


def _add_prediction_row(store: Store, api: str, start: float, seconds: int, data: dict[str, Any]) -> None:
    stored = store.db.execute("SELECT data FROM prediction_history WHERE api = ? AND start = ? AND seconds = ?",
                              (api, start, seconds)).fetchone()
    merged = merge_predictions(json.loads(stored[0]) if stored else None, data)
    store.db.execute("INSERT OR REPLACE INTO prediction_history (api, start, seconds, data) VALUES (?, ?, ?, ?)",
                     (api, start, seconds, json.dumps(merged)))


def _bucket(at: float, seconds: int) -> float:
    return float(math.floor(at / seconds) * seconds)


# --- read side ----------------------------------------------------------------------------------
def request_series(store: Store, api: str, since: float, until: float) -> list[HistoryRow]:
    """The buckets that make up [since, until), oldest first: minute rows within the last day, hour rows
    for whole hours of a longer window (see `_pieces`)."""
    pieces = _pieces(store, api, since, until)
    clause, values = _where(pieces)
    rows = store.db.execute(f"SELECT {_REQUEST_COLUMNS} FROM request_history WHERE api = ? AND {clause} "
                            "ORDER BY start, seconds DESC", (api, *values)).fetchall()
    return [_history_row(raw) for raw in rows]


def request_totals(store: Store, api: str, since: float, until: float) -> dict[str, Any]:
    """2XX / 4XX / 5XX, requests, average request seconds and p50 / p99 over the buckets in the window."""
    total = HistoryRow(since, until - since)
    for row in request_series(store, api, since, until):
        total.merge(HistoryRow(row.start, row.seconds, row.code_2xx, row.code_4xx, row.code_5xx, row.count,
                               row.seconds_sum, row.latency))
    return {"2XX": total.code_2xx, "4XX": total.code_4xx, "5XX": total.code_5xx, "requests": total.count,
            "avg_request_seconds": total.seconds_sum / total.count if total.count else None,
            "p50": total.latency.quantile(0.5), "p99": total.latency.quantile(0.99),
            "since": since, "until": until}


_TYPE = "json_extract(data, '$.model_type') = ?"
_BOUNDS = "json_extract(data, '$.values.bounds') = ?"


def _predictions(store: Store, api: str, since: float, until: float) -> dict[str, Any] | None:
    """The predictions of the window, added up by SQLite itself (json_each) over the rows `_pieces`
    picks: two weeks of minute rows with a hundred classes each would take the daemon's loop most of a
    second in Python. Rows of the newest row's model type count (a redeploy may change `monitoring`)."""
    clause, values = _where(_pieces(store, api, since, until))
    rows = f"prediction_history WHERE api = ? AND {clause}"
    each = f"prediction_history, json_each(data, ?) AS j WHERE api = ? AND {clause}"
    window = (api, *values)
    newest = store.db.execute(f"SELECT json_extract(data, '$.model_type'), json_extract(data, '$.key') FROM {rows} "
                              "ORDER BY start DESC, seconds LIMIT 1", window).fetchone()
    if newest is None:
        return None
    model_type, key = newest
    typed = (*window, model_type)
    (wrong,) = store.db.execute(f"SELECT SUM(json_extract(data, '$.wrong_type')) FROM {rows} AND {_TYPE}",
                                typed).fetchone()
    data: dict[str, Any] = {"model_type": model_type, "key": key, "classes": {}, "values": None,
                            "wrong_type": int(wrong or 0)}
    if model_type == "classification":
        data["classes"] = {str(label): int(count) for label, count in store.db.execute(
            f"SELECT j.key, SUM(j.value) FROM {each} AND {_TYPE} GROUP BY j.key", ("$.classes", *typed))}
        return data
    found = store.db.execute(f"SELECT json_extract(data, '$.values.bounds') FROM {rows} AND {_TYPE} AND "
                             "json_extract(data, '$.values.bounds') IS NOT NULL ORDER BY start DESC, seconds LIMIT 1",
                             typed).fetchone()
    if found is not None:  # the newest bounds (fixed in contract.py; rows with others are left out)
        data["values"] = _values(store, rows, each, (*typed, found[0]), json.loads(found[0]))
    return data


def _values(store: Store, rows: str, each: str, selected: tuple[Any, ...], bounds: list[float]) -> dict[str, Any]:
    counts = [0] * (len(bounds) + 1)
    for index, count in store.db.execute(f"SELECT j.key, SUM(j.value) FROM {each} AND {_TYPE} AND {_BOUNDS} "
                                         "GROUP BY j.key", ("$.values.counts", *selected)):
        if 0 <= int(index) < len(counts):
            counts[int(index)] = int(count)
    total, observed, low, high = store.db.execute(
        "SELECT SUM(json_extract(data, '$.values.sum')), SUM(json_extract(data, '$.values.count')), "
        "MIN(json_extract(data, '$.values.min')), MAX(json_extract(data, '$.values.max')) "
        f"FROM {rows} AND {_TYPE} AND {_BOUNDS}", selected).fetchone()
    return {"bounds": bounds, "counts": counts, "sum": float(total or 0.0), "count": int(observed or 0),
            "min": low, "max": high}


def prediction_summary(store: Store, api: str, since: float, until: float) -> dict[str, Any] | None:
    """classification: {"classes": {label: n}}; regression: {"min", "max", "avg", "histogram"};
    both with "model_type", "count" and "wrong_type". None when nothing was recorded in the window."""
    data = _predictions(store, api, since, until)
    if data is None:
        return None
    summary: dict[str, Any] = {"model_type": data["model_type"], "key": data.get("key"),
                               "count": _prediction_count(data), "wrong_type": data.get("wrong_type", 0)}
    if data["model_type"] == "classification":
        summary["classes"] = dict(sorted(data["classes"].items(), key=lambda item: (-item[1], item[0])))
        return summary
    values = data.get("values") or {}
    count = int(values.get("count") or 0)
    summary.update({"min": values.get("min"), "max": values.get("max"),
                    "avg": values["sum"] / count if count else None,
                    "histogram": {k: values[k] for k in ("bounds", "counts", "sum", "count")} if count else None})
    return summary


def reference_window(store: Store, api: str, now: float) -> dict[str, Any] | None:
    """The window drift compares the last hour with: the pinned one, else the first day after the latest
    deploy (cut before the last hour while that day is not over, so the two never overlap)."""
    pinned = store.baseline(api)
    if pinned is not None:
        return {"source": "pinned", "from": pinned[0], "to": pinned[1], "until": pinned[1], "pinned_at": pinned[2]}
    versions = store.versions(api, limit=1)
    if not versions:
        return None
    deployed_at = versions[0][1]
    end = deployed_at + DEPLOY_BASELINE
    return {"source": "deploy", "from": deployed_at, "to": end, "until": min(end, now - DRIFT_WINDOW),
            "deployed_at": deployed_at, "filling": end > now - DRIFT_WINDOW}


def drift(store: Store, api: str, now: float) -> dict[str, Any] | None:
    """PSI of the last hour's predictions against the reference window, with its verdict ("not enough
    data" while either has fewer than 100 predictions); None when there is no reference window (no
    deploy on record and none pinned)."""
    reference = reference_window(store, api, now)
    if reference is None:
        return None
    recent = _predictions(store, api, now - DRIFT_WINDOW, now)
    base = _predictions(store, api, reference["from"], reference["until"]) \
        if reference["until"] > reference["from"] else None
    assessment = _assess(base, recent)
    return {"psi": assessment.psi, "verdict": assessment.verdict,
            "baseline": [reference["from"], reference["to"]], "window": [now - DRIFT_WINDOW, now],
            "reference": reference,
            "samples": {"baseline": assessment.reference_samples, "window": assessment.recent_samples,
                        "required": assessment.required}}


def _assess(base: dict[str, Any] | None, recent: dict[str, Any] | None) -> psi.Assessment:
    if base is None or recent is None or base["model_type"] != recent["model_type"]:
        counts = (_prediction_count(base) if base else 0, _prediction_count(recent) if recent else 0)
        return psi.Assessment(None, psi.NOT_ENOUGH_DATA, *counts)
    if recent["model_type"] == "classification":
        return psi.assess_counts(base["classes"], recent["classes"])
    base_values, recent_values = base.get("values"), recent.get("values")
    if not base_values or not recent_values or base_values["bounds"] != recent_values["bounds"]:
        return psi.Assessment(None, psi.NOT_ENOUGH_DATA, _prediction_count(base), _prediction_count(recent))
    return psi.assess(base_values["counts"], recent_values["counts"])
