"""`berth env configure | delete | list` for kubernetes environments: only names are stored, the kube context
is checked against the user's kubeconfig when one can be read, `local` stays built in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from berth.backends import environments
from berth.backends.environments import Environment, Provider, Registry
from berth.cli.main import cli

KUBECONFIG = """\
apiVersion: v1
kind: Config
current-context: kind-dev
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443", certificate-authority-data: Q0FEQVRB}}]
contexts:
- {name: kind-dev, context: {cluster: c, user: u}}
- {name: prod-eu, context: {cluster: c, user: u}}
users: [{name: u, user: {token: s3cr3t-token, client-key-data: S0VZ}}]
"""


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "kube" / "config"
    path.parent.mkdir()
    path.write_text(KUBECONFIG)
    monkeypatch.setenv("KUBECONFIG", str(path))
    return path


@pytest.fixture
def no_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "nowhere" / "config"
    monkeypatch.setenv("KUBECONFIG", str(path))
    return path


def berth(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--home", str(home), *args], catch_exceptions=False)


def stored(home: Path) -> dict[str, object]:
    data = json.loads((home / "environments.json").read_text())
    assert isinstance(data, dict)
    return data


def test_configure_creates_an_environment_storing_only_names(home: Path, kubeconfig: Path) -> None:
    result = berth(home, "env", "configure", "prod", "--provider", "kubernetes", "--context", "prod-eu",
                   "--namespace", "ml", "--prometheus", "http://prometheus.monitoring:9090",
                   "--image", "registry.example/team/runtime:1", "--gateway", "infra/edge")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == (
        "created environment prod (kubernetes): context prod-eu, namespace ml, prometheus "
        "http://prometheus.monitoring:9090, image registry.example/team/runtime:1, gateway infra/edge")
    assert "berth env default prod" in result.stdout
    assert result.stderr == ""
    assert stored(home)["environments"] == {"prod": {"provider": "kubernetes", "settings": {
        "context": "prod-eu", "namespace": "ml", "prometheus": "http://prometheus.monitoring:9090",
        "image": "registry.example/team/runtime:1", "gateway": "infra/edge"}}}
    text = (home / "environments.json").read_text()
    assert "s3cr3t" not in text and "127.0.0.1" not in text and "Q0FEQVRB" not in text
    assert environments.load(home).default == "local"  # configuring does not switch the default


def test_configure_with_defaults_stores_the_namespace(home: Path, kubeconfig: Path) -> None:
    result = berth(home, "env", "configure", "dev", "--provider", "kubernetes")
    assert result.exit_code == 0, result.output
    assert "created environment dev (kubernetes): namespace default" in result.stdout
    assert environments.load(home).get("dev") == Environment("dev", Provider.KUBERNETES, {"namespace": "default"})


def test_an_update_changes_only_the_flags_given_and_says_what_changed(home: Path, kubeconfig: Path) -> None:
    berth(home, "env", "configure", "prod", "--provider", "kubernetes", "--context", "prod-eu", "--namespace", "ml")
    result = berth(home, "env", "configure", "prod", "--gateway", "edge", "--namespace", "serving")
    assert result.exit_code == 0, result.output
    assert result.stdout == "updated environment prod: namespace: ml -> serving; gateway: (unset) -> edge\n"
    assert environments.load(home).get("prod").settings == {"context": "prod-eu", "namespace": "serving",
                                                            "gateway": "edge"}
    # --provider kubernetes again is fine on an update
    result = berth(home, "env", "configure", "prod", "--provider", "kubernetes", "--context", "kind-dev")
    assert result.stdout == "updated environment prod: context: prod-eu -> kind-dev\n"


def test_an_empty_value_unsets_a_setting(home: Path, kubeconfig: Path) -> None:
    berth(home, "env", "configure", "prod", "--provider", "kubernetes", "--gateway", "edge", "--namespace", "ml",
          "--context", "prod-eu")
    result = berth(home, "env", "configure", "prod", "--gateway", "", "--namespace", "", "--context", "")
    assert result.exit_code == 0, result.output
    assert result.stdout == ("updated environment prod: context: prod-eu -> (unset); namespace: ml -> default; "
                             "gateway: edge -> (unset)\n")
    assert environments.load(home).get("prod").settings == {"namespace": "default"}


def test_an_update_that_changes_nothing_writes_nothing(home: Path, kubeconfig: Path) -> None:
    berth(home, "env", "configure", "prod", "--provider", "kubernetes", "--namespace", "ml")
    before = (home / "environments.json").stat().st_mtime_ns
    result = berth(home, "env", "configure", "prod", "--namespace", "ml")
    assert result.exit_code == 0 and result.stdout == "environment prod is unchanged\n"
    assert (home / "environments.json").stat().st_mtime_ns == before


def test_invalid_values_are_all_reported_and_nothing_is_saved(home: Path, kubeconfig: Path) -> None:
    result = berth(home, "env", "configure", "prod", "--provider", "kubernetes", "--namespace", "ML",
                   "--prometheus", "prometheus:9090", "--image", "Not An Image", "--gateway", "a/b/c")
    assert result.exit_code == 2
    assert "4 problems" in result.stderr
    for words in ("namespace: 'ML'", "prometheus: 'prometheus:9090'", "image: 'Not An Image'", "gateway: 'a/b/c'"):
        assert words in result.stderr
    assert not home.exists()


def test_credentials_in_the_prometheus_url_are_refused(home: Path, kubeconfig: Path) -> None:
    result = berth(home, "env", "configure", "prod", "--provider", "kubernetes",
                   "--prometheus", "https://admin:pw@prom.example")
    assert result.exit_code == 2 and "holds credentials" in result.stderr
    assert not home.exists()


def test_a_context_the_kubeconfig_lacks_is_refused_naming_the_known_ones(home: Path, kubeconfig: Path) -> None:
    result = berth(home, "env", "configure", "prod", "--provider", "kubernetes", "--context", "prod-us")
    assert result.exit_code == 3
    assert f"no context named 'prod-us' in the kubeconfig ({kubeconfig}; known: kind-dev, prod-eu)" in result.stderr
    assert "kubectl config get-contexts" in result.stderr
    assert not home.exists()


def test_kubeconfig_lists_several_files_like_kubectl(home: Path, kubeconfig: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "other-config"
    other.write_text(KUBECONFIG.replace("prod-eu", "staging").replace("current-context: kind-dev\n", ""))
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'missing'}:{kubeconfig}:{other}")
    result = berth(home, "env", "configure", "stage", "--provider", "kubernetes", "--context", "staging")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""  # a missing file in the list is skipped, as kubectl does


def test_a_stored_context_gone_from_the_kubeconfig_is_only_a_warning(home: Path, kubeconfig: Path) -> None:
    environments.save(home, Registry().with_environment(
        Environment("prod", Provider.KUBERNETES, {"context": "gone", "namespace": "ml"})))
    result = berth(home, "env", "configure", "prod", "--namespace", "serving")
    assert result.exit_code == 0, result.output
    assert "warning: no context named 'gone'" in result.stderr
    assert environments.load(home).get("prod").settings == {"context": "gone", "namespace": "serving"}


def test_without_a_kubeconfig_the_context_is_not_checked_and_a_warning_says_so(home: Path,
                                                                               no_kubeconfig: Path) -> None:
    result = berth(home, "env", "configure", "prod", "--provider", "kubernetes", "--context", "later")
    assert result.exit_code == 0, result.output
    assert f"warning: no kubeconfig could be read ({no_kubeconfig})" in result.stderr
    assert "does not exist" not in result.stderr
    assert environments.load(home).get("prod").settings == {"context": "later", "namespace": "default"}


def test_an_unreadable_kubeconfig_is_a_warning(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = tmp_path / "broken"
    broken.write_text("clusters: [unclosed\n")
    monkeypatch.setenv("KUBECONFIG", str(broken))
    result = berth(home, "env", "configure", "prod", "--provider", "kubernetes")
    assert result.exit_code == 0, result.output
    assert f"warning: {broken} cannot be read as a kubeconfig" in result.stderr
    assert "warning: no kubeconfig could be read" in result.stderr


def test_no_current_context_without_context_is_a_warning(home: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config"
    config.write_text(KUBECONFIG.replace("current-context: kind-dev\n", ""))
    monkeypatch.setenv("KUBECONFIG", str(config))
    result = berth(home, "env", "configure", "prod", "--provider", "kubernetes")
    assert result.exit_code == 0, result.output
    assert "has no current context: give one with --context" in result.stderr


@pytest.mark.parametrize(("args", "words"), [
    (["local", "--provider", "kubernetes"], "'local' is built in (this machine's daemon) and has nothing to configure"),
    (["local"], "'local' is built in"),
    (["other", "--provider", "local"], "the local provider is built in as the environment 'local'"),
    (["new"], "'new' is a new environment: say where its APIs run with `--provider kubernetes`"),
    (["Prod", "--provider", "kubernetes"], "'Prod' is not a valid environment name"),
])
def test_configure_refusals(home: Path, kubeconfig: Path, args: list[str], words: str) -> None:
    result = berth(home, "env", "configure", *args)
    assert result.exit_code == 1
    assert words in result.stderr
    assert not home.exists()


def test_an_unknown_provider_is_a_usage_error(home: Path) -> None:
    result = berth(home, "env", "configure", "prod", "--provider", "aws")
    assert result.exit_code == 2 and "'aws' is not one of 'local', 'kubernetes'" in result.output


def test_list_shows_the_settings_set(home: Path, kubeconfig: Path) -> None:
    berth(home, "env", "configure", "prod", "--provider", "kubernetes", "--context", "prod-eu", "--namespace", "ml",
          "--gateway", "infra/edge")
    berth(home, "env", "configure", "dev", "--provider", "kubernetes")
    berth(home, "env", "default", "prod")
    lines = berth(home, "env", "list").stdout.splitlines()
    assert lines[0].split() == ["name", "provider", "default", "context", "namespace", "gateway"]
    assert [line.split() for line in lines[1:]] == [["local", "local"], ["dev", "kubernetes", "default"],
                                                    ["prod", "kubernetes", "*", "prod-eu", "ml", "infra/edge"]]
    assert lines[1].split("local", 2)[2].strip() == ""  # local is not the default: no star
    rows = json.loads(berth(home, "env", "list", "-o", "json").stdout)
    assert rows == [
        {"name": "local", "provider": "local", "default": False, "settings": {}},
        {"name": "dev", "provider": "kubernetes", "default": False, "settings": {"namespace": "default"}},
        {"name": "prod", "provider": "kubernetes", "default": True,
         "settings": {"context": "prod-eu", "namespace": "ml", "gateway": "infra/edge"}}]


def test_list_shows_every_setting_column_in_order(home: Path, kubeconfig: Path) -> None:
    berth(home, "env", "configure", "prod", "--provider", "kubernetes", "--context", "prod-eu",
          "--prometheus", "http://prom:9090", "--image", "team/runtime:2", "--gateway", "edge")
    lines = berth(home, "env", "list").stdout.splitlines()
    assert lines[0].split() == ["name", "provider", "default", "context", "namespace", "prometheus", "image",
                                "gateway"]
    assert lines[2].split() == ["prod", "kubernetes", "prod-eu", "default", "http://prom:9090", "team/runtime:2",
                                "edge"]


def test_delete_forgets_an_environment(home: Path, kubeconfig: Path) -> None:
    berth(home, "env", "configure", "prod", "--provider", "kubernetes")
    berth(home, "env", "configure", "dev", "--provider", "kubernetes")
    result = berth(home, "env", "delete", "dev")
    assert result.exit_code == 0, result.output
    assert result.stdout == "deleted environment dev\n"
    assert "keep running on its cluster" in result.stderr
    assert environments.load(home).names == ["local", "prod"]


def test_deleting_the_default_makes_local_the_default_again(home: Path, kubeconfig: Path) -> None:
    berth(home, "env", "configure", "prod", "--provider", "kubernetes")
    berth(home, "env", "default", "prod")
    result = berth(home, "env", "delete", "prod")
    assert result.exit_code == 0, result.output
    assert result.stdout == "deleted environment prod\nit was the default: the default environment is local again\n"
    assert berth(home, "env", "default").stdout == "local\n"
    assert stored(home) == {"version": 1, "default": "local", "environments": {}}


def test_local_cannot_be_deleted(home: Path) -> None:
    result = berth(home, "env", "delete", "local")
    assert result.exit_code == 1
    assert "'local' is built in and cannot be deleted" in result.stderr
    assert not home.exists()


def test_deleting_an_unknown_environment_is_not_found(home: Path) -> None:
    result = berth(home, "env", "delete", "staging")
    assert result.exit_code == 3
    assert "no environment named 'staging' (known: local)" in result.stderr
    assert not home.exists()


def test_registry_without_keeps_the_default_when_another_is_removed() -> None:
    registry = (Registry().with_environment(Environment("a", Provider.KUBERNETES))
                .with_environment(Environment("b", Provider.KUBERNETES)).with_default("a"))
    assert registry.without("b") == Registry(added=(Environment("a", Provider.KUBERNETES),), default="a")
    assert registry.without("a").default == "local"
