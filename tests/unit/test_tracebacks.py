"""Hiding berth's frames from tracebacks: what is hidden, the marker left in their place, and streams."""

from __future__ import annotations

from berth.cli.tracebacks import BERTH_PACKAGE, FrameFilter, hidden_file, marker, user_frames

START = "Traceback (most recent call last):\n"
BERTH = f'  File "{BERTH_PACKAGE}runtime/predictor.py", line 60, in construct\n    return cls()\n           ^^^^^\n'
USER = '  File "/home/me/project/predictor.py", line 6, in __init__\n    helper()\n'
IMPORT = ('  File "<frozen importlib._bootstrap_external>", line 995, in exec_module\n'
          '  File "<frozen importlib._bootstrap>", line 488, in _call_with_frames_removed\n')


def test_what_counts_as_berths() -> None:
    assert hidden_file(f"{BERTH_PACKAGE}runtime/app.py")
    assert hidden_file("/opt/venv/lib/python3.12/site-packages/berth/runtime/app.py")
    assert hidden_file("<frozen runpy>") and hidden_file("/usr/lib/python3.12/runpy.py")
    assert hidden_file("/usr/lib/python3.12/concurrent/futures/thread.py")
    assert not hidden_file("/home/me/berth/predictor.py")  # a project folder named berth is the user's
    assert not hidden_file("/home/me/project/predictor.py")


def test_a_traceback_keeps_the_users_frames_and_says_how_many_were_hidden() -> None:
    text = START + BERTH + BERTH + IMPORT + USER + "RuntimeError: boom\n"
    assert user_frames(text) == START + marker(4) + "\n" + USER + "RuntimeError: boom\n"
    assert marker(1) == "  [1 berth frame hidden; --verbose shows them]"


def test_a_traceback_of_the_users_frames_only_is_unchanged() -> None:
    text = "before\n" + START + USER + USER + "  [Previous line repeated 996 more times]\nRecursionError: x\nafter\n"
    assert user_frames(text) == text


def test_chained_exceptions_are_filtered_each() -> None:
    first = START + BERTH + USER + "KeyError: 'a'\n"
    second = START + USER + BERTH + "ValueError: b\n"
    during = "\nDuring handling of the above exception, another exception occurred:\n\n"
    assert user_frames(first + during + second) == (
        START + marker(1) + "\n" + USER + "KeyError: 'a'\n" + during
        + START + USER + marker(1) + "\nValueError: b\n")


def test_interleaved_replicas_are_followed_apart() -> None:
    def prefixed(prefix: str, text: str) -> list[str]:
        return [prefix + line for line in text.splitlines(keepends=True)]

    one, two = prefixed("[r1] ", START + BERTH + USER + "E: 1\n"), prefixed("[r2] ", START + USER + BERTH + "E: 2\n")
    mixed = "".join(line for pair in zip(one, two, strict=False) for line in pair) + "".join(one[len(two):])
    shown = user_frames(mixed).splitlines(keepends=True)
    assert [line for line in shown if line.startswith("[r1] ")] == prefixed(
        "[r1] ", START + marker(1) + "\n" + USER + "E: 1\n")
    assert [line for line in shown if line.startswith("[r2] ")] == prefixed(
        "[r2] ", START + USER + marker(1) + "\nE: 2\n")


def test_a_stream_split_anywhere_reads_the_same() -> None:
    text = "log line\n" + START + BERTH + USER + "RuntimeError: boom\n" + "tail without newline"
    expected = user_frames(text)
    for size in (1, 7, 50):
        frames = FrameFilter()
        out = "".join(frames.feed(text[i:i + size]) for i in range(0, len(text), size)) + frames.flush()
        assert out == expected, size
    assert expected.endswith("tail without newline\n")


def test_a_stream_that_ends_inside_hidden_frames_still_says_so() -> None:
    assert user_frames(START + BERTH) == START + marker(1) + "\n"


def test_a_traceback_cut_above_its_first_frame_by_tail_is_still_filtered() -> None:
    text = "    self._load_sync()\n" + BERTH + USER + "RuntimeError: boom\nlater\n"
    assert user_frames(text) == "    self._load_sync()\n" + marker(1) + "\n" + USER + "RuntimeError: boom\nlater\n"
