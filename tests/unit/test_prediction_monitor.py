"""Prediction monitoring's reading of predict's return value, and the /stats contract's constants."""

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest

from berth.observability.histogram import Histogram
from berth.runtime.contract import MAX_CLASSES, OTHER_CLASS, PREDICTION_VALUE_BOUNDS, ReplicaArgs
from berth.runtime.metrics import ReplicaMetrics
from berth.runtime.monitoring import PredictionMonitor


def test_value_bounds_are_log_symmetric_around_zero() -> None:
    bounds = PREDICTION_VALUE_BOUNDS
    assert list(bounds) == sorted(bounds) and len(set(bounds)) == len(bounds)
    assert bounds[len(bounds) // 2] == 0.0
    assert [-b for b in reversed(bounds)] == list(bounds)
    assert (bounds[0], bounds[-1]) == (-1e6, 1e6)
    assert {1e-3, 2.5e-3, 5e-3, 1.0, 2.5, 5.0, 10.0, 2.5e5} <= set(bounds)


def test_the_version_travels_on_the_replica_command_line() -> None:
    args = ReplicaArgs(spec=Path("s"), project=Path("p"), socket_dir=Path("d"), version="abc123")
    assert ReplicaArgs.parse(args.to_argv()) == args
    assert ReplicaArgs.parse(args.for_process(1).to_argv()).version == "abc123"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), True, "1.5", None, b"1", [1.0]])
def test_regression_refuses_what_is_not_a_finite_number(value: object) -> None:
    monitor = PredictionMonitor("a", "regression", "v")
    monitor.observe({"v": value} if not isinstance(value, list) else {"v": [value]})
    assert monitor.wrong_type == 1 and monitor.values is not None and monitor.values.count == 0
    assert json.loads(json.dumps(monitor.as_json(), allow_nan=False))["values"]["min"] is None


def test_regression_reads_numpy_scalars_and_arrays() -> None:
    monitor = PredictionMonitor("a", "regression", None)
    for value in (np.float32(0.5), np.int64(-2), np.array([1.0, 4.0]), np.array([[3.0]])):
        monitor.observe(value)
    assert monitor.values is not None and monitor.values.count == 4 and monitor.wrong_type == 1  # [[3.0]]: nested
    assert (monitor.min, monitor.max, monitor.values.sum) == (-2, 4.0, 3.5)
    assert all(type(v) in (int, float) for v in (monitor.min, monitor.max))  # JSON-ready, not numpy


def test_labels_beyond_the_limit_are_other() -> None:
    monitor = PredictionMonitor("a", "classification", None)
    monitor.observe([str(i) for i in range(MAX_CLASSES)] + ["new", "newer", "0"])
    assert len(monitor.classes) == MAX_CLASSES + 1
    assert monitor.classes[OTHER_CLASS] == 2 and monitor.classes["0"] == 2


def test_classification_refuses_floats_dicts_and_responses(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="berth.replica")
    monitor = PredictionMonitor("a", "classification", None)
    for value in (0.5, {"label": "x"}, object(), None, "ok", np.str_("fine"), False):
        monitor.observe(value)
    assert monitor.wrong_type == 4 and monitor.classes == {"ok": 1, "fine": 1, "False": 1}
    [warning] = [r.getMessage() for r in caplog.records]
    assert "the float 0.5" in warning and "expected a class label" in warning and "once per process" in warning


def test_a_response_whose_reading_raises_is_counted_not_raised() -> None:
    class Strange(dict[str, object]):
        def __contains__(self, key: object) -> bool:
            raise RuntimeError("no")

    monitor = PredictionMonitor("a", "classification", "label")
    monitor.observe(Strange(label="x"))
    assert monitor.wrong_type == 1


def test_stats_are_plain_json_and_histograms_round_trip() -> None:
    metrics = ReplicaMetrics("a", process=2, version=None)
    metrics.observe(200, 0.01)
    metrics.observe(404, 0.002)
    metrics.observe(503, 0.5)
    metrics.predict.observe(0.003)
    stats = json.loads(json.dumps(metrics.stats(), allow_nan=False))
    assert stats["requests"] == {"2XX": 1, "4XX": 1, "5XX": 1} and stats["process"] == 2
    assert Histogram.from_json(stats["predict"]) == metrics.predict
    assert stats["init_seconds"] is None and stats["predictions"] is None
    assert not math.isnan(Histogram.from_json(stats["batch_wait"]).sum)
