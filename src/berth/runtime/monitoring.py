"""Prediction monitoring (`monitoring:` in the spec), taken from the value `predict` returned.

The replica already holds the response object before it serialises it, so monitoring costs a few
type checks and one counter per prediction, and the gateway never re-parses a response.

What one prediction is, as Cortex had it: the response, or `response[key]` when `key` is set. A
list (or a numpy array) is a batch of predictions, one per item: a client-side batch returns a list,
and with `key` each item's field is read (`[{"label": ...}, ...]`) or the field holds the list
(`{"labels": [...]}`). With server-side batching, each request's own item is what its request gets.

A prediction of the wrong type is counted in `wrong_type` and logged once per process; it never
fails the request.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Literal

from berth.observability.histogram import Histogram
from berth.runtime.contract import (
    MAX_CLASSES,
    OTHER_CLASS,
    PREDICTION_VALUE_BOUNDS,
    PredictionStats,
    ValuesJSON,
)

log = logging.getLogger("berth.replica")
_MISSING = object()
_SEQUENCES = (list, tuple)  # a batch of predictions

ModelType = Literal["classification", "regression"]
EXPECTED = {
    "classification": "a class label (a str or an int)",
    "regression": "a finite number (an int or a float; not a bool)",
}


class PredictionMonitor:
    """Counts per class, or a histogram and the extremes of the values. Event loop thread only."""

    def __init__(self, api: str, model_type: ModelType, key: str | None) -> None:
        self.api = api
        self.model_type = model_type
        self.key = key
        self.classes: dict[str, int] = {}
        self.values: Histogram | None = Histogram.empty(PREDICTION_VALUE_BOUNDS) if model_type == "regression" else None
        # ±inf until a value is seen (as_json reports None): one comparison each per value, no None test.
        self.min = math.inf
        self.max = -math.inf
        self.wrong_type = 0
        self._warned = False
        classification = model_type == "classification"
        self._one = self._label if classification else self._value
        self._fast = self._fast_label if classification else self._fast_value

    def observe(self, response: Any) -> None:
        """Monitor what predict returned for one request. Never raises."""
        try:
            # The common shapes (a plain str/int/float, or a plain dict holding one) take exact type
            # checks only; anything else goes the general way, which also explains a wrong type.
            key = self.key
            if key is None:
                if self._fast(response):
                    return
            elif type(response) is dict and self._fast(response.get(key, _MISSING)):
                return
            self._observe(response)
        except Exception as exc:  # a user type whose checks raise: count it, never fail the request
            self._wrong(f"{type(response).__name__} ({type(exc).__name__} while reading it: {exc})")

    def _fast_label(self, value: Any) -> bool:
        kind = type(value)
        if kind is str:
            label = value
        elif kind is int:
            label = str(value)
        else:
            return False
        classes = self.classes
        if label in classes:
            classes[label] += 1
            return True
        return False  # a new label: the general path applies the limit

    def _fast_value(self, value: Any) -> bool:
        kind = type(value)
        if (kind is not float and kind is not int) or not math.isfinite(value):
            return False
        self._record(value)
        return True

    def _record(self, value: float) -> None:
        assert self.values is not None
        self.values.observe(value)
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value

    def _observe(self, response: Any) -> None:
        if type(response).__module__ == "numpy":
            response = response.tolist()  # an array becomes a list, a numpy scalar a Python one
        if isinstance(response, _SEQUENCES):
            for item in response:
                self._item(item)
        else:
            self._item(response)

    def _item(self, item: Any) -> None:
        key = self.key
        if key is None:
            if not self._fast(item):
                self._one(item)
            return
        if not isinstance(item, dict) or key not in item:
            what = f"a dict without {key!r}" if isinstance(item, dict) else type(item).__name__
            self._wrong(f"{what} (monitoring.key is {key!r}: a dict with that field was expected)")
            return
        value = item[key]
        if type(value).__module__ == "numpy":
            value = value.tolist()
        if isinstance(value, _SEQUENCES):
            for each in value:
                if not self._fast(each):
                    self._one(each)
        else:
            self._one(value)

    def _label(self, value: Any) -> None:
        if type(value).__module__ == "numpy":
            value = value.tolist()
        if not isinstance(value, (str, int)):
            self._wrong(_described(value))
            return
        label = value if isinstance(value, str) else str(value)
        classes = self.classes
        if label in classes:
            classes[label] += 1
        elif len(classes) < MAX_CLASSES:
            classes[label] = 1
        else:
            classes[OTHER_CLASS] = classes.get(OTHER_CLASS, 0) + 1

    def _value(self, value: Any) -> None:
        if type(value).__module__ == "numpy":
            value = value.tolist()
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self._wrong(_described(value))
            return
        self._record(value)

    def _wrong(self, found: str) -> None:
        self.wrong_type += 1
        if not self._warned:
            self._warned = True
            log.warning("API %s: prediction monitoring (%s) expected %s, but predict returned %s; such "
                        "predictions are counted as wrong_type and not monitored, and the requests are served "
                        "as usual (logged once per process). Return %s, or change `monitoring` in the spec",
                        self.api, self.model_type, EXPECTED[self.model_type], found, EXPECTED[self.model_type])

    def as_json(self) -> PredictionStats:
        values: ValuesJSON | None = None
        if self.values is not None:
            values = {"bounds": list(self.values.bounds), "counts": list(self.values.counts),
                      "sum": self.values.sum, "count": self.values.count,
                      "min": self.min if self.values.count else None,
                      "max": self.max if self.values.count else None}
        return {"model_type": self.model_type, "key": self.key, "classes": dict(self.classes), "values": values,
                "wrong_type": self.wrong_type}


def _described(value: Any) -> str:
    if isinstance(value, float):
        return f"the float {value!r}"
    if isinstance(value, bool):
        return f"the bool {value!r}"
    return f"a {type(value).__module__ + '.' if type(value).__module__ != 'builtins' else ''}{type(value).__name__}"
