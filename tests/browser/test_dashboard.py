"""The dashboard in a real headless Chromium against a real berth instance under traffic.

The page is opened through the gateway (/_berth/ is proxied to the daemon's observe app); the figures
it shows are compared with `berth get -o json` and with /_berth/metrics parsed by prometheus_client.
Screenshots land in tests/browser/artifacts/ (git-ignored).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.process.harness import Berth, wait_for, write_project

SPEC = """
- name: iris
  kind: RealtimeAPI
  predictor:
    type: python
    path: predictor.py
  monitoring:
    model_type: classification
  autoscaling:
    min_replicas: 2
    max_replicas: 2
"""

# A class per payload; a negative payload fails (a 5XX), a body that is not JSON is the client's (a 4XX).
PREDICTOR = """
class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        if payload < 0:
            raise ValueError("negative")
        return ["setosa", "versicolor", "virginica"][payload % 3]
"""

PAGE_TIMEOUT_MS = 30_000


def _send(url: str, good: int, bad_json: int, failing: int) -> None:
    with httpx.Client(timeout=30) as http:
        for i in range(good):
            assert http.post(url, json=i).status_code == 200
        for _ in range(bad_json):
            assert http.post(url, content=b"{oops", headers={"content-type": "application/json"}).status_code == 400
        for _ in range(failing):
            assert http.post(url, json=-1).status_code >= 500


def _metrics(berth: Berth) -> dict[str, float]:
    """berth_requests_total of the API summed per class, read from the exposition through the gateway."""
    text = httpx.get(berth.base_url + "/_berth/metrics", timeout=10).text
    classes: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "berth_requests_total" and sample.labels["api_name"] == "iris":
                label = sample.labels["code_class"] if sample.labels["code_class"] in ("4XX", "5XX") else "2XX"
                classes[label] = classes.get(label, 0) + sample.value
    return classes


def _predictions(berth: Berth) -> dict[str, float]:
    """berth_predictions_total of the API per class, once every replica's counts were collected."""
    def read() -> dict[str, float] | None:
        text = httpx.get(berth.base_url + "/_berth/metrics", timeout=10).text
        counts = {sample.labels["class"]: sample.value for family in text_string_to_metric_families(text)
                  for sample in family.samples
                  if sample.name == "berth_predictions_total" and sample.labels["api_name"] == "iris"}
        return counts if sum(counts.values()) == 42 else None
    return wait_for(read, timeout=30, what="42 predictions in /_berth/metrics")


def _counted(berth: Berth, total: int) -> dict[str, Any]:
    """`berth get` once every request sent is counted (the gateway reports every 200 ms)."""
    return wait_for(lambda: (m := berth.get("iris")["metrics"])["requests"] == total and m,
                    timeout=30, what=f"{total} requests counted")


def _shown(page: Any, field: str) -> str:
    return str(page.get_attribute(f"tr[data-api='iris'] td[data-field='{field}']", "data-value"))


@pytest.mark.timeout(300)  # a deploy, traffic, and up to a minute for the prediction history to be flushed
def test_dashboard_shows_what_the_metrics_say_and_updates_live(berth: Berth, page: Any, artifacts: Path,
                                                              tmp_path: Path) -> None:
    berth.run("deploy", "--wait", str(write_project(tmp_path / "project", SPEC, PREDICTOR)), timeout=180)
    url = berth.base_url + "/iris"
    _send(url, good=30, bad_json=3, failing=2)
    metrics = _counted(berth, 35)
    assert (metrics["2XX"], metrics["4XX"], metrics["5XX"]) == (30, 3, 2)
    assert _metrics(berth) == {"2XX": 30, "4XX": 3, "5XX": 2}

    page.goto(berth.base_url + "/_berth/")
    page.wait_for_selector("tr[data-api='iris'] td[data-field='2XX'][data-value='30']", timeout=PAGE_TIMEOUT_MS)
    assert (_shown(page, "2XX"), _shown(page, "4XX"), _shown(page, "5XX")) == ("30", "3", "2")
    assert _shown(page, "status") == "live"
    assert page.text_content("tr[data-api='iris'] td[data-field='replicas']") == "2 / 2"
    page.wait_for_selector("#conn[data-state='live']", timeout=PAGE_TIMEOUT_MS)  # on the event stream

    # More traffic shows up without a reload, and still agrees with the metrics.
    _send(url, good=12, bad_json=0, failing=0)
    _counted(berth, 47)
    page.wait_for_selector("tr[data-api='iris'] td[data-field='2XX'][data-value='42']", timeout=PAGE_TIMEOUT_MS)
    assert _metrics(berth)["2XX"] == 42
    page.screenshot(path=str(artifacts / "overview.png"), full_page=True)

    page.click("tr[data-api='iris'] a")
    page.wait_for_selector("#chart-rate .uplot", timeout=PAGE_TIMEOUT_MS)
    page.wait_for_selector("#replicas tr[data-replica]", timeout=PAGE_TIMEOUT_MS)
    replicas = page.eval_on_selector_all("#replicas tr[data-replica] [data-field='replica-status']",
                                         "cells => cells.map(c => c.textContent)")
    assert replicas == ["ready", "ready"]
    detail = berth.get("iris")
    assert page.text_content("[data-meta='version'] b") == detail["version"]
    assert page.locator("#events tr[data-event='deploy']").count() >= 1
    # Prediction counts reach the store through the replica collector and the minute history.
    # 42 good requests: 14 of each class, in /_berth/metrics at once and on the page once flushed.
    assert _predictions(berth) == {"setosa": 14, "versicolor": 14, "virginica": 14}
    page.wait_for_function("""() => {
        const shown = [...document.querySelectorAll('#predictions [data-class]')].map(e => e.dataset.value);
        return shown.length === 3 && shown.every(v => v === '14');
    }""", timeout=60_000)
    classes = page.eval_on_selector_all("#predictions [data-class]", "els => els.map(e => e.dataset.class)")
    assert sorted(classes) == ["setosa", "versicolor", "virginica"]
    page.screenshot(path=str(artifacts / "dashboard.png"), full_page=True)

    assert all(seen.startswith(berth.base_url + "/") for seen in page.requests), \
        f"the page loaded something from elsewhere: {[u for u in page.requests if not u.startswith(berth.base_url)]}"
    assert page.errors == [], json.dumps(page.errors)


def test_dashboard_page_of_an_unknown_api_says_so(berth: Berth, page: Any) -> None:
    berth.run("cluster", "up")
    page.goto(berth.base_url + "/_berth/#/api/nothing-here")
    page.wait_for_selector("text=No API named", timeout=PAGE_TIMEOUT_MS)
    page.click("text=Back to every API")
    page.wait_for_selector("text=No API deployed yet", timeout=PAGE_TIMEOUT_MS)


@pytest.mark.timeout(300)
def test_the_page_comes_back_live_after_the_daemon_is_killed(berth: Berth, page: Any, tmp_path: Path) -> None:
    berth.run("deploy", "--wait", str(write_project(tmp_path / "project", SPEC, PREDICTOR)), timeout=180)
    _send(berth.base_url + "/iris", good=6, bad_json=0, failing=0)
    _counted(berth, 6)
    page.goto(berth.base_url + "/_berth/")
    page.wait_for_selector("#conn[data-state='live']", timeout=PAGE_TIMEOUT_MS)
    daemon = json.loads(berth.run("cluster", "status", "-o", "json").stdout)["pid"]
    psutil.Process(daemon).kill()  # the supervisor starts a new daemon; the gateway says 503 meanwhile
    page.wait_for_selector("#conn:not([data-state='live'])", timeout=PAGE_TIMEOUT_MS)
    wait_for(lambda: json.loads(berth.run("cluster", "status", "-o", "json", check=False).stdout).get("pid")
             not in (None, daemon), timeout=60, what="a new daemon")
    page.wait_for_selector("#conn[data-state='live']", timeout=60_000)
    _send(berth.base_url + "/iris", good=4, bad_json=0, failing=0)
    page.wait_for_selector("tr[data-api='iris'] td[data-field='2XX'][data-value='10']", timeout=PAGE_TIMEOUT_MS)
    assert page.errors == [] or all("503" in e or "Failed to load" in e for e in page.errors), page.errors
