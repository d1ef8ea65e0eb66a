"""A project's `.env`: NAME=value lines, quotes, `export`, comments, ${NAME}; a problem names its line and
never the value (values are often secrets)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from berth.errors import ConfigError
from berth.pyenv.dotenv import parse_dotenv, read_dotenv

NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True)
# What a value may hold (printable, spaces, quotes, backslashes, #, $), without `${`, which interpolates.
VALUES = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\x00"),
                 max_size=40).filter(lambda value: "${" not in value)
SECRETS = st.from_regex(r"[A-Za-z0-9]{12,24}", fullmatch=True)


@pytest.mark.parametrize(("text", "expected"), [
    ("A=1\n", {"A": "1"}),
    ("export B=two\n", {"B": "two"}),
    ('C="two words"\n', {"C": "two words"}),
    ("D='single # not a comment'\n", {"D": "single # not a comment"}),
    ("# a comment\n\nE=5 # a comment\n", {"E": "5"}),
    ("F=\n", {"F": ""}),
    ('G="line\\nbreak \\"quoted\\""\n', {"G": 'line\nbreak "quoted"'}),
    ('H="multi\nline"\n', {"H": "multi\nline"}),
    ("I=x\nJ=${I}y\n", {"I": "x", "J": "xy"}),
    ("K=1\nK=2\n", {"K": "2"}),  # a later line wins
    ("L = spaced \n", {"L": "spaced"}),
    ("M=a=b=c\n", {"M": "a=b=c"}),
    ("N=x\r\nO=y\r\n", {"N": "x", "O": "y"}),
    ("P=é\n", {"P": "é"}),
])
def test_lines_quotes_export_comments_and_references(text: str, expected: dict[str, str]) -> None:
    assert parse_dotenv(text) == expected


def test_a_reference_may_name_the_daemons_own_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BERTH_TEST_DOTENV_OUTER", "outer")
    assert parse_dotenv("A=${BERTH_TEST_DOTENV_OUTER}-x\nB=${BERTH_TEST_DOTENV_UNSET}\n") == {"A": "outer-x", "B": ""}


@pytest.mark.parametrize(("text", "number"), [
    ('A=1\nB="unterminated\n', 2),
    ("A B=1\n", 1),
    ("A=1\n# a comment\n=value-without-name\n", 3),
    ('A="x" trailing-junk\n', 1),
])
def test_a_problem_names_its_line(text: str, number: int) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_dotenv(text)
    assert refused.value.problems == [f".env:{number}: not a NAME=value line"]
    assert refused.value.exit_code == 2


@pytest.mark.parametrize("text", ["A=1\n\nA B=1\n", "\n\nA B=1\n", "A=1\n\n\nA B=1\n"])
def test_a_problem_after_blank_lines_names_its_own_line(text: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_dotenv(text)
    assert refused.value.problems == [f".env:{text.count(chr(10))}: not a NAME=value line"]


def test_every_problem_is_listed() -> None:
    with pytest.raises(ConfigError) as refused:
        parse_dotenv("A B=1\nC=2\nD E=3\n")
    assert [problem.split(":")[1] for problem in refused.value.problems] == ["1", "3"]


def test_a_name_without_value_is_named() -> None:
    with pytest.raises(ConfigError, match=r"\.env:1: no `=` on this line \(write NAME= for an empty value\)"):
        parse_dotenv("FLAG\n")


def test_read_dotenv_absent_file_is_empty_and_non_utf8_is_refused_without_its_bytes(tmp_path: Path) -> None:
    assert read_dotenv(tmp_path / ".env") == {}
    (tmp_path / ".env").write_bytes(b"TOKEN=s3cr\xe9t\n")
    with pytest.raises(ConfigError) as refused:
        read_dotenv(tmp_path / ".env")
    assert refused.value.problems == [".env: not UTF-8 text"]
    assert "s3cr" not in str(refused.value.problems) + (refused.value.hint or "")


def _single_quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _double_quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@given(st.dictionaries(NAMES, VALUES, max_size=6), st.sampled_from([_single_quoted, _double_quoted]),
       st.booleans())
def test_quoted_values_round_trip(variables: dict[str, str], quote: object, export: bool) -> None:
    assert callable(quote)
    text = "".join(f"{'export ' if export else ''}{name}={quote(value)}\n" for name, value in variables.items())
    assert parse_dotenv(text) == variables


@given(SECRETS, st.sampled_from(['{name}="{secret}', "{name} {secret}=1", '{name}="{secret}" junk',
                                 "{name}='{secret}\nOTHER=1"]))
def test_a_parse_error_never_contains_the_value(secret: str, template: str) -> None:
    text = "FIRST=1\n" + template.format(name="TOKEN", secret=secret) + "\n"
    with pytest.raises(ConfigError) as refused:
        parse_dotenv(text)
    shown = "\n".join(refused.value.problems) + (refused.value.hint or "") + refused.value.message
    assert secret not in shown


@given(SECRETS)
def test_a_bare_value_on_its_own_line_is_not_shown(secret: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_dotenv(f"API_KEY=\n{secret}\n")
    assert secret not in "\n".join(refused.value.problems)
