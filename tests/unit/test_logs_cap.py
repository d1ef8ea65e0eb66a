"""Replica and daemon logs: the size cap (copy to .1, empty in place), and `berth logs` reading only their ends."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from berth.control import logs
from berth.control.logs import LogReader, build_lines, cap_logs, read_tail


def numbered(count: int, start: int = 0) -> bytes:
    return b"".join(b"line %d\n" % index for index in range(start, start + count))


def test_the_cap_copies_only_files_over_the_limit_and_replaces_the_previous_copy(tmp_path: Path) -> None:
    big, small = tmp_path / "big.log", tmp_path / "small.log"
    big.write_bytes(b"x" * 2000)
    small.write_bytes(b"y" * 1000)
    (tmp_path / "big.log.1").write_bytes(b"the copy before\n")
    assert cap_logs([big, small, tmp_path / "gone.log"], max_bytes=1000) == ([big], [])
    assert big.read_bytes() == b"" and (tmp_path / "big.log.1").read_bytes() == b"x" * 2000
    assert small.read_bytes() == b"y" * 1000 and not (tmp_path / "small.log.1").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.log", "big.log.1", "small.log"]  # no temporary left
    assert cap_logs([big, small], max_bytes=1000) == ([], [])  # emptied: nothing more until it grows again


def test_a_writer_holding_the_file_open_for_appending_writes_at_the_start_after_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "replica.log"
    with path.open("ab") as writer:  # as the replica's stdout is
        writer.write(numbered(100))
        writer.flush()
        assert cap_logs([path], max_bytes=10) == ([path], [])
        writer.write(b"after the cap\n")
        writer.flush()
    assert path.read_bytes() == b"after the cap\n"  # no hole of zeros where the old end was
    assert (tmp_path / "replica.log.1").read_bytes() == numbered(100)


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "TAIL_BLOCK", 16)  # a tail spans many blocks


@pytest.mark.usefixtures("small_blocks")
@pytest.mark.parametrize("tail", [1, 2, 7, 50, 99, 100])
def test_the_tail_spanning_many_blocks_is_the_files_last_lines(tmp_path: Path, tail: int) -> None:
    path = tmp_path / "r.log"
    path.write_bytes(numbered(100))
    lines, end, inode = read_tail(path, tail)
    assert lines == numbered(100).splitlines(keepends=True)[-tail:]
    assert end == path.stat().st_size and inode == path.stat().st_ino


@pytest.mark.usefixtures("small_blocks")
def test_the_tail_of_short_empty_and_unterminated_files(tmp_path: Path) -> None:
    path = tmp_path / "r.log"
    path.write_bytes(numbered(3) + b"no newline yet")
    assert read_tail(path, 2)[0] == [b"line 2\n", b"no newline yet"]
    assert read_tail(path, 1000)[0] == [b"line 0\n", b"line 1\n", b"line 2\n", b"no newline yet"]
    assert read_tail(path, 0)[0] == []
    path.write_bytes(b"")
    assert read_tail(path, 10) == ([], 0, path.stat().st_ino)
    assert read_tail(tmp_path / "missing.log", 10) == ([], 0, None)
    build = tmp_path / "build.log"
    build.write_bytes(numbered(40) + b"done")
    assert build_lines(build, 2) == b"[environment] line 39\n[environment] done\n"


@pytest.mark.usefixtures("small_blocks")
def test_the_tail_reads_no_more_than_its_limit(tmp_path: Path) -> None:
    path = tmp_path / "r.log"
    path.write_bytes(numbered(1000))
    lines, _, _ = read_tail(path, 1000, limit=100)  # the first line read is cut, so dropped
    assert lines == numbered(1000).splitlines(keepends=True)[-len(lines):] and 0 < len(lines) < 100 // 8


@pytest.mark.usefixtures("small_blocks")
def test_just_after_the_cap_the_tail_starts_in_the_copy(tmp_path: Path) -> None:
    path = tmp_path / "r.log"
    (tmp_path / "r.log.1").write_bytes(numbered(50))
    path.write_bytes(numbered(3, start=50))
    assert read_tail(path, 5)[0] == numbered(5, start=48).splitlines(keepends=True)
    assert read_tail(path, 3)[0] == numbered(3, start=50).splitlines(keepends=True)  # the copy is not read
    path.write_bytes(b"")
    assert read_tail(path, 2)[0] == [b"line 48\n", b"line 49\n"]


def test_berth_logs_follows_a_log_through_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "r1.log"
    path.write_bytes(numbered(10))
    reader = LogReader(tmp_path, live={"r1"})
    assert b"".join(reader.initial(2)) == b"line 8\nline 9\n"
    with path.open("ab") as writer:
        writer.write(numbered(2, start=10))
        writer.flush()
        assert b"".join(reader.poll()) == b"line 10\nline 11\n"
        writer.write(b"line 12\n")  # written after the last poll, before the cap: found in the copy
        writer.flush()
        assert cap_logs([path], max_bytes=10) == ([path], [])
        writer.write(b"line 13\n")  # far less than the old offset: a reader waiting for more would wait on
        writer.flush()
    assert b"".join(reader.poll()) == b"line 12\nline 13\n"
    path.write_bytes(b"")  # emptied with nothing copied (by hand): the copy is older, not read again
    with path.open("ab") as writer:
        writer.write(b"14\n")
    assert b"".join(reader.poll()) == b"14\n"


def test_berth_logs_starts_over_on_a_file_replaced_under_the_name(tmp_path: Path) -> None:
    path = tmp_path / "r1.log"
    path.write_bytes(b"old\n")
    reader = LogReader(tmp_path, live={"r1"})
    assert b"".join(reader.initial(10)) == b"old\n"
    path.rename(tmp_path / "kept.txt")  # still there, so the new file cannot get its inode
    path.write_bytes(b"new one, longer than the old\n")
    assert b"".join(reader.poll()) == b"new one, longer than the old\n"


def follow(reader: LogReader, polls: int = 50) -> bytes:
    """Everything the reader has to give, over as many polls as it takes."""
    return b"".join(b"".join(reader.poll()) for _ in range(polls))


def test_a_follower_far_behind_at_a_cap_reads_the_whole_rest_of_the_copy_in_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "MAX_READ", 64)  # a poll reads little: the rest of the copy takes many
    path = tmp_path / "r1.log"
    path.write_bytes(numbered(5))
    reader = LogReader(tmp_path, live={"r1"})
    assert b"".join(reader.initial(1)) == b"line 4\n"
    with path.open("ab") as writer:
        writer.write(numbered(200, start=5))
        writer.flush()
        cap_logs([path], max_bytes=10)
        writer.write(numbered(3, start=205))
        writer.flush()
    assert follow(reader) == numbered(203, start=5)


def test_a_cap_is_seen_even_when_the_file_grew_past_the_old_offset_before_the_poll(tmp_path: Path) -> None:
    path = tmp_path / "r1.log"
    path.write_bytes(numbered(10))
    reader = LogReader(tmp_path, live={"r1"})
    assert b"".join(reader.initial(1)) == b"line 9\n"
    with path.open("ab") as writer:
        writer.write(numbered(5, start=10))  # not polled before the cap
        writer.flush()
        cap_logs([path], max_bytes=10)
        writer.write(numbered(40, start=15))  # longer than the old offset by the time of the poll
        writer.flush()
    assert follow(reader) == numbered(45, start=10)


def test_a_poll_between_the_copy_and_the_emptying_waits_for_the_emptying(tmp_path: Path) -> None:
    path = tmp_path / "r1.log"
    path.write_bytes(numbered(10))
    reader = LogReader(tmp_path, live={"r1"})
    assert b"".join(reader.initial(1)) == b"line 9\n"
    with path.open("ab") as writer:
        writer.write(numbered(2, start=10))
        writer.flush()
        copy = tmp_path / "r1.log.1.tmp"  # what cap_logs does, stopped before the truncation
        copy.write_bytes(path.read_bytes())
        copy.replace(tmp_path / "r1.log.1")
        assert follow(reader, polls=3) == b""  # neither the copy nor the file read twice
        os.truncate(path, 0)
        writer.write(b"line 12\n")
        writer.flush()
    assert follow(reader) == numbered(3, start=10)


def test_a_copy_ending_inside_a_line_is_not_glued_to_the_files_first_line(tmp_path: Path) -> None:
    path = tmp_path / "r1.log"
    path.write_bytes(b"")
    reader = LogReader(tmp_path, live={"r1"})
    assert b"".join(reader.initial(5)) == b""
    with path.open("ab") as writer:
        writer.write(b"line 0\nhalf a li")
        writer.flush()
        cap_logs([path], max_bytes=4)
        writer.write(b"ne\nline 2\n")  # the rest of that line lands in the emptied file
        writer.flush()
    assert follow(reader) == b"line 0\nhalf a li\nne\nline 2\n"


def test_a_file_that_cannot_be_copied_is_kept_whole_and_the_others_are_still_capped(tmp_path: Path) -> None:
    stuck, other = tmp_path / "a.log", tmp_path / "b.log"
    stuck.write_bytes(b"x" * 100)
    other.write_bytes(b"y" * 100)
    (tmp_path / "a.log.1").mkdir()  # the copy cannot take its place (as a full disk refuses it), even for root
    capped, failed = cap_logs([stuck, other], max_bytes=10)
    assert capped == [other] and len(failed) == 1 and str(stuck) in failed[0]
    assert stuck.read_bytes() == b"x" * 100 and not (tmp_path / "a.log.1.tmp").exists()
    assert other.read_bytes() == b"" and (tmp_path / "b.log.1").read_bytes() == b"y" * 100
