"""Serving overhead of berth, measured side by side in one run.

    python bench/overhead.py [--duration 10] [--rounds 3] [--scrape]

(a) the trivial predictor in one bare uvicorn + Starlette process,
(b) the same predictor on its berth replica, hit directly (the replica runtime on a TCP port),
(c) the same predictor through the berth gateway (one gateway worker + replica, as `berth deploy` runs it),
(d) the same through a second instance started with `cluster up --gateway-workers 2`,
(k) the same predictor deployed a second time on (c)'s instance with `networking.api_keys: required`,
    every request carrying a valid key (`Authorization: Bearer`): the cost of checking keys, beside (c).
wrk (its own process) loads each at 1 and 32 connections; rounds are interleaved and the medians
reported, with ratios to (a). With --scrape, (c) and (d) are measured a second time in each round while
a scraper polls each instance's /_berth/metrics every second (rows "+ scrape"), as Prometheus would.
Then: `berth deploy --wait` of the iris example to its first 200
(daemon already up), and the idle RSS of the supervisor, daemon and gateway and of a replica.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil
from common import BENCH, REPO, BerthInstance, WrkResult, free_port, median_result, stop, wait_ok, wrk

from berth.config import load_spec


def start_bare() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, str(BENCH / "bare_server.py"), "--project", str(BENCH / "trivial"),
                                "--endpoint", "/trivial", "--port", str(port)])
    url = f"http://127.0.0.1:{port}/trivial"
    wait_ok(url)
    return process, url


def start_direct(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    spec = load_spec(BENCH / "trivial").apis[0]
    spec_file = workdir / "spec.json"
    spec_file.write_text(spec.model_dump_json())
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "berth.runtime", "--spec", str(spec_file), "--project",
                                str(BENCH / "trivial"), "--socket-dir", str(workdir / "sock"), "--port", str(port)])
    url = f"http://127.0.0.1:{port}/"
    wait_ok(url)
    return process, url


class Scraper:
    """Polls /_berth/metrics every second while `active`, as a Prometheus scraping at 1 s would."""

    def __init__(self, urls: list[str], interval: float = 1.0) -> None:
        self.urls = urls
        self.interval = interval
        self.active = threading.Event()
        self.seconds: list[float] = []
        self.errors = 0
        self.bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stop.wait(self.interval):
                if not self.active.is_set():
                    continue
                for url in self.urls:
                    started = time.perf_counter()
                    try:
                        response = client.get(url)
                        response.raise_for_status()
                    except httpx.HTTPError:
                        self.errors += 1
                        continue
                    self.seconds.append(time.perf_counter() - started)
                    self.bytes = len(response.content)


def cpu_seconds(pids: list[int]) -> float:
    return sum(sum(psutil.Process(pid).cpu_times()[:2]) for pid in pids)


def scrape_cost(instance: BerthInstance, scrapes: int = 50) -> dict[str, float]:
    """CPU milliseconds one scrape costs the daemon (which renders it) and the gateway (which passes it on):
    back-to-back scrapes, less the same time spent idle (the daemon's own polling)."""
    info = json.loads(instance.cli("cluster", "status", "-o", "json"))
    groups = {"daemon": [int(info["pid"])], "gateway": [int(pid) for pid in info["gateway_pids"]]}
    url = instance.url("/_berth/metrics")
    with httpx.Client() as client:
        before = {name: cpu_seconds(pids) for name, pids in groups.items()}
        started = time.perf_counter()
        for _ in range(scrapes):
            client.get(url).raise_for_status()
        elapsed = time.perf_counter() - started
        busy = {name: cpu_seconds(pids) - before[name] for name, pids in groups.items()}
    before = {name: cpu_seconds(pids) for name, pids in groups.items()}
    time.sleep(elapsed)
    idle = {name: cpu_seconds(pids) - before[name] for name, pids in groups.items()}
    return {name: max(0.0, busy[name] - idle[name]) / scrapes * 1000 for name in groups}


def deploy_keyed(instance: BerthInstance, workdir: Path) -> tuple[str, dict[str, str]]:
    """The trivial predictor again, as `trivial-keyed` with api_keys required; its URL and a key's header."""
    project = workdir / "keyed"
    project.mkdir()
    shutil.copy(BENCH / "trivial" / "predictor.py", project / "predictor.py")
    (project / "berth.yaml").write_text("- name: trivial-keyed\n  kind: RealtimeAPI\n  predictor:\n"
                                        "    type: python\n    path: predictor.py\n"
                                        "  networking:\n    api_keys: required\n")
    instance.cli("deploy", str(project), "--wait")
    key = json.loads(instance.cli("key", "create", "trivial-keyed", "--name", "bench", "-o", "json"))["key"]
    headers, url = {"Authorization": f"Bearer {key}"}, instance.url("/trivial-keyed")
    assert httpx.post(url, json={"name": "probe"}).status_code == 401
    assert httpx.post(url, json={"name": "probe"}, headers=headers).status_code == 200
    return url, headers


def measure(urls: dict[str, str], duration: float, rounds: int, scraper: Scraper | None = None,
            headers: dict[str, dict[str, str]] | None = None) -> dict[tuple[str, int], WrkResult]:
    """Names ending in "+s" are measured with the scraper on; `headers` are sent to the named setups."""
    headers = headers or {}
    runs: dict[tuple[str, int], list[WrkResult]] = {}
    for _ in range(rounds):
        for connections in (1, 32):
            for name, url in urls.items():
                wrk(url, connections, 1, headers=headers.get(name))  # warm-up: connections, caches, thread pool
                if scraper is not None and name.endswith("+s"):
                    scraper.active.set()
                try:
                    runs.setdefault((name, connections), []).append(
                        wrk(url, connections, duration, headers=headers.get(name)))
                finally:
                    if scraper is not None:
                        scraper.active.clear()
    return {key: median_result(value) for key, value in runs.items()}


ROWS = (("a", "(a) bare uvicorn + Starlette"), ("b", "(b) berth replica, direct"),
        ("c", "(c) berth gateway -> replica"), ("k", "(k) (c) with api_keys: required"),
        ("c+s", "(c) + scrape every 1 s"), ("d", "(d) 2 gateway workers"),
        ("d+s", "(d) + scrape every 1 s"))


def report(results: dict[tuple[str, int], WrkResult]) -> None:
    print(f"\n{'setup':<34}{'conns':>6}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'x (a) req/s':>13}{'+p50 ms':>9}"
          f"{'x (a) p99':>11}{'errors':>8}")
    for connections in (1, 32):
        base = results[("a", connections)]
        for name, label in ROWS:
            if (name, connections) not in results:
                continue
            r = results[(name, connections)]
            print(f"{label:<34}{connections:>6}{r.rps:>10.0f}{r.p50_ms:>9.3f}{r.p99_ms:>9.3f}"
                  f"{r.rps / base.rps:>13.2f}{r.p50_ms - base.p50_ms:>+9.3f}{r.p99_ms / base.p99_ms:>11.2f}"
                  f"{r.errors:>8}")
    c32, a32, c1, a1 = results[("c", 32)], results[("a", 32)], results[("c", 1)], results[("a", 1)]
    print(f"\nbudget: (c) >= 0.7x (a) req/s at 32 connections: {c32.rps / a32.rps:.2f}x "
          f"{'ok' if c32.rps >= 0.7 * a32.rps else 'MISSED'}; p99 no worse: {c32.p99_ms / a32.p99_ms:.2f}x "
          f"{'ok' if c32.p99_ms <= a32.p99_ms else 'MISSED'}")
    print(f"budget: <= 0.5 ms added at p50, 1 connection: {c1.p50_ms - a1.p50_ms:+.3f} ms "
          f"{'ok' if c1.p50_ms - a1.p50_ms <= 0.5 else 'MISSED'}")
    for connections in (1, 32):
        if ("k", connections) in results:
            off, on = results[("c", connections)], results[("k", connections)]
            print(f"api keys required vs not, {connections} connection(s): req/s {on.rps / off.rps:.3f}x, "
                  f"p50 {on.p50_ms / off.p50_ms:.3f}x ({on.p50_ms - off.p50_ms:+.3f} ms), "
                  f"p99 {on.p99_ms / off.p99_ms:.3f}x ({on.p99_ms - off.p99_ms:+.3f} ms)")
    for connections in (1, 32):
        if ("c+s", connections) in results:
            off, on = results[("c", connections)], results[("c+s", connections)]
            print(f"scraper at 1 s, {connections} connection(s): req/s {on.rps / off.rps:.3f}x, "
                  f"p50 {on.p50_ms - off.p50_ms:+.3f} ms, p99 {on.p99_ms - off.p99_ms:+.3f} ms")


def report_scraper(scraper: Scraper) -> None:
    if scraper.seconds:
        ordered = sorted(scraper.seconds)
        print(f"scrapes: {len(ordered)}, errors {scraper.errors}; scrape time median "
              f"{statistics.median(ordered) * 1000:.1f} ms, max {ordered[-1] * 1000:.1f} ms; "
              f"exposition {scraper.bytes / 1024:.1f} KiB")


def cold_start(instance: BerthInstance, rounds: int) -> list[float]:
    """`berth deploy --wait` of the iris example to its first 200, with the daemon already up."""
    iris = REPO / "examples" / "iris-classifier"
    sample = json.loads((iris / "sample.json").read_text())
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        instance.cli("deploy", str(iris), "--wait")
        response = httpx.post(instance.url("/iris-classifier"), json=sample)
        assert response.status_code == 200, response.text
        times.append(time.perf_counter() - started)
        instance.cli("delete", "iris-classifier")
    return times


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scrape", action="store_true",
                        help="also measure the gateway rows with /_berth/metrics scraped every second")
    args = parser.parse_args()
    print(f"machine: {psutil.cpu_count()} cores; wrk -t1; {args.rounds} interleaved rounds of {args.duration:g}s")
    instance, two_workers = BerthInstance(), BerthInstance()
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as workdir:
        try:
            bare, bare_url = start_bare()
            processes.append(bare)
            direct, direct_url = start_direct(Path(workdir))
            processes.append(direct)
            instance.cli("deploy", str(BENCH / "trivial"), "--wait")
            gateway_url = instance.url("/trivial")
            wait_ok(gateway_url)
            two_workers.cli("cluster", "up", "--gateway-workers", "2")
            two_workers.cli("deploy", str(BENCH / "trivial"), "--wait")
            wait_ok(two_workers.url("/trivial"))
            keyed_url, key_header = deploy_keyed(instance, Path(workdir))
            urls = {"a": bare_url, "b": direct_url, "c": gateway_url, "k": keyed_url, "d": two_workers.url("/trivial")}
            scraper = Scraper([instance.url("/_berth/metrics"), two_workers.url("/_berth/metrics")])
            if args.scrape:
                urls.update({"c+s": urls["c"], "d+s": urls["d"]})
            with scraper:
                results = measure(urls, args.duration, args.rounds, scraper if args.scrape else None,
                                  headers={"k": key_header})
            report(results)
            report_scraper(scraper)
            if args.scrape:
                cost = scrape_cost(instance)
                print("CPU per scrape: " + ", ".join(f"{name} {ms:.2f} ms" for name, ms in cost.items()))
            for process in processes:
                stop(process)
            two_workers.close()
            times = cold_start(instance, 3)
            print(f"\ncold start: `berth deploy --wait` of examples/iris-classifier to its first 200 "
                  f"(daemon up): median {statistics.median(times):.2f}s (runs: "
                  f"{', '.join(f'{t:.2f}' for t in times)}; budget 1.5s)")
            info = json.loads(instance.cli("cluster", "status", "-o", "json"))
            replica_pid = int(instance.get("trivial")["replicas"][0]["pid"])  # type: ignore[index]
            time.sleep(1)  # idle means idle: let the last requests' buffers go
            parts = {"supervisor": rss_mb(info["supervisor_pid"]), "daemon": rss_mb(info["pid"]),
                     "gateway": sum(rss_mb(pid) for pid in info["gateway_pids"])}
            each = ", ".join(f"{k} {v:.1f}" for k, v in parts.items())
            print(f"idle RSS: supervisor + daemon + gateway {sum(parts.values()):.1f} MB (budget 120 MB: {each}); "
                  f"trivial replica {rss_mb(replica_pid):.1f} MB")
        finally:
            for process in processes:
                stop(process)
            instance.close()
            two_workers.close()


if __name__ == "__main__":
    main()
