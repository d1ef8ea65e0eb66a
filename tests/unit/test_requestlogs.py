"""Reading the gateway's request logs: merged by time over workers, the last lines, then what is appended,
through a rotation and a line still being written."""

from __future__ import annotations

import json
import os
from pathlib import Path

from berth.control.requestlogs import RequestLogReader


def line(ts: float, rid: str) -> str:
    return json.dumps({"ts": ts, "request_id": rid, "status": 200, "seconds": 0.001, "replica": None,
                       "reason": None}) + "\n"


def append(path: Path, text: str) -> None:
    with path.open("a") as file:
        file.write(text)


def ids(entries: list[dict[str, object]]) -> list[object]:
    return [entry["request_id"] for entry in entries]


def test_initial_merges_workers_and_rotations_by_time_and_keeps_the_tail(tmp_path: Path) -> None:
    (tmp_path / "requests-0.log").write_text(line(2, "b") + line(6, "f"))
    (tmp_path / "requests-0.log.1").write_text(line(1, "a"))
    (tmp_path / "requests-1.log").write_text(line(3, "c") + "not json\n" + line(5, "e") + line(4, "d"))
    (tmp_path / "replica-1.log").write_text("print output\n")
    reader = RequestLogReader(tmp_path)
    assert ids(reader.initial(100)) == ["a", "b", "c", "d", "e", "f"]
    assert ids(RequestLogReader(tmp_path).initial(2)) == ["e", "f"]
    assert RequestLogReader(tmp_path).initial(0) == []
    assert RequestLogReader(tmp_path / "missing").initial(10) == []


def test_poll_returns_appended_lines_and_waits_for_a_line_being_written(tmp_path: Path) -> None:
    log = tmp_path / "requests-0.log"
    log.write_text(line(1, "a") + line(2, "b")[:10])  # the second line is being written
    reader = RequestLogReader(tmp_path)
    assert ids(reader.initial(10)) == ["a"]
    assert reader.poll() == []
    append(log, line(2, "b")[10:])
    assert ids(reader.poll()) == ["b"]
    partial = line(3, "c")
    append(log, partial[:5])
    assert reader.poll() == []
    append(log, partial[5:])
    (tmp_path / "requests-1.log").write_text(line(2.5, "x"))  # a worker that started meanwhile
    assert ids(reader.poll()) == ["x", "c"]


def test_poll_follows_a_rotation_without_losing_or_repeating_lines(tmp_path: Path) -> None:
    log = tmp_path / "requests-0.log"
    log.write_text(line(1, "a"))
    reader = RequestLogReader(tmp_path)
    assert ids(reader.initial(10)) == ["a"]
    append(log, line(2, "b"))
    os.replace(log, tmp_path / "requests-0.log.1")  # what the gateway does at its size cap
    log.write_text(line(3, "c"))
    assert ids(reader.poll()) == ["b", "c"]
    append(log, line(4, "d"))
    assert ids(reader.poll()) == ["d"]


def test_berth_logs_without_a_live_replica_shows_the_last_replica_log_not_a_request_log(tmp_path: Path) -> None:
    from berth.control.logs import LogReader, collect_logs

    (tmp_path / "api").mkdir()
    replica = tmp_path / "api" / "abc123-def456.log"
    replica.write_text("the predictor's last words\n")
    request_log = tmp_path / "api" / "requests-0.log"
    request_log.write_text(line(1, "a"))
    os.utime(replica, (1000, 1000))  # the request log is newer
    reader = LogReader(tmp_path / "api", live=set())
    assert b"".join(reader.initial(10)) == b"the predictor's last words\n"
    assert collect_logs(tmp_path, {"api"}, set(), now=10**10) == []  # the replica's newest file is kept
    assert replica.exists() and request_log.exists()
