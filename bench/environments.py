"""Deploy -> first 200 of a project with a small requirement set, split into resolve / install / replica start.

    python bench/environments.py [--repeats 3] [--pypi]

Every deploy is the real CLI (`berth deploy <project>`, no --wait) against a throwaway BERTH_HOME and port
whose daemon is already up (`berth cluster up`), with UV_INDEX_URL and UV_CACHE_DIR in the deploy's own
environment (the CLI forwards them to the daemon's build). Scenarios, each repeat in order, one fresh uv
cache and two fresh homes per repeat:

  (a)  a project without requirements, first deploy (the baseline);
  (a2) the same, redeployed with a changed predictor.py (a new version rolls out: the baseline of (d));
  (b)  a project with requirements.txt, first deploy, cold uv cache (nothing downloaded yet);
  (d)  (b) redeployed with a changed predictor.py, same requirements.txt: its environment is reused;
  (e)  another project (another API) with the same requirements.txt, next to (b): reused too;
  (c)  (b)'s project in a second, new BERTH_HOME with the uv cache (b) left warm: the environment is built
       again, nothing downloaded.

The split comes from the `environment: ` progress lines `berth deploy` streams on stderr, each timestamped
as it arrives: resolve = "resolving ..." -> "resolved ..."; install = "creating environment ..." ->
"environment <key> ready ..." (the venv, the install, linking berth's site-packages); the rest of the deploy
command (CLI start, spec check, snapshot, the daemon's bookkeeping) is its wall time less those. Replica start
= the deploy command's exit -> the first 200 of the new version (polled every 20 ms; a rollout's old version
answers meanwhile, so the predictor returns a marker per version).

Default: an offline index on 127.0.0.1 (tests/process/package_index.py) of pure-Python wheels written here,
5 packages (a few hundred KiB each) depending on each other. --pypi: real PyPI and a small real set that berth's
own environment does not hold (berth does not install what its environment already satisfies).
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
from common import REPO, free_port

sys.path.insert(0, str(REPO))
from tests.process.package_index import PackageIndex

POLL = 0.02  # seconds between probes for the first 200
FIRST_200_TIMEOUT = 120.0

# (name, version, requires, KiB of incompressible payload): what the offline index serves.
LOCAL_PACKAGES: list[tuple[str, str, list[str], int]] = [
    ("bbench-core", "1.0", [], 8),
    ("bbench-core", "1.1", [], 400),
    ("bbench-units", "1.0", ["bbench-core>=1.1"], 200),
    ("bbench-io", "1.0", ["bbench-core"], 300),
    ("bbench-stats", "1.0", [], 8),
    ("bbench-stats", "2.0", ["bbench-core>=1.1", "bbench-units"], 450),
    ("bbench-report", "1.0", ["bbench-io", "bbench-stats>=2"], 250),
]
LOCAL_REQUIREMENTS = "bbench-report\nbbench-units>=1.0\n"
LOCAL_IMPORTS = ["bbench_core", "bbench_units", "bbench_io", "bbench_stats", "bbench_report"]
# None of these is in berth's own environment (checked with `uv pip list` in .venv).
PYPI_REQUIREMENTS = "tabulate\ntqdm\ntoolz\nmore-itertools\npython-slugify\n"
PYPI_IMPORTS = ["tabulate", "tqdm", "toolz", "more_itertools", "slugify"]

SPEC = """\
- name: {name}
  kind: RealtimeAPI
  predictor:
    type: python
    path: predictor.py
"""
PREDICTOR = """\
{imports}
MARKER = {marker!r}


class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        return {{"marker": MARKER}}
"""

SCENARIOS = {
    "a": "(a) no requirements, first deploy",
    "a2": "(a2) no requirements, redeploy",
    "b": "(b) requirements, cold uv cache",
    "c": "(c) requirements, warm uv cache, new home",
    "d": "(d) requirements, redeploy (reused)",
    "e": "(e) same requirements, another API",
}


def module_source(name: str, version: str, kib: int) -> str:
    """An importable module carrying `kib` KiB of incompressible data, so download and install take time."""
    blob = base64.b64encode(random.Random(f"{name}-{version}").randbytes(kib * 768)).decode()
    lines = textwrap.wrap(blob, 100)
    return f"__version__ = {version!r}\n_PAYLOAD = (\n" + "".join(f"    {line!r}\n" for line in lines) + ")\n"


@contextmanager
def local_index(folder: Path) -> Iterator[PackageIndex]:
    with PackageIndex(folder) as index:
        for name, version, requires, kib in LOCAL_PACKAGES:
            index.add(name, version, requires, module_source(name, version, kib))
        yield index


def write_project(folder: Path, name: str, marker: str, requirements: str | None, imports: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "berth.yaml").write_text(SPEC.format(name=name))
    (folder / "predictor.py").write_text(PREDICTOR.format(
        imports="\n".join(f"import {module}" for module in imports), marker=marker))
    if requirements is not None:
        (folder / "requirements.txt").write_text(requirements)
    return folder


@dataclass
class Deploy:
    """One `berth deploy`: its stderr lines with the second each arrived (from the command's start)."""

    scenario: str
    lines: list[tuple[float, str]] = field(default_factory=list)
    stdout: list[tuple[float, str]] = field(default_factory=list)  # the CLI's answer, once the daemon's came
    command: float = 0.0  # start -> the command's exit
    first_200: float = 0.0  # start -> the new version's first 200
    index_requests: int | None = None  # requests the local index answered during it (None: PyPI)

    def at(self, pattern: str) -> float | None:
        for when, line in self.lines:
            if re.search(pattern, line):
                return when
        return None

    def reported(self, pattern: str) -> float | None:
        for _, line in self.lines:
            found = re.search(pattern, line)
            if found:
                return float(found.group(1))
        return None

    @property
    def progress(self) -> list[str]:
        return [line for _, line in self.lines if line.startswith("environment: ")]

    @property
    def reused(self) -> bool:
        return any(re.search(r"\breus(ed|ing)\b", line) for line in self.progress)

    @property
    def built(self) -> bool:
        return self.at(r"^environment: environment \S+ ready in") is not None

    def span(self, begin: str, end: str) -> float:
        first, last = self.at(begin), self.at(end)
        return last - first if first is not None and last is not None else 0.0

    @property
    def resolve(self) -> float:
        return self.span(r"^environment: resolving ", r"^environment: resolved ")

    @property
    def install(self) -> float:
        return self.span(r"^environment: creating environment ", r"^environment: environment \S+ ready in")

    @property
    def venv(self) -> float:
        return self.span(r"^environment: creating environment ", r"^environment: (installing|running) ")

    @property
    def to_progress(self) -> float | None:
        """Start -> the first progress line: the CLI and the daemon before the build begins."""
        return self.at(r"^environment: ")

    @property
    def after_progress(self) -> float | None:
        """The last progress line -> the CLI printing the daemon's answer (the version applied)."""
        progress = [when for when, line in self.lines if line.startswith("environment: ")]
        return self.answered - progress[-1] if progress and self.answered is not None else None

    @property
    def answered(self) -> float | None:
        return self.stdout[0][0] if self.stdout else None

    @property
    def rest(self) -> float:
        return self.command - self.resolve - self.install

    @property
    def replica(self) -> float:
        return self.first_200 - self.command


class Home:
    """A throwaway BERTH_HOME and port, its daemon up, deploys carrying the index settings."""

    def __init__(self, variables: dict[str, str]) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="be-", dir="/tmp"))  # short: replica sockets live under it
        self.port = free_port()
        self.env = {**os.environ, **variables, "BERTH_HOME": str(self.home), "BERTH_PORT": str(self.port),
                    "PYTHONUNBUFFERED": "1"}
        self.env.pop("VIRTUAL_ENV", None)

    def cli(self, *args: str) -> None:
        result = subprocess.run([sys.executable, "-m", "berth", *args], env=self.env, capture_output=True,
                                text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"berth {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}")

    def envs(self) -> list[str]:
        folder = self.home / "envs"
        return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []

    def deploy(self, scenario: str, folder: Path, api: str, marker: str,
               index_requests: Callable[[], int | None]) -> Deploy:
        record = Deploy(scenario)
        before = index_requests()
        started = time.monotonic()
        process = subprocess.Popen([sys.executable, "-m", "berth", "deploy", str(folder)], env=self.env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        assert process.stdout is not None and process.stderr is not None
        stdout = record.stdout

        def read_stdout() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                stdout.append((time.monotonic() - started, line.rstrip("\n")))

        reader = threading.Thread(target=read_stdout, daemon=True)
        reader.start()
        for line in process.stderr:
            record.lines.append((time.monotonic() - started, line.rstrip("\n")))
        code = process.wait()
        record.command = time.monotonic() - started
        reader.join(timeout=10)
        if code != 0:
            text = "\n".join(line for _, line in [*stdout, *record.lines])
            raise RuntimeError(f"berth deploy {folder} exited {code}:\n{text}")
        record.first_200 = self._first_200(api, marker, started)
        after = index_requests()
        record.index_requests = after - before if after is not None and before is not None else None
        return record

    def _first_200(self, api: str, marker: str, started: float) -> float:
        url = f"http://127.0.0.1:{self.port}/{api}"
        deadline = time.monotonic() + FIRST_200_TIMEOUT
        with httpx.Client(timeout=5) as client:
            while time.monotonic() < deadline:
                try:
                    response = client.post(url, json={})
                    if response.status_code == 200 and response.json().get("marker") == marker:
                        return time.monotonic() - started
                except (httpx.HTTPError, ValueError):
                    pass
                time.sleep(POLL)
        raise RuntimeError(f"{url} did not answer 200 with marker {marker} within {FIRST_200_TIMEOUT:g}s")

    def close(self) -> None:
        subprocess.run([sys.executable, "-m", "berth", "cluster", "down"], env=self.env, capture_output=True,
                       timeout=120)
        shutil.rmtree(self.home, ignore_errors=True)


def one_repeat(repeat: int, work: Path, requirements: str, imports: list[str], base: dict[str, str],
               index_requests: Callable[[], int | None], verbose: bool) -> list[Deploy]:
    cache = work / f"uv-cache-{repeat}"  # fresh: (b) starts cold
    variables = {**base, "UV_CACHE_DIR": str(cache)}
    projects = work / f"projects-{repeat}"
    records: list[Deploy] = []
    homes: list[Home] = []

    def run(home: Home, scenario: str, name: str, folder: str, version: int, reqs: str | None) -> Deploy:
        marker = f"{name}-{repeat}-v{version}"
        project = write_project(projects / folder, name, marker, reqs, imports if reqs is not None else [])
        record = home.deploy(scenario, project, name, marker, index_requests)
        records.append(record)
        if verbose:
            print(f"  [{repeat}] {scenario}: deploy {record.command:.2f}s, first 200 {record.first_200:.2f}s")
            for when, line in record.lines:
                print(f"      {when:7.3f}  {line}")
        return record

    try:
        first = Home(variables)
        homes.append(first)
        first.cli("cluster", "up")
        run(first, "a", "plain", "plain", 1, None)
        run(first, "a2", "plain", "plain", 2, None)
        cold = run(first, "b", "reqs", "reqs", 1, requirements)
        reused = run(first, "d", "reqs", "reqs", 2, requirements)
        other = run(first, "e", "reqs2", "reqs2", 1, requirements)
        second = Home(variables)
        homes.append(second)
        second.cli("cluster", "up")
        warm = run(second, "c", "reqs", "reqs-again", 1, requirements)
        problems = [f"({r.scenario}) built nothing" for r in (cold, warm) if not r.built]
        problems += [f"({r.scenario}) did not reuse" for r in (reused, other) if not r.reused or r.built]
        if len(first.envs()) != 1:
            problems.append(f"first home holds {len(first.envs())} environments, not 1")
        if problems:
            print(f"  [{repeat}] WARNING: " + "; ".join(problems))
        return records
    finally:
        for home in homes:
            home.close()
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(projects, ignore_errors=True)


def stats(values: list[float]) -> str:
    if not values:
        return f"{'-':>18}"
    return f"{statistics.median(values):6.2f} [{min(values):4.2f}-{max(values):4.2f}]"


def med(values: list[float | None], spec: str = ".2f") -> str:
    known = [value for value in values if value is not None]
    return format(statistics.median(known), spec) if known else "-"


def report(records: list[Deploy], repeats: int) -> None:
    columns: list[tuple[str, Callable[[Deploy], float]]] = [
        ("deploy cmd", lambda r: r.command), ("resolve", lambda r: r.resolve), ("install", lambda r: r.install),
        ("rest of cmd", lambda r: r.rest), ("replica start", lambda r: r.replica),
        ("deploy->200", lambda r: r.first_200)]
    print(f"\nseconds, median [min-max] of {repeats} repeat(s); install = venv + install + link")
    print(f"{'scenario':<43}" + "".join(f"{title:>19}" for title, _ in columns))
    by: dict[str, list[Deploy]] = {key: [r for r in records if r.scenario == key] for key in SCENARIOS}
    for key, label in SCENARIOS.items():
        rows = by[key]
        print(f"{label:<43}" + "".join(f"{stats([get(r) for r in rows]):>19}" for _, get in columns))

    print("\nthe deploy command's timeline, medians (s from its start): its first progress line, the daemon's answer "
          "(the CLI's first stdout line), exit; ready->answer = last progress line -> answer")
    print(f"{'scenario':<43}{'1st progress':>13}{'answer':>9}{'exit':>8}{'ready->answer':>15}{'index reqs':>12}"
          f"{'said resolve':>14}{'said build':>12}")
    for key, label in SCENARIOS.items():
        rows = by[key]
        print(f"{label:<43}{med([r.to_progress for r in rows]):>13}{med([r.answered for r in rows]):>9}"
              f"{med([r.command for r in rows]):>8}{med([r.after_progress for r in rows]):>15}"
              f"{med([None if r.index_requests is None else float(r.index_requests) for r in rows], '.0f'):>12}"
              f"{med([r.reported(r'resolved .* in ([0-9.]+)s') for r in rows], '.1f'):>14}"
              f"{med([r.reported(r'environment [0-9a-f]+ ready in ([0-9.]+)s') for r in rows], '.1f'):>12}")
    sample = by["b"][-1]
    print("  progress lines of the last (b):")
    for when, line in sample.lines:
        print(f"    {when:7.3f}s  {line}")

    def median(key: str, get: Callable[[Deploy], float]) -> float:
        return statistics.median(get(r) for r in by[key])

    def first_200(r: Deploy) -> float:
        return r.first_200

    def command(r: Deploy) -> float:
        return r.command

    print("\nagainst the no-requirements baseline (medians of deploy -> first 200; deploy command alone):")
    for key, base in (("d", "a2"), ("e", "a"), ("c", "a"), ("b", "a")):
        added = median(key, first_200) - median(base, first_200)
        ratio = median(key, first_200) / median(base, first_200)
        added_cmd = median(key, command) - median(base, command)
        print(f"  {SCENARIOS[key]:<43} vs ({base}): {added:+6.2f}s ({ratio:.2f}x); deploy command {added_cmd:+6.2f}s")
    overhead = median("d", first_200) - median("a2", first_200)
    paired = [d.first_200 - a.first_200 for d, a in zip(by["d"], by["a2"], strict=True)]
    print(f"\nkey figure: a second deploy of the same requirements adds {overhead:+.2f}s to deploy -> first 200 "
          f"(per-repeat differences: {', '.join(f'{p:+.2f}' for p in paired)}); budget: well under 1 s: "
          f"{'ok' if overhead < 1.0 else 'MISSED'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pypi", action="store_true",
                        help=f"real PyPI and {PYPI_REQUIREMENTS.split()} instead of the offline index")
    parser.add_argument("--verbose", action="store_true", help="print each deploy's stderr as it was timed")
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"machine: {psutil.cpu_count()} cores, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          f"Python {sys.version.split()[0]}; {args.repeats} repeat(s)")
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="berth-envs-bench-"))
    records: list[Deploy] = []
    try:
        if args.pypi:
            requirements, imports = PYPI_REQUIREMENTS, PYPI_IMPORTS
            base = {"UV_NO_CONFIG": "1"}
            print(f"index: PyPI (UV_DEFAULT_INDEX unless set); requirements.txt: {requirements.split()}")
            for repeat in range(args.repeats):
                records += one_repeat(repeat, work, requirements, imports, base, lambda: None, args.verbose)
        else:
            requirements, imports = LOCAL_REQUIREMENTS, LOCAL_IMPORTS
            with local_index(work / "wheels") as index:
                sizes = sum(wheel.path.stat().st_size for wheel in index.wheels)
                print(f"index: local, {index.url}: {len(index.wheels)} wheels, {sizes / 2**20:.1f} MiB; "
                      f"requirements.txt: {requirements.split()} (5 packages to install)")
                base = {"UV_INDEX_URL": index.url, "UV_NO_CONFIG": "1"}
                for repeat in range(args.repeats):
                    records += one_repeat(repeat, work, requirements, imports, base,
                                          lambda: len(index.requests), args.verbose)
        report(records, args.repeats)
        print(f"\nbench time {time.monotonic() - started:.0f}s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
