"""kind: TrafficSplitter in a spec file: defaults, and every rule a clear error at its line."""

from pathlib import Path

import pytest

from berth.config.loader import parse_spec_text
from berth.errors import ConfigError

APIS = """\
- name: a
  kind: RealtimeAPI
  predictor: {type: python, path: predictor.py}
- name: b
  kind: RealtimeAPI
  predictor: {type: python, path: predictor.py}
"""


def splitter(body: str, name: str = "sp") -> str:
    return f"- name: {name}\n  kind: TrafficSplitter\n" + body


def problems(text: str, label: str = "berth.yaml") -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_spec_text(text, Path(label))
    return info.value.problems


def test_a_splitter_beside_its_apis_with_defaults() -> None:
    spec = parse_spec_text(APIS + splitter("  apis:\n    - {name: a, weight: 90}\n    - {name: b, weight: 10}\n"),
                           Path("cortex.yaml"))
    assert [api.name for api in spec.apis] == ["a", "b"]
    (sp,) = spec.splitters
    assert (sp.endpoint, sp.networking.api_keys, sp.split_by, sp.shadow) == ("/sp", "none", None, None)
    assert [(b.name, b.weight, b.shadow) for b in sp.apis] == [("a", 90, False), ("b", 10, False)]


def test_shadow_sticky_endpoint_and_keys() -> None:
    spec = parse_spec_text(APIS + splitter(
        "  networking: {endpoint: canary, api_keys: required}\n  split_by: header X-User\n"
        "  apis:\n    - {name: a, weight: 100}\n    - {name: b, shadow: true}\n"), Path("berth.yaml"))
    (sp,) = spec.splitters
    assert (sp.endpoint, sp.networking.api_keys, sp.header) == ("/canary", "required", "x-user")
    assert sp.shadow is not None and sp.shadow.name == "b" and [b.name for b in sp.serving] == ["a"]


@pytest.mark.parametrize(("body", "expected"), [
    ("  apis:\n    - {name: a, weight: 90}\n    - {name: b, weight: 5}\n",
     "berth.yaml:10:7: apis: the weights of the serving APIs must sum to 100 (got 90 + 5 = 95)"),
    ("  apis:\n    - {name: a, weight: 100}\n    - {name: b, weight: 10, shadow: true}\n",
     "berth.yaml:11:17: apis.1: the shadow API 'b' takes a copy of every request and answers no client, so it has "
     "no weight (got weight: 10); remove it"),
    ("  apis:\n    - {name: a, weight: 100}\n    - {name: b, shadow: true}\n    - {name: c, shadow: true}\n",
     "berth.yaml:10:7: apis: at most one API can be the shadow (got 2: b, c)"),
    ("  apis:\n    - {name: a, weight: 50}\n    - {name: a, weight: 50}\n",
     "berth.yaml:11:8: apis.1: API 'a' is listed twice; list each API once"),
    ("  apis:\n    - {name: b, shadow: true}\n",
     "berth.yaml:10:7: apis: needs at least one API with shadow: false and a weight above 0 to answer requests"),
    ("  apis:\n    - {name: a, weight: 101}\n",
     "berth.yaml:10:17: apis.0.weight: Input should be less than or equal to 100 (got 101)"),
    ("  apis:\n    - {name: a, wieght: 100}\n",
     "berth.yaml:10:17: apis.0.wieght: unknown field (did you mean 'weight'?)"),
    ("  split_by: cookie user\n  apis:\n    - {name: a, weight: 100}\n",
     "berth.yaml:9:3: split_by: expected 'header <Header-Name>', such as 'header X-User' (got 'cookie user')"),
    ("  networking: {endpoint: /_berth/x}\n  apis:\n    - {name: a, weight: 100}\n",
     "berth.yaml:9:16: networking.endpoint: paths under /_berth are reserved for berth itself"),
    ("  networking: {api_keys: maybe}\n  apis:\n    - {name: a, weight: 100}\n",
     "berth.yaml:9:16: networking.api_keys: Input should be 'required' or 'none' (got 'maybe')"),
    ("  networkin: {}\n  apis:\n    - {name: a, weight: 100}\n",
     "berth.yaml:9:3: networkin: unknown field (did you mean 'networking'?)"),
    ("  networking: {endpoint: /a}\n  apis:\n    - {name: a, weight: 100}\n",
     "berth.yaml:9:16: networking.endpoint: /a is also the endpoint of 'a'; give each API its own endpoint"),
])
def test_rules_are_clear_errors_at_their_lines(body: str, expected: str) -> None:
    assert expected in problems(APIS + splitter(body)), problems(APIS + splitter(body))


def test_a_splitter_named_like_an_api_is_refused() -> None:
    found = problems(APIS + splitter("  apis:\n    - {name: b, weight: 100}\n", name="a"))
    assert any("API 'a' is defined twice" in p for p in found)
