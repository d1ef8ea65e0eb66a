"""The dashboard's page weight and the daemon's memory with the dashboard open.

    python bench/dashboard.py [--seconds 60] [--rate 20] [--screenshot docs/dashboard.png]

Starts a throwaway instance, deploys a classification API with prediction monitoring, sends it
--rate requests per second in the background, then opens /_berth/ in Debian's headless chromium
(Playwright) and the API's page, kept open --seconds while it updates live. Prints:
  - page weight: the bytes of every response the page loaded (page, CSS, JS, JSON), decoded and as sent
    (text assets go gzipped), the event stream apart, as bytes per second measured on a second
    connection; and the static files in the package;
  - the daemon's RSS (pid from `berth cluster status -o json`) before the page was opened, and its
    largest and last value while it was open, sampled every 5 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from common import BerthInstance

from berth.dashboard.assets import load_assets

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SPEC = """- name: iris
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
PREDICTOR = """class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        return ["setosa", "versicolor", "virginica"][int(payload) % 3]
"""


class Traffic:
    """Posts to the API at about `rate` requests per second until stopped (a 4XX now and then)."""

    def __init__(self, url: str, rate: float) -> None:
        self.url, self.rate = url, rate
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as http:
            sent = 0
            while not self.stopped.is_set():
                body = b"{oops" if sent % 50 == 49 else str(sent).encode()
                http.post(self.url, content=body, headers={"content-type": "application/json"})
                sent += 1
                self.stopped.wait(1 / self.rate)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)


def daemon_rss(instance: BerthInstance) -> int:
    info = json.loads(instance.cli("cluster", "status", "-o", "json"))
    return int(psutil.Process(int(info["pid"])).memory_info().rss)


def stream_rate(base: str, seconds: float = 10.0) -> float:
    """Bytes per second of the event stream of the API page (overview and the API, every 2 s)."""
    received = 0
    started = time.monotonic()
    with httpx.stream("GET", base + "/_berth/api/stream?api=iris", timeout=30) as response:
        for chunk in response.iter_bytes():
            received += len(chunk)
            if time.monotonic() - started >= seconds:
                break
    return received / (time.monotonic() - started)


def open_dashboard(instance: BerthInstance, seconds: float, screenshot: Path | None) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    base = instance.url("")
    weights: dict[str, tuple[int, int]] = {}  # url -> (bytes decoded, bytes sent)
    rss: list[int] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})

        def loaded(response: Any) -> None:
            if "text/event-stream" in response.headers.get("content-type", ""):
                return  # never finishes; measured apart
            with contextlib.suppress(Exception):  # a response the page dropped (navigation): nothing to count
                body, sent = len(response.body()), response.request.sizes()["responseBodySize"]
                before = weights.get(response.url, (0, 0))
                weights[response.url] = (before[0] + body, before[1] + sent)

        page.on("response", loaded)
        page.goto(base + "/_berth/")
        page.wait_for_selector("tr[data-api='iris']")
        page.goto(base + "/_berth/#/api/iris")
        page.wait_for_selector("#chart-rate .uplot")
        ends = time.monotonic() + seconds
        while time.monotonic() < ends:
            rss.append(daemon_rss(instance))
            time.sleep(min(5.0, max(0.0, ends - time.monotonic())))
        rss.append(daemon_rss(instance))
        if screenshot is not None:
            page.click(".windows button[data-window='15m']")  # a fresh instance's history fills 15 minutes best
            page.wait_for_selector(".windows button[data-window='15m'][aria-pressed='true']")
            page.wait_for_timeout(1000)  # the charts redraw with the window's data
            page.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    return {"weights": weights, "rss": rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the page stays open (default 60)")
    parser.add_argument("--rate", type=float, default=20.0, help="background requests per second (default 20)")
    parser.add_argument("--screenshot", type=Path, default=None, help="save the API page's screenshot here")
    args = parser.parse_args()

    instance = BerthInstance()
    try:
        project = Path(tempfile.mkdtemp(prefix="bd-"))
        (project / "berth.yaml").write_text(SPEC)
        (project / "predictor.py").write_text(PREDICTOR)
        instance.cli("deploy", "--wait", str(project))
        with Traffic(instance.url("/iris"), args.rate):
            time.sleep(5)  # the daemon settles after the deploy before the baseline is read
            before = daemon_rss(instance)
            seen = open_dashboard(instance, args.seconds, args.screenshot)
            per_second = stream_rate(instance.url(""))
        report(seen, before, per_second, args.seconds)
    finally:
        instance.close()


def report(seen: dict[str, Any], before: int, per_second: float, seconds: float) -> None:
    mib = 1024 * 1024
    static = load_assets()
    print("page weight (every response the page loaded: decoded, and as sent over the wire):")
    for url, (size, sent) in sorted(seen["weights"].items(), key=lambda item: -item[1][0]):
        print(f"  {size:>9,} B  {sent:>9,} B sent  {url.split('/_berth', 1)[-1]}")
    total = sum(size for size, _ in seen["weights"].values())
    sent = sum(sent for _, sent in seen["weights"].values())
    print(f"  {total:>9,} B  {sent:>9,} B sent  total ({total / 1024:.1f} KiB; {sent / 1024:.1f} KiB sent)")
    print(f"  static files in the package: {static.total_bytes():,} B, gzipped {static.total_bytes(gzipped=True):,} B")
    print(f"  event stream of the API page: {per_second:,.0f} B/s ({per_second * 60 / 1024:.0f} KiB a minute)")
    rss = seen["rss"]
    print(f"daemon RSS: {before / mib:.1f} MiB before the page was opened; with it open for {seconds:.0f} s: "
          f"max {max(rss) / mib:.1f} MiB, last {rss[-1] / mib:.1f} MiB ({(rss[-1] - before) / mib:+.1f} MiB)")


if __name__ == "__main__":
    main()
