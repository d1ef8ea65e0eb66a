"""The page's own behaviour in a real headless Chromium, over the fake source (no daemon needed):
the polling fallback, a regression API's histogram and drift, the history windows, an unknown API."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.fake_source import FakeSource, serve

dashboard_routes = importlib.import_module("berth.dashboard.routes")
TIMEOUT_MS = 20_000


@pytest.fixture
def source() -> FakeSource:
    fake = FakeSource()
    fake.add("iris", codes=(120, 3, 1))
    fake.add("price", status="updating", requested=1, codes=(5, 0, 0), monitoring="regression")
    return fake


@pytest.fixture
def base(source: FakeSource) -> Iterator[str]:
    with serve(source) as url:
        yield url


def test_without_a_stream_the_page_polls_and_still_updates(source: FakeSource, base: str, page: Any,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dashboard_routes, "MAX_STREAMS", 0)  # every stream refused with a 503
    page.goto(base + "/_berth/")
    page.wait_for_selector("#conn[data-state='polling']", timeout=TIMEOUT_MS)
    page.wait_for_selector("tr[data-api='iris'] td[data-field='2XX'][data-value='120']", timeout=TIMEOUT_MS)
    source.apis["iris"]["metrics"]["2XX"] = 130
    page.wait_for_selector("tr[data-api='iris'] td[data-field='2XX'][data-value='130']", timeout=TIMEOUT_MS)
    assert [e for e in page.errors if "503" not in e] == []  # the refused streams are the only errors


def test_a_regression_api_shows_its_value_histogram_and_drift(base: str, page: Any, artifacts: Path) -> None:
    page.goto(base + "/_berth/")
    drift = page.wait_for_selector("tr[data-api='price'] td[data-field='drift']", timeout=TIMEOUT_MS)
    assert drift.get_attribute("data-value") == "drifted"
    page.click("tr[data-api='price'] a")
    page.wait_for_selector("#predictions .hist > span", timeout=TIMEOUT_MS)
    assert page.locator("#predictions .hist > span").count() == 6  # first to last non-empty bucket
    text = page.text_content("#predictions")
    assert "drifted" in text and "PSI 0.300" in text and "min" in text and "max" in text
    assert page.text_content("[data-meta='replicas'] b") == "1 up to date / 1 requested"
    assert page.locator("#events tr[data-event='autoscaler']").count() == 1  # a decision that asked for a change
    page.screenshot(path=str(artifacts / "regression.png"), full_page=True)
    assert page.errors == []


def test_the_history_window_can_be_widened(base: str, page: Any) -> None:
    page.goto(base + "/_berth/#/api/iris")
    page.wait_for_selector("#chart-rate .uplot", timeout=TIMEOUT_MS)
    with page.expect_request(lambda request: "window=6h" in request.url):
        page.click(".windows button[data-window='6h']")
    page.wait_for_selector(".windows button[data-window='6h'][aria-pressed='true']", timeout=TIMEOUT_MS)
    assert page.errors == []


def test_an_unknown_api_says_so_and_links_back(base: str, page: Any) -> None:
    page.goto(base + "/_berth/#/api/gone")
    page.wait_for_selector("text=No API named", timeout=TIMEOUT_MS)
    page.click("text=Back to every API")
    page.wait_for_selector("tr[data-api='iris']", timeout=TIMEOUT_MS)
