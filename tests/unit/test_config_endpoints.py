"""Endpoints deployed APIs already use: reported at the line that sets them, with the rest or as a Conflict."""

from __future__ import annotations

from pathlib import Path

import pytest

from berth.config import load_spec, parse_spec_text
from berth.config.endpoints import owners, taken_endpoints
from berth.config.loader import SpecFile
from berth.config.schema import RealtimeAPI
from berth.errors import ConfigError, Conflict

SPEC = """\
- name: iris
  kind: RealtimeAPI
  predictor:
    type: python
    path: predictor.py
- name: other-iris
  kind: RealtimeAPI
  predictor:
    type: python
    path: predictor.py
  networking:
    endpoint: shared
"""


def spec() -> SpecFile:
    return parse_spec_text(SPEC, Path("/p/berth.yaml"))


def test_an_explicit_endpoint_is_reported_at_networking_endpoint() -> None:
    assert taken_endpoints(spec(), {"/shared": "other", "/unrelated": "x"}) == [
        "berth.yaml:12:5: networking.endpoint: /shared is already used by the deployed API 'other' "
        "(set networking.endpoint to another path, or delete 'other' first)"]


def test_the_default_endpoint_is_reported_at_the_name() -> None:
    assert taken_endpoints(spec(), {"/iris": "other"}) == [
        "berth.yaml:1:3: networking.endpoint: /iris (the default, /<name>) is already used by the deployed API "
        "'other' (set networking.endpoint to another path, or delete 'other' first)"]


def test_an_api_keeps_its_own_endpoint() -> None:
    assert taken_endpoints(spec(), {"/iris": "iris", "/shared": "other-iris"}) == []


def test_a_spec_file_built_without_positions_still_gets_its_file_name() -> None:
    api = RealtimeAPI.model_validate({"name": "a", "kind": "RealtimeAPI",
                                      "predictor": {"type": "python", "path": "p.py"}})
    bare = SpecFile(path=Path("/p/cortex.yaml"), apis=(api,))
    (problem,) = taken_endpoints(bare, {"/a": "b"})
    assert problem.startswith("cortex.yaml: networking.endpoint: /a is already used by the deployed API 'b'")


def test_owners_reads_a_backends_api_list() -> None:
    documents = [{"name": "a", "endpoint": "/a", "status": "live"}, {"name": "b"}, {"name": "c", "endpoint": "/x"}]
    assert owners(documents) == {"/a": "a", "/x": "c"}


def project(tmp_path: Path, text: str) -> Path:
    (tmp_path / "berth.yaml").write_text(text)
    (tmp_path / "predictor.py").write_text("class PythonPredictor:\n    pass\n")
    return tmp_path


def test_a_taken_endpoint_alone_is_a_conflict_with_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(Conflict) as info:
        load_spec(project(tmp_path, SPEC), deployed={"/shared": "other", "/iris": "old"})
    assert info.value.exit_code == 4
    lines = info.value.message.splitlines()
    assert lines[0] == "2 endpoints are already used by deployed APIs:"
    assert lines[1].startswith("  berth.yaml:1:3: networking.endpoint: /iris (the default, /<name>)")
    assert lines[2].startswith("  berth.yaml:12:5: networking.endpoint: /shared is already used")


def test_a_taken_endpoint_is_reported_with_the_files_other_problems(tmp_path: Path) -> None:
    text = SPEC + "  autoscaling:\n    window: 15s\n"
    with pytest.raises(ConfigError) as info:
        load_spec(project(tmp_path, text), deployed={"/shared": "other"})
    window, clash = info.value.problems
    assert window.startswith("berth.yaml:14:5: autoscaling.window")
    assert clash.startswith("berth.yaml:12:5: networking.endpoint: /shared is already used by the deployed API")


def test_without_deployed_apis_nothing_is_taken(tmp_path: Path) -> None:
    assert [api.name for api in load_spec(project(tmp_path, SPEC)).apis] == ["iris", "other-iris"]
