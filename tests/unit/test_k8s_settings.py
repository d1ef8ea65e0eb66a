"""ClusterSettings: what a kubernetes environment stores (names only), validated at once; the runtime image;
the kubeconfig's contexts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from berth import __version__
from berth.backends.kubernetes.settings import ClusterSettings, kubeconfig_paths, read_contexts, runtime_image
from berth.errors import ConfigError

KUBECONFIG = """\
apiVersion: v1
kind: Config
current-context: kind-dev
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
contexts:
- {name: kind-dev, context: {cluster: c, user: u}}
- {name: prod-eu, context: {cluster: c, user: u, namespace: ml}}
users: [{name: u, user: {token: not-stored}}]
"""


def test_defaults() -> None:
    settings = ClusterSettings()
    assert (settings.context, settings.namespace, settings.prometheus, settings.image, settings.gateway) == (
        None, "default", None, None, None)
    assert settings.to_settings() == {"namespace": "default"}
    assert settings.gateway_ref is None


@pytest.mark.parametrize("settings", [
    {},
    {"namespace": "ml"},
    {"namespace": "a" * 63},
    {"context": "arn:aws:eks:eu-west-1:123456789012:cluster/prod"},
    {"context": "kind-dev", "namespace": "team-1", "prometheus": "http://prometheus.monitoring:9090",
     "image": "registry.example:5000/team/runtime:1.0", "gateway": "web/public"},
    {"prometheus": "https://prom.example.com/prometheus"},
    {"image": "ubuntu"},
    {"image": "ghcr.io/org/sub/image_name:v1.2.3-rc.1"},
    {"image": "localhost:5000/x@sha256:" + "a" * 64},
    {"image": "berth/runtime:0.1.0-cuda@sha256:" + "0" * 64},
    {"gateway": "public"},
    {"gateway": "gateways/edge.example"},
])
def test_valid_settings_round_trip(settings: dict[str, Any]) -> None:
    parsed = ClusterSettings.from_settings(settings)
    assert parsed.to_settings() == {"namespace": "default", **settings}
    assert ClusterSettings.from_settings(parsed.to_settings()) == parsed


@pytest.mark.parametrize(("settings", "words"), [
    ({"namespace": "ML"}, "namespace: 'ML' is not a valid namespace name (a DNS-1123 label"),
    ({"namespace": "a" * 64}, "not a valid namespace name"),
    ({"namespace": "-ml"}, "not a valid namespace name"),
    ({"namespace": "ml.team"}, "not a valid namespace name"),
    ({"namespace": ""}, "not a valid namespace name"),
    ({"context": ""}, "context: must not be empty"),
    ({"context": "a\nb"}, "control characters"),
    ({"prometheus": "prometheus:9090"}, "is not an http(s) URL"),
    ({"prometheus": "ftp://prometheus"}, "is not an http(s) URL"),
    ({"prometheus": "http://"}, "is not an http(s) URL"),
    ({"prometheus": "http://prom:99999"}, "is not a valid URL"),
    ({"prometheus": "http://admin:secret@prom:9090"}, "holds credentials"),
    ({"prometheus": "http://prom:9090/?token=x"}, "without a query"),
    ({"image": "Ubuntu"}, "image: 'Ubuntu' is not an image reference"),
    ({"image": "ubuntu:"}, "not an image reference"),
    ({"image": "ubuntu latest"}, "not an image reference"),
    ({"image": " ubuntu"}, "not an image reference"),
    ({"image": "x@sha256:short"}, "not an image reference"),
    ({"image": "a/" * 130 + "b"}, "not an image reference"),
    ({"gateway": "Public"}, "gateway: 'Public' is not a Gateway name"),
    ({"gateway": "a/b/c"}, "not a Gateway name"),
    ({"gateway": "/edge"}, "not a Gateway name"),
    ({"gateway": "Gateways/edge"}, "not a Gateway name"),
    ({"gateway": "gateways/"}, "not a Gateway name"),
    ({"token": "secret"}, "unknown setting 'token' (known: context, gateway, image, namespace, prometheus)"),
    ({"namespace": 3}, "namespace: expected a string, got int"),
    ({"namespace": None}, "namespace: expected a string, got NoneType"),
])
def test_invalid_settings_are_config_errors_saying_what_is_wrong(settings: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ClusterSettings.from_settings(settings)
    assert words in caught.value.message
    assert caught.value.exit_code == 2
    assert caught.value.hint and "berth env configure" in caught.value.hint


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        ClusterSettings.from_settings({"namespace": "ML", "prometheus": "x", "image": "X", "gateway": "G", "y": 1})
    assert [problem.split(":")[0].split()[0] for problem in caught.value.problems] == [
        "unknown", "namespace", "prometheus", "image", "gateway"]


def test_construction_validates_too() -> None:
    with pytest.raises(ConfigError, match="namespace"):
        ClusterSettings(namespace="Bad")


def test_unset_optional_settings_may_be_stored_as_null() -> None:
    assert ClusterSettings.from_settings({"context": None, "gateway": None}) == ClusterSettings()


@pytest.mark.parametrize(("gateway", "ref"), [("edge", ("edge", None)), ("infra/edge", ("edge", "infra"))])
def test_gateway_ref(gateway: str, ref: tuple[str, str | None]) -> None:
    assert ClusterSettings(gateway=gateway).gateway_ref == ref


def test_runtime_image_defaults_to_this_version_by_flavour_and_an_own_image_wins() -> None:
    assert runtime_image(ClusterSettings(), gpu=False) == f"berth/runtime:{__version__}-cpu"
    assert runtime_image(ClusterSettings(), gpu=True) == f"berth/runtime:{__version__}-cuda"
    own = ClusterSettings(image="registry.example/team/iris:3")
    assert runtime_image(own, gpu=False) == runtime_image(own, gpu=True) == "registry.example/team/iris:3"


def test_kubeconfig_paths_follow_kubectl(tmp_path: Path) -> None:
    assert kubeconfig_paths({}) == [Path("~/.kube/config").expanduser()]
    assert kubeconfig_paths({"KUBECONFIG": ""}) == [Path("~/.kube/config").expanduser()]
    joined = f"{tmp_path / 'a'}:{tmp_path / 'b'}:"
    assert kubeconfig_paths({"KUBECONFIG": joined}) == [tmp_path / "a", tmp_path / "b"]


def test_read_contexts_merges_files_and_the_first_current_context_wins(tmp_path: Path) -> None:
    (tmp_path / "a").write_text(KUBECONFIG)
    (tmp_path / "b").write_text(KUBECONFIG.replace("kind-dev", "other").replace("prod-eu", "staging"))
    found = read_contexts([tmp_path / "missing", tmp_path / "a", tmp_path / "b"])
    assert found.found and found.files == (tmp_path / "a", tmp_path / "b")
    assert found.contexts == {"kind-dev", "prod-eu", "other", "staging"}
    assert found.current == "kind-dev"
    assert found.problems == (f"{tmp_path / 'missing'} does not exist",)


@pytest.mark.parametrize("content", ["", "not: [a kubeconfig", "clusters: 3\ncontexts: []\n", "- a list\n"])
def test_an_unreadable_kubeconfig_is_a_problem_not_a_crash(tmp_path: Path, content: str) -> None:
    (tmp_path / "config").write_text(content)
    found = read_contexts([tmp_path / "config"])
    assert not found.found and found.contexts == frozenset()
    assert len(found.problems) == 1 and "cannot be read as a kubeconfig" in found.problems[0]
