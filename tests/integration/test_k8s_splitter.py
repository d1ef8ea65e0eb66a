"""A traffic splitter through the Kubernetes backend, against kmock (see test_k8s_backend.py for the fake's
limits: it creates on apply only through the test shim, and ignores label selectors on lists)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from berth.config.loader import load_spec
from berth.errors import Conflict, NotFound
from tests.integration.test_k8s_backend import backend_on, fake, hello_project, in_thread, names, stored

pytestmark = [pytest.mark.fake_api, pytest.mark.asyncio]
__all__ = ["fake"]  # the fixture, imported for these tests

ROUTES = "gateway.networking.k8s.io/v1/httproutes"
SPLITTER = """
- name: canary
  kind: TrafficSplitter
  apis:
    - {name: hello, weight: 100}
"""


async def test_fake_api_a_splitter_is_an_httproute_and_guards_its_apis(fake: Any, tmp_path: Path) -> None:
    spec_file = hello_project(tmp_path)
    spec_file.write_text(spec_file.read_text() + SPLITTER)
    backend = backend_on(fake, gateway="edge")
    changes = await in_thread(lambda: backend.deploy(load_spec(spec_file)))
    assert [(c.api, c.action) for c in changes] == [("hello", "creating"), ("canary", "creating")]
    route = stored(fake, ROUTES, "canary")
    assert route is not None
    [rule] = route["spec"]["rules"]
    assert [(r["name"], r["weight"]) for r in rule["backendRefs"]] == [("hello", 100)]
    assert rule["matches"][0]["path"] == {"type": "PathPrefix", "value": "/canary"}
    [listed] = await in_thread(backend_on(fake, gateway="edge").list_splitters)
    assert (listed["name"], listed["apis"][0]["name"], listed["apis"][0]["weight"]) == ("canary", "hello", 100)
    again = await in_thread(lambda: backend_on(fake, gateway="edge").deploy(load_spec(spec_file)))
    assert [c.action for c in again][1] == "up to date"

    with pytest.raises(Conflict, match="canary"):
        await in_thread(lambda: backend_on(fake, gateway="edge").delete("hello"))
    await in_thread(lambda: backend_on(fake, gateway="edge").delete("canary"))
    assert "canary" not in names(fake, ROUTES) and "hello" in names(fake, "apps/v1/deployments")
    await in_thread(lambda: backend_on(fake, gateway="edge").delete("hello"))


async def test_fake_api_a_splitter_of_a_missing_api_is_refused(fake: Any, tmp_path: Path) -> None:
    (tmp_path / "berth.yaml").write_text(SPLITTER)
    with pytest.raises(NotFound, match="'hello'"):
        await in_thread(lambda: backend_on(fake, gateway="edge").deploy(load_spec(tmp_path / "berth.yaml")))
    assert names(fake, ROUTES) == set()
