"""The dashboard's routes over a fake source, served by a real uvicorn on a real port."""

import importlib
import json
import re
import time
from collections.abc import Iterator

import httpx
import pytest

from berth.dashboard.assets import load_assets
from tests.browser.fake_source import FakeSource, serve

# The module (the package's `routes` attribute is the function of the same name).
dashboard_routes = importlib.import_module("berth.dashboard.routes")


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


def test_page_refers_to_versioned_assets_served_with_their_types_and_caching(base: str) -> None:
    page = httpx.get(base + "/_berth/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["cache-control"] == "no-cache"
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assets = re.findall(r'(?:src|href)="(/_berth/static/[^"]+)"', page.text)
    assert len(assets) == 4, page.text
    assert not re.search(r'(?:src|href)="(?:https?:)?//', page.text), "nothing may be loaded from elsewhere"
    types = {"uPlot.min.css": "text/css", "dashboard.css": "text/css", "uPlot.iife.min.js": "text/javascript",
             "dashboard.js": "text/javascript"}
    for url in assets:
        response = httpx.get(base + url)
        name = url.split("/")[-1].split("?")[0]
        assert response.status_code == 200, url
        assert response.headers["content-type"].startswith(types[name]), url
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert response.headers["x-content-type-options"] == "nosniff"
        again = httpx.get(base + url, headers={"If-None-Match": response.headers["etag"]})
        assert again.status_code == 304 and again.content == b""


def test_an_asset_without_its_current_hash_is_revalidated_and_an_unknown_one_is_404(base: str) -> None:
    plain = httpx.get(base + "/_berth/static/dashboard.js")
    assert plain.status_code == 200 and plain.headers["cache-control"] == "no-cache"
    stale = httpx.get(base + "/_berth/static/dashboard.js?v=0000")
    assert stale.headers["cache-control"] == "no-cache"
    assert httpx.get(base + "/_berth/static/nothing.js").status_code == 404
    assert httpx.get(base + "/_berth/static/index.html").status_code == 404  # the page has its own route
    assert httpx.get(base + "/_berth/static/..%2F__init__.py").status_code == 404
    head = httpx.head(base + "/_berth/static/uPlot.iife.min.js")
    assert head.status_code == 200 and head.content == b""
    assert httpx.get(base + "/_berth/static/uPlot.LICENSE").headers["content-type"].startswith("text/plain")


def test_overview_lists_every_api_with_its_last_hour_and_drift(base: str) -> None:
    body = httpx.get(base + "/_berth/api/overview").json()
    assert [api["name"] for api in body["apis"]] == ["iris", "price"]
    iris = body["apis"][0]
    assert iris["metrics"] == {"2XX": 120, "4XX": 3, "5XX": 1, "avg_request_seconds": 0.012, "requests": 124}
    assert iris["drift"] == {"psi": 0.04, "verdict": "stable"}
    assert len(iris["recent"]["count"]) in (60, 61) and iris["recent"]["p99"] == 0.040
    assert body["apis"][1]["drift"]["verdict"] == "drifted"


def test_api_detail_has_replicas_versions_events_series_and_predictions(base: str) -> None:
    body = httpx.get(base + "/_berth/api/apis/iris?window=6h").json()
    assert body["api"]["name"] == "iris" and len(body["api"]["replicas"]) == 2
    assert [e["kind"] for e in body["api"]["events"]] == ["deploy", "scale", "replica_failed"]
    assert 170 <= len(body["series"]) <= 181  # three hours of minute buckets in the fake
    assert body["predictions"]["summary"]["classes"]["cat"] == 70
    assert [d["request"] for d in body["api"]["autoscaler"]] == [2]  # the decision that changed nothing is left out


def test_api_detail_refuses_unknown_names_and_windows(base: str) -> None:
    missing = httpx.get(base + "/_berth/api/apis/nope")
    assert missing.status_code == 404 and "no API named 'nope'" in missing.json()["error"]
    bad = httpx.get(base + "/_berth/api/apis/iris?window=2h")
    assert bad.status_code == 400 and "15m, 1h, 6h, 24h, 14d" in bad.json()["error"]


def test_values_that_are_not_json_become_null(source: FakeSource, base: str) -> None:
    source.apis["iris"]["metrics"]["avg_request_seconds"] = float("nan")
    text = httpx.get(base + "/_berth/api/overview").text
    assert "NaN" not in text and json.loads(text)["apis"][0]["metrics"]["avg_request_seconds"] is None


def _events(lines: Iterator[str], wanted: int) -> list[tuple[str, dict]]:
    events: list[tuple[str, dict]] = []
    kind = ""
    for line in lines:
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            events.append((kind, json.loads(line[6:])))
            if len(events) >= wanted:
                break
    return events


def test_stream_pushes_the_overview_and_the_selected_api_and_sees_changes(source: FakeSource, base: str,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dashboard_routes, "STREAM_INTERVAL", 0.05)
    with httpx.stream("GET", base + "/_berth/api/stream?api=iris", timeout=10) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        lines = response.iter_lines()
        first = _events(lines, 2)
        assert [kind for kind, _ in first] == ["overview", "api"]
        assert first[1][1]["api"]["name"] == "iris" and first[1][1]["series"]  # the tail of the series
        source.apis["iris"]["metrics"]["2XX"] = 500
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            kind, data = _events(lines, 1)[0]
            if kind == "overview" and data["apis"][0]["metrics"]["2XX"] == 500:
                break
        else:
            raise AssertionError("the stream never showed the new count")


def test_stream_of_a_missing_api_says_so(base: str) -> None:
    with httpx.stream("GET", base + "/_berth/api/stream?api=gone", timeout=10) as response:
        assert [kind for kind, _ in _events(response.iter_lines(), 2)] == ["overview", "missing"]


def test_streams_are_bounded_and_a_closed_one_is_given_back(base: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dashboard_routes, "MAX_STREAMS", 1)
    monkeypatch.setattr(dashboard_routes, "STREAM_INTERVAL", 0.05)
    with httpx.stream("GET", base + "/_berth/api/stream", timeout=10) as response:
        lines = response.iter_lines()  # kept: a dropped iterator would close the connection
        _events(lines, 1)
        refused = httpx.get(base + "/_berth/api/stream", timeout=10)
        assert refused.status_code == 503 and "streams are open already" in refused.json()["error"]
    # The client went away: the server notices and the slot comes back.
    deadline = time.monotonic() + 10
    while True:
        with httpx.stream("GET", base + "/_berth/api/stream", timeout=10) as response:
            if response.status_code == 200:
                break
        assert time.monotonic() < deadline, "a closed stream never gave its slot back"
        time.sleep(0.05)


def test_stream_ends_after_its_lifetime(base: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dashboard_routes, "STREAM_LIFETIME", 0.2)
    monkeypatch.setattr(dashboard_routes, "STREAM_INTERVAL", 0.05)
    with httpx.stream("GET", base + "/_berth/api/stream", timeout=10) as response:
        body = b"".join(response.iter_bytes())  # returns only because the server ends the stream
    assert body.startswith(b"retry: 2000") and b"event: overview" in body


def test_one_overview_serves_every_reader_within_a_second(source: FakeSource) -> None:
    now = [1000.0]
    board = dashboard_routes.Dashboard(source, lambda: now[0], load_assets())
    first = board.overview()
    now[0] += 0.5
    assert board.overview() is first and source.calls.count("overview") == 1
    now[0] += 0.6
    assert board.overview() is not first and source.calls.count("overview") == 2


def test_head_of_the_stream_starts_nothing(source: FakeSource, base: str) -> None:
    response = httpx.head(base + "/_berth/api/stream", timeout=5)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    assert "overview" not in source.calls


def test_the_stream_leaves_the_spec_out(base: str) -> None:
    with httpx.stream("GET", base + "/_berth/api/stream?api=iris", timeout=10) as response:
        (_, _overview), (_, detail) = _events(response.iter_lines(), 2)
    assert "spec" not in detail["api"] and detail["api"]["spec_file"] == "berth.yaml"


def test_text_assets_are_sent_gzipped_to_a_client_that_accepts_it(base: str) -> None:
    plain = httpx.get(base + "/_berth/static/uPlot.iife.min.js", headers={"Accept-Encoding": "identity"})
    packed = httpx.get(base + "/_berth/static/uPlot.iife.min.js", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in plain.headers
    assert packed.headers["content-encoding"] == "gzip" and packed.headers["vary"] == "Accept-Encoding"
    assert packed.content == plain.content  # httpx decodes it
    assert int(packed.headers["content-length"]) < len(plain.content) / 2
