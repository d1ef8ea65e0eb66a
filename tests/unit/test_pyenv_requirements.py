"""Requirement files as berth reads them (lines, continuations, comments, options) and how a requirement
meets berth's own environment: `conflicts` (a runtime pin contradicted) and `satisfies` (nothing to install).

BaseEnvironment is built by hand, so the versions are the test's, not the machine's."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from berth.pyenv.requirements import BaseEnvironment, Line, parse, pyproject_lines, read_lines

BASE = BaseEnvironment(
    installed={"pydantic": "2.7.1", "pydantic-core": "2.18.2", "starlette": "0.37.2", "click": "8.1.7",
               "numpy": "1.26.4", "prerel": "2.0b1", "berth": "0.1.0"},
    runtime=frozenset({"pydantic", "pydantic-core", "starlette", "berth"}),
)


def line(text: str, number: int = 1) -> Line:
    return Line("requirements.txt", number, text, parse(text))


def lines_of(tmp_path: Path, text: str | bytes) -> list[tuple[int, str, bool]]:
    path = tmp_path / "requirements.txt"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return [(item.number, item.text, item.requirement is not None) for item in read_lines(path, "requirements.txt")]


@pytest.mark.parametrize(("text", "expected"), [
    ("berthdemo==1.0\n", [(1, "berthdemo==1.0", True)]),
    ("# a comment\n\nberthdemo>=1  # why\n", [(3, "berthdemo>=1", True)]),
    ("   # indented comment\nclick\n", [(2, "click", True)]),
    ("--index-url http://127.0.0.1:1/simple\n--extra-index-url http://127.0.0.1:2/simple\n--find-links ./w\nclick\n",
     [(1, "--index-url http://127.0.0.1:1/simple", False), (2, "--extra-index-url http://127.0.0.1:2/simple", False),
      (3, "--find-links ./w", False), (4, "click", True)]),
    ("pkg @ https://example.invalid/pkg-1.0-py3-none-any.whl\n./vendor/pkg\n/abs/pkg.whl\n-e .\n",
     [(1, "pkg @ https://example.invalid/pkg-1.0-py3-none-any.whl", False), (2, "./vendor/pkg", False),
      (3, "/abs/pkg.whl", False), (4, "-e .", False)]),
    ("numpy[extra]>=1; python_version >= '3'\n", [(1, "numpy[extra]>=1; python_version >= '3'", True)]),
    ("not a requirement !!\n", [(1, "not a requirement !!", False)]),  # left to uv, which says why
    ("click\r\nnumpy\r\n", [(1, "click", True), (2, "numpy", True)]),
])
def test_lines_keep_their_numbers_and_options_are_left_to_uv(tmp_path: Path, text: str,
                                                             expected: list[tuple[int, str, bool]]) -> None:
    assert lines_of(tmp_path, text) == expected


def test_a_continuation_joins_the_next_line(tmp_path: Path) -> None:
    path = tmp_path / "requirements.txt"
    path.write_text("berthdemo \\\n  >=1.0\n")
    [found] = read_lines(path, "requirements.txt")
    assert found.requirement is not None and str(found.requirement) == "berthdemo>=1.0"


def test_lines_after_a_continuation_keep_their_own_numbers(tmp_path: Path) -> None:
    assert lines_of(tmp_path, "berthdemo \\\n  >=1.0\npydantic<2\n")[1][0] == 3


def test_a_file_that_is_not_utf8_is_read_with_replacements(tmp_path: Path) -> None:
    assert lines_of(tmp_path, b"caf\xe9-pkg==1\nclick\n")[1] == (2, "click", True)


def test_a_comment_after_a_tab_is_a_comment(tmp_path: Path) -> None:
    assert lines_of(tmp_path, "pydantic<2\t# old\n") == [(1, "pydantic<2", True)]


@given(st.lists(st.one_of(st.just(""), st.just("# note"), st.sampled_from(["click", "numpy>=1", "berthdemo==2"])),
                max_size=30))
def test_each_requirement_is_numbered_by_the_line_it_is_written_on(rows: list[str]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "requirements.txt"
        path.write_text("\n".join(rows) + "\n")
        found = [(item.number, item.text) for item in read_lines(path, "requirements.txt")]
    assert found == [(number, text) for number, text in enumerate(rows, start=1) if text and not text.startswith("#")]


# --- conflicts with berth's runtime ----------------------------------------------------------------

@pytest.mark.parametrize(("text", "conflicts"), [
    ("pydantic<2", True),
    ("pydantic==1.10.13", True),
    ("pydantic[email]<2", True),  # extras do not change the version
    ("Pydantic_Core<2", True),  # names compare canonically
    ("pydantic>=2.8.0rc1", True),  # berth runs 2.7.1
    ("berth>=99", True),
    ("pydantic>=2", False),
    ("pydantic==2.7.1", False),
    ("pydantic~=2.7", False),
    ("pydantic", False),
    ("pydantic<2; python_version < '3'", False),  # a marker that does not apply here
    ("numpy<1", False),  # installed, but not the runtime's: the environment may hold another one
    ("unknown-pkg<1", False),
    ("--index-url http://127.0.0.1:1/simple", False),
    ("pydantic @ https://example.invalid/pydantic-1.10.0-py3-none-any.whl", False),  # left to uv
])
def test_a_requirement_conflicts_when_it_excludes_the_runtimes_version(text: str, conflicts: bool) -> None:
    assert bool(BASE.conflicts([line(text)])) is conflicts


def test_a_conflict_names_the_file_line_pin_and_berths_version() -> None:
    [conflict] = BASE.conflicts([line("click", 1), line("pydantic<2", 7)])
    assert str(conflict) == ("requirements.txt:7: pydantic<2 conflicts with berth's runtime, which runs "
                             "pydantic 2.7.1")


def test_a_hash_pinned_conflict_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "requirements.txt"
    path.write_text("pydantic==1.10.13 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    assert BASE.conflicts(read_lines(path, "requirements.txt"))


def test_a_pyproject_conflict_does_not_claim_line_zero(tmp_path: Path) -> None:
    path = tmp_path / "pyproject.toml"
    path.write_text('[project]\nname = "p"\nversion = "1"\ndependencies = ["pydantic<2"]\n')
    [conflict] = BASE.conflicts(pyproject_lines(path, "pyproject.toml"))
    assert ":0:" not in str(conflict)


# --- satisfied by berth's environment ----------------------------------------------------------------

@pytest.mark.parametrize(("text", "satisfied"), [
    ("click", True),
    ("click>=8", True),
    ("Click==8.1.7", True),
    ("click<8", False),
    ("click[extra]", False),  # an extra may need more than berth holds
    ("click==8.2.0rc1", False),
    ("prerel>=1", True),  # what is installed counts, prerelease or not
    ("prerel>=2.0b1", True),
    ("numpy>=2", False),
    ("unknown-pkg", False),
    ("unknown-pkg; python_version < '3'", True),  # does not apply here: nothing to install
    ("-r more.txt", False),
    ("./vendor/pkg", False),
])
def test_a_requirement_is_satisfied_by_what_berth_holds(text: str, satisfied: bool) -> None:
    assert BASE.satisfies(line(text)) is satisfied


def test_pins_hold_the_runtime_but_not_berth_itself() -> None:
    assert BASE.pins() == ["pydantic-core==2.18.2", "pydantic==2.7.1", "starlette==0.37.2"]
    assert "berth==0.1.0" not in BASE.freeze() and "numpy==1.26.4" in BASE.freeze()


def test_the_current_environment_knows_the_runtime() -> None:
    current = BaseEnvironment.current()
    assert {"pydantic", "starlette", "berth"} <= current.runtime
    assert all(name in current.installed for name in current.runtime)
