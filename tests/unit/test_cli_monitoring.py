"""`berth get --since`, the prediction block and drift line, `berth monitor baseline`, `berth logs --requests`
through the Backend seam (the fake backend answers with what the daemon's views return)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from berth.backends.base import APIDocument
from berth.cli import context, monitor
from berth.cli.main import cli
from berth.errors import BerthError
from tests.unit.test_cli import FakeBackend

AT_10 = datetime(2026, 12, 2, 10, 0).timestamp()


class MonitoredBackend(FakeBackend):
    def __init__(self, document: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.document = document or {}
        self.entries: list[dict[str, Any]] = []

    def list_apis(self, window: float | None = None) -> list[APIDocument]:
        super().list_apis(window)
        return [{**self._summary("hello"), "metrics": self._metrics(window)}]

    def get_api(self, name: str, window: float | None = None) -> APIDocument:
        super().get_api(name, window)
        return {**self._summary(name), "metrics": self._metrics(window), "replicas": [], "events": [],
                "error": None, "traceback": None, **self.document}

    def request_logs(self, name: str, follow: bool = False, tail: int = 200) -> Iterator[dict[str, Any]]:
        self.calls.append(("request_logs", name, str(follow), str(tail)))
        yield from self.entries

    def _metrics(self, window: float | None) -> dict[str, Any]:
        if window is None:
            return {"2XX": 1000, "4XX": 0, "5XX": 0, "avg_request_seconds": 0.5, "requests": 1000}
        return {"2XX": 7, "4XX": 2, "5XX": 1, "avg_request_seconds": 0.0123, "requests": 10}


def use(monkeypatch: pytest.MonkeyPatch, backend: FakeBackend) -> FakeBackend:
    monkeypatch.setattr(context, "open_backend", lambda env, obj: backend)
    return backend


def run(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--home", str(home), *args], catch_exceptions=False)


CLASSIFICATION = {
    "monitoring": {"model_type": "classification", "key": None},
    "predictions": {"model_type": "classification", "key": None, "count": 1000, "wrong_type": 3,
                    "classes": {**{f"c{i:02d}": 10 for i in range(12)}, "cat": 600, "dog": 280}},
    "drift": {"psi": 0.0412, "verdict": "stable", "baseline": [AT_10, AT_10 + 3600],
              "window": [AT_10 + 7200, AT_10 + 10800], "reference": {"source": "pinned"},
              "samples": {"baseline": 500, "window": 1000}},
}


# --- get --since ----------------------------------------------------------------------------------
def test_get_since_asks_for_the_window_and_says_where_the_figures_come_from(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = use(monkeypatch, MonitoredBackend())
    result = run(tmp_path, "get", "--since", "1h")
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith("hello"))
    assert row.split()[-5:] == ["12.3", "ms", "7", "2", "1"]
    assert "the last 1h (from the request history)" in result.output
    assert backend.calls == [("list_apis", "3600")]
    plain = run(tmp_path, "get")
    assert "1000" in plain.output and "request history" not in plain.output
    assert backend.calls[-1] == ("list_apis",)  # without --since: all time, from the ledger


def test_get_api_since_in_json_and_a_bad_window(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = use(monkeypatch, MonitoredBackend())
    result = run(tmp_path, "get", "hello", "--since", "2d", "-o", "json")
    assert json.loads(result.stdout)["metrics"]["requests"] == 10
    assert backend.calls == [("get_api", "hello", "172800")]
    bad = run(tmp_path, "get", "hello", "--since", "yesterday")
    assert bad.exit_code == 1
    assert "expected a duration like 30m, 2h or 1d" in bad.stderr and "'yesterday'" in bad.stderr


@pytest.mark.parametrize(("text", "ago"), [("30s", 30), ("15m", 900), ("1h", 3600), ("1.5h", 5400), ("2d", 172800),
                                           ("1w", 604800), ("now", 0)])
def test_durations_are_that_long_ago(text: str, ago: float) -> None:
    assert monitor.point_in_time(text, 1_000_000.0) == 1_000_000.0 - ago


def test_a_date_and_time_is_local_time() -> None:
    assert monitor.point_in_time("2026-12-02 10:00", 0) == AT_10
    assert monitor.point_in_time("2026-12-02T10:00:00", 0) == AT_10
    with pytest.raises(BerthError, match="in the future"):
        monitor.window_seconds("2999-01-01", time.time())


# --- the prediction block and the drift line -------------------------------------------------------
def test_classification_block_shows_the_top_ten_with_shares_and_the_drift_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, MonitoredBackend(CLASSIFICATION))
    result = run(tmp_path, "get", "hello")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    title = lines.index("predictions (classification), all history (up to 14 days): 1,000")
    assert lines[title + 1].split()[:3] == ["cat", "600", "60.0%"]
    assert lines[title + 2].split()[:3] == ["dog", "280", "28.0%"]
    assert len([line for line in lines[title + 1:] if line.startswith("  c0")]) == 8  # top 10 in all
    assert "… 4 more classes: 40 (4.0%)" in result.output
    assert "3 responses were not a classification prediction" in result.output
    assert "drift: 0.04 (stable) — last hour vs 2026-12-02 10:00\u201311:00 (baseline)" in result.output


def test_the_block_is_in_json_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, MonitoredBackend(CLASSIFICATION))
    document = json.loads(run(tmp_path, "get", "hello", "-o", "json").stdout)
    assert document["predictions"]["classes"]["cat"] == 600
    assert document["drift"]["verdict"] == "stable" and document["monitoring"]["model_type"] == "classification"


def test_regression_block_has_min_max_avg_and_a_text_histogram(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    bounds = [0.0, 1.0, 2.5, 5.0]
    predictions = {"model_type": "regression", "key": "score", "count": 40, "wrong_type": 0, "min": 0.5,
                   "max": 4.0, "avg": 2.25, "histogram": {"bounds": bounds, "counts": [0, 10, 0, 30, 0],
                                                          "sum": 90.0, "count": 40}}
    drift = {"psi": None, "verdict": "not enough data", "baseline": [AT_10, AT_10 + 86400],
             "window": [AT_10, AT_10 + 3600], "reference": {"source": "deploy", "filling": True},
             "samples": {"baseline": 40, "window": 40, "required": 360}}
    use(monkeypatch, MonitoredBackend({"monitoring": {"model_type": "regression", "key": "score"},
                                       "predictions": predictions, "drift": drift}))
    result = run(tmp_path, "get", "hello", "--since", "1h")
    lines = result.output.splitlines()
    assert "predictions (regression, key score), the last 1h: 40" in lines
    assert "  min 0.5   max 4   avg 2.25" in lines
    histogram = [line.split() for line in lines if line.strip().startswith("(")]
    assert [row[:3] for row in histogram] == [["(0,", "1]", "10"], ["(1,", "2.5]", "0"], ["(2.5,", "5]", "30"]]
    assert histogram[2][3] == "█" * monitor.BAR and histogram[0][3] == "█" * 8
    assert ("drift: not enough data yet — 40 predictions in the last hour, 40 in the baseline (the first day "
            "after the deploy at 2026-12-02 10:00); needs 360 in each") in result.output


def test_no_block_without_monitoring_and_a_note_before_any_prediction(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, MonitoredBackend({"monitoring": None, "predictions": None, "drift": None}))
    assert "predictions" not in run(tmp_path, "get", "hello").output
    use(monkeypatch, MonitoredBackend({"monitoring": {"model_type": "classification", "key": None},
                                       "predictions": None, "drift": None}))
    output = run(tmp_path, "get", "hello").output
    assert "predictions (classification), all history (up to 14 days): none recorded yet" in output
    assert "drift: no reference window yet" in output


# --- monitor baseline -------------------------------------------------------------------------------
class BaselineBackend(MonitoredBackend):
    def pin_baseline(self, name: str, since: float | None, until: float | None) -> dict[str, Any]:
        super().pin_baseline(name, since, until)
        start, end = since or AT_10, until or AT_10 + 3600
        return {"api": name, "reference": {"source": "pinned", "from": start, "to": end},
                "drift": {**CLASSIFICATION["drift"], "baseline": [start, end]}}

    def unpin_baseline(self, name: str) -> dict[str, Any]:
        super().unpin_baseline(name)
        return {"api": name, "reference": {"source": "deploy", "from": AT_10, "to": AT_10 + 86400}, "drift": None}


def test_monitor_baseline_pins_the_window_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = use(monkeypatch, BaselineBackend())
    result = run(tmp_path, "monitor", "baseline", "hello", "--since", "2026-12-02 10:00",
                 "--until", "2026-12-02 11:00")
    assert result.exit_code == 0, result.output
    assert backend.calls == [("pin_baseline", "hello", str(AT_10), str(AT_10 + 3600))]
    assert "hello: drift is measured against 2026-12-02 10:00\u201311:00 (pinned)" in result.output
    assert "drift: 0.04 (stable)" in result.output


def test_monitor_baseline_defaults_to_the_last_hour_and_resets(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    backend = use(monkeypatch, BaselineBackend())
    assert run(tmp_path, "monitor", "baseline", "hello").exit_code == 0
    assert backend.calls[-1] == ("pin_baseline", "hello", "None", "None")  # the daemon's last hour
    result = run(tmp_path, "monitor", "baseline", "hello", "--reset", "-o", "json")
    assert json.loads(result.stdout)["reference"]["source"] == "deploy"
    assert backend.calls[-1] == ("unpin_baseline", "hello")


def test_monitor_baseline_refuses_a_window_that_ends_before_it_starts(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    backend = use(monkeypatch, BaselineBackend())
    result = run(tmp_path, "monitor", "baseline", "hello", "--since", "1h", "--until", "2h")
    assert result.exit_code == 1
    assert "the window must start before it ends" in result.stderr and "--since 2h --until 1h" in result.stderr
    assert backend.calls == []


# --- logs --requests ------------------------------------------------------------------------------
ENTRIES = [
    {"ts": AT_10 + 1.2345, "request_id": "a1b2", "api": "hello", "method": "POST", "path": "/hello",
     "status": 200, "seconds": 0.0123, "replica": "hello-7f3a", "reason": None},
    {"ts": AT_10 + 2.5, "request_id": "c3d4", "api": "hello", "method": "POST", "path": "/hello",
     "status": 503, "seconds": 0.0004, "replica": None, "reason": "no-ready-replica"},
]


def test_logs_requests_prints_one_aligned_line_per_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = MonitoredBackend()
    backend.entries = ENTRIES
    use(monkeypatch, backend)
    result = run(tmp_path, "logs", "hello", "--requests", "--tail", "5")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "2026-12-02 10:00:01.234  a1b2  200       12.3 ms  hello-7f3a",
        "2026-12-02 10:00:02.500  c3d4  503        0.4 ms  -  no-ready-replica",
    ]
    assert backend.calls == [("request_logs", "hello", "False", "5")]


def test_logs_requests_json_lines_and_json_without_requests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = MonitoredBackend()
    backend.entries = ENTRIES
    use(monkeypatch, backend)
    result = run(tmp_path, "logs", "hello", "--requests", "-o", "json", "-f")
    assert [json.loads(line) for line in result.output.splitlines()] == ENTRIES
    assert backend.calls == [("request_logs", "hello", "True", "200")]
    refused = run(tmp_path, "logs", "hello", "-o", "json")
    assert refused.exit_code == 1 and "-o json goes with --requests" in refused.stderr


def test_long_labels_are_cut_so_the_counts_stay_in_columns() -> None:
    lines = monitor.class_lines({"x" * 50: 3, "y": 1}, 4)
    assert lines[0].plain.startswith("  " + "x" * 29 + "\u2026  ")
    assert lines[0].plain.index("3") == lines[1].plain.index("1")


def test_logs_requests_says_when_nothing_was_logged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, MonitoredBackend())
    result = run(tmp_path, "logs", "hello", "--requests")
    assert result.exit_code == 0 and result.stdout == ""
    assert "no requests logged for hello yet" in result.stderr


def test_drift_lines_for_each_kind_of_reference() -> None:
    def line(**drift: Any) -> str:
        return monitor.drift_line({"drift": drift}).plain

    deploy = {"source": "deploy"}
    assert line(psi=0.3, verdict="drifted", baseline=[AT_10, AT_10 + 86400], reference=deploy) == \
        "drift: 0.30 (drifted) — last hour vs baseline: the first day after the deploy at 2026-12-02 10:00"
    assert line(psi=None, verdict="not enough data", baseline=[AT_10, AT_10 + 1800], reference={"source": "pinned"},
                samples={"baseline": 5, "window": 500, "required": 100}) == \
        ("drift: not enough data — 500 predictions in the last hour, 5 in the baseline (2026-12-02 10:00\u201310:30); "
         "needs 100 in each")
    assert monitor.drift_line({"drift": None}).plain.startswith("drift: no reference window yet")
