"""`berth export`: the objects a deploy to a kubernetes environment applies, as YAML, without a cluster."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from berth.backends import environments
from berth.backends.environments import Environment, Provider, Registry
from berth.backends.kubernetes.render import render_spec, to_yaml
from berth.backends.kubernetes.settings import ClusterSettings
from berth.cli import context
from berth.cli.main import cli
from berth.config.loader import load_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TWO_APIS = """\
- name: hello
  kind: RealtimeAPI
  predictor: {type: python, path: predictor.py, config: {greeting: hello}}
- name: bonjour
  kind: RealtimeAPI
  predictor: {type: python, path: predictor.py, config: {greeting: bonjour}}
  autoscaling: {min_replicas: 2, max_replicas: 5}
"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    def no_cluster(env: Environment, obj: Any) -> Any:
        raise AssertionError("export must not open a backend")

    monkeypatch.setattr(context, "open_backend", no_cluster)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    return tmp_path / "home"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = shutil.copytree(EXAMPLES / "hello", tmp_path / "project")
    (folder / "berth.yaml").write_text(TWO_APIS)
    return folder


def configure(home: Path, name: str = "prod", **settings: str) -> ClusterSettings:
    parsed = ClusterSettings.from_settings(settings)
    registry = environments.load(home).with_environment(Environment(name, Provider.KUBERNETES,
                                                                     parsed.to_settings()))
    environments.save(home, registry)
    return parsed


def berth(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--home", str(home), *args], catch_exceptions=False)


def kinds(text: str) -> list[tuple[str, str]]:
    return [(item["kind"], item["metadata"]["name"]) for item in yaml.safe_load_all(text) if item]


def test_export_prints_exactly_what_render_gives_with_keda_when_prometheus_is_set(home: Path, project: Path) -> None:
    settings = configure(home, namespace="ml", prometheus="http://prometheus.monitoring:9090", gateway="infra/edge")
    result = berth(home, "export", str(project), "-e", "prod")
    assert result.exit_code == 0, result.output
    assert result.stdout == to_yaml(render_spec(load_spec(project), settings, keda=True))
    assert result.stderr == ""
    found = kinds(result.stdout)
    assert ("ScaledObject", "hello") in found and ("ScaledObject", "bonjour") in found
    assert ("HTTPRoute", "hello") in found
    assert not any(kind == "HorizontalPodAutoscaler" for kind, _ in found)
    assert {item["metadata"]["namespace"] for item in yaml.safe_load_all(result.stdout) if item} == {"ml"}


def test_without_prometheus_the_hpa_fallback_is_rendered_with_a_warning(home: Path, project: Path) -> None:
    settings = configure(home)
    result = berth(home, "export", str(project), "-e", "prod")
    assert result.exit_code == 0, result.output
    assert result.stdout == to_yaml(render_spec(load_spec(project), settings, keda=False))
    found = kinds(result.stdout)
    assert ("HorizontalPodAutoscaler", "hello") in found
    assert not any(kind == "ScaledObject" for kind, _ in found)
    assert "warning: environment prod has no prometheus address" in result.stderr
    assert "hello, bonjour" in result.stderr and "berth env configure prod --prometheus URL" in result.stderr


def test_the_default_environment_is_used_without_e(home: Path, project: Path) -> None:
    configure(home, namespace="team", prometheus="http://prom:9090")
    environments.save(home, environments.load(home).with_default("prod"))
    result = berth(home, "export", str(project / "berth.yaml"))
    assert result.exit_code == 0, result.output
    assert all(item["metadata"]["namespace"] == "team" for item in yaml.safe_load_all(result.stdout) if item)


def test_out_writes_one_file_per_api(home: Path, project: Path, tmp_path: Path) -> None:
    settings = configure(home, prometheus="http://prom:9090")
    out = tmp_path / "manifests" / "prod"
    result = berth(home, "export", str(project), "-e", "prod", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in out.iterdir()) == ["bonjour.yaml", "hello.yaml"]  # no temporary left
    objects = render_spec(load_spec(project), settings, keda=True)
    for api in ("hello", "bonjour"):
        mine = [item for item in objects if item["metadata"]["labels"]["berth.dev/api"] == api]
        assert (out / f"{api}.yaml").read_text() == to_yaml(mine)
        assert f"wrote {out / api}.yaml: ConfigMap, Deployment, Service, ScaledObject" in result.stdout
    # again: the files are replaced whole, with the same bytes
    before = (out / "hello.yaml").read_text()
    assert berth(home, "export", str(project), "-e", "prod", "--out", str(out)).exit_code == 0
    assert (out / "hello.yaml").read_text() == before


def test_out_must_be_a_folder(home: Path, project: Path, tmp_path: Path) -> None:
    configure(home, prometheus="http://prom:9090")
    (tmp_path / "file").write_text("")
    result = berth(home, "export", str(project), "-e", "prod", "--out", str(tmp_path / "file"))
    assert result.exit_code == 2 and "is a file" in result.output


def test_export_is_refused_when_the_default_is_local(home: Path, project: Path) -> None:
    result = berth(home, "export", str(project))
    assert result.exit_code == 1
    assert "export renders Kubernetes objects for a kubernetes environment, and the default environment is " \
           "'local'" in result.stderr
    assert "berth env configure prod --provider kubernetes" in result.stderr
    assert result.stdout == ""


def test_export_is_refused_on_local_and_names_the_kubernetes_environments(home: Path, project: Path) -> None:
    configure(home, "prod")
    configure(home, "staging")
    result = berth(home, "export", str(project), "-e", "local")
    assert result.exit_code == 1
    assert "'local' is this machine's daemon" in result.stderr
    assert "pass -e NAME (kubernetes environments: prod, staging)" in result.stderr
    result = berth(home, "export", str(project))
    assert result.exit_code == 1 and "pass -e NAME (kubernetes environments: prod, staging)" in result.stderr


def test_an_unknown_environment_is_not_found(home: Path, project: Path) -> None:
    result = berth(home, "export", str(project), "-e", "nope")
    assert result.exit_code == 3 and "no environment named 'nope'" in result.stderr


def test_an_invalid_spec_is_reported_like_deploy_does(home: Path, project: Path) -> None:
    configure(home)
    (project / "berth.yaml").write_text("- name: hello\n  kind: RealtimeAPI\n  predictor: {type: python}\n")
    result = berth(home, "export", str(project), "-e", "prod")
    assert result.exit_code == 2
    assert "path" in result.stderr
    assert result.stdout == ""


def test_invalid_stored_settings_are_a_config_error(home: Path, project: Path) -> None:
    environments.save(home, Registry().with_environment(
        Environment("prod", Provider.KUBERNETES, {"namespace": "Not Valid"})))
    result = berth(home, "export", str(project), "-e", "prod")
    assert result.exit_code == 2 and "namespace: 'Not Valid'" in result.stderr


def test_an_example_exports(home: Path) -> None:
    configure(home, prometheus="http://prom:9090")
    result = berth(home, "export", str(EXAMPLES / "iris-classifier"), "-e", "prod")
    assert result.exit_code == 0, result.output
    assert ("Deployment", "iris-classifier") in kinds(result.stdout)


def test_a_dot_env_is_never_printed_and_stderr_says_how_to_create_its_secret(home: Path, project: Path,
                                                                             tmp_path: Path) -> None:
    settings = configure(home, namespace="ml", context="prod-eu", prometheus="http://prom:9090")
    (project / ".env").write_text("TOKEN=not-a-real-secret\n")
    result = berth(home, "export", str(project), "-e", "prod")
    assert result.exit_code == 0, result.output
    assert "not-a-real-secret" not in result.output and "TOKEN" not in result.stdout
    assert result.stdout == to_yaml(render_spec(load_spec(project), settings, secret_data=False))
    items = [item for item in yaml.safe_load_all(result.stdout) if item]
    assert not any(item["kind"] == "Secret" for item in items)
    mounted = sorted(volume["secret"]["secretName"] for item in items if item["kind"] == "Deployment"
                     for volume in item["spec"]["template"]["spec"]["volumes"] if "secret" in volume)
    assert [name.rpartition("-")[0] for name in mounted] == ["bonjour-dotenv", "hello-dotenv"]
    for name in mounted:
        assert (f"kubectl --context prod-eu -n ml create secret generic {name} "
                f"--from-file=.env={load_spec(project).root / '.env'}") in result.stderr
    out = tmp_path / "out"
    written = berth(home, "export", str(project), "-e", "prod", "--out", str(out))
    assert written.exit_code == 0, written.output
    assert "not-a-real-secret" not in written.output
    assert not any("not-a-real-secret" in path.read_text() for path in out.iterdir())
    # Without a .env, nothing is said about Secrets.
    (project / ".env").unlink()
    assert "secret" not in berth(home, "export", str(project), "-e", "prod").stderr


def test_code_too_large_for_a_configmap_exports_with_a_baked_image_and_a_note(home: Path, project: Path) -> None:
    configure(home, prometheus="http://prom:9090", image="registry.example/team/big:1")
    (project / "weights.bin").write_bytes(os.urandom(1100 * 1024))
    result = berth(home, "export", str(project), "-e", "prod")
    assert result.exit_code == 0, result.output
    configmaps = [item for item in yaml.safe_load_all(result.stdout) if item and item["kind"] == "ConfigMap"]
    assert configmaps and all("binaryData" not in item for item in configmaps)
    assert "registry.example/team/big:1" in result.stderr and "berth build" in result.stderr
    configure(home, prometheus="http://prom:9090")
    refused = CliRunner().invoke(cli, ["--home", str(home), "export", str(project), "-e", "prod"])
    assert refused.exit_code != 0 and "berth build" in refused.output
