"""The gateway's request log: its JSON lines, the spec field that samples it, its size cap."""

import json
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from berth.config.schema import RealtimeAPI
from berth.gateway.requestlog import RequestLog, format_line


def spec(networking: dict[str, object]) -> RealtimeAPI:
    return RealtimeAPI.model_validate({"name": "t", "kind": "RealtimeAPI", "networking": networking,
                                       "predictor": {"type": "python", "path": "p.py"}})


def test_the_sample_rate_defaults_to_every_request_and_is_a_fraction() -> None:
    assert spec({}).networking.request_log_sample_rate == 1.0
    assert spec({"request_log_sample_rate": 0}).networking.request_log_sample_rate == 0.0
    for bad in (1.01, -0.5):
        with pytest.raises(ValidationError, match=r"from 0 \(none\) to 1 \(every request\).*got"):
            spec({"request_log_sample_rate": bad})


def test_a_line_is_json_with_every_field_and_odd_bytes_escaped() -> None:
    line = format_line(("api", 10.0, b'id"1\\', b"GET", b"/api/\xff\n", 200, 0.0125, "r-1", None), 1000.0)
    assert line.endswith("\n") and line.count("\n") == 1
    assert json.loads(line) == {"ts": 1010.0, "request_id": 'id"1\\', "api": "api", "method": "GET",
                                "path": "/api/\xff\n", "status": 200, "seconds": 0.0125, "replica": "r-1",
                                "reason": None}


def test_a_full_file_is_rotated_once(tmp_path: Path) -> None:
    log = RequestLog(tmp_path, 2, max_bytes=1000)
    entry = ("api", time.monotonic(), b"id", b"POST", b"/api", 200, 0.001, "r", None)
    size = len(format_line(entry, 0.0))
    for _ in range(3):
        log.pending = [entry] * (600 // size)
        log.flush()
    current, rotated = log.path("api"), log.path("api").with_name("requests-2.log.1")
    assert rotated.exists() and current.stat().st_size <= 1000 and rotated.stat().st_size <= 1000
    assert len(list((tmp_path / "api").iterdir())) == 2  # one rotation kept, no more


def test_an_unwritable_log_drops_its_lines_and_writes_again_once_it_can(tmp_path: Path) -> None:
    (tmp_path / "api").write_text("a file where the API's folder should be")
    log = RequestLog(tmp_path, 0)
    entry = ("api", time.monotonic(), b"id", b"POST", b"/api", 200, 0.001, None, None)
    log.pending = [entry]
    log.flush()  # no exception: the worker keeps serving
    assert not log.pending
    (tmp_path / "api").unlink()
    log.pending = [entry]
    log.flush()
    assert len(log.path("api").read_text().splitlines()) == 1
