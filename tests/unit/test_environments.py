"""The environment registry: the built-in `local`, the default, the file and its atomic replacement."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from berth.backends import environments
from berth.backends.environments import LOCAL, Environment, Provider, Registry
from berth.errors import BerthError, NotFound

PROD = Environment("prod", Provider.KUBERNETES, {"context": "prod-eu", "namespace": "ml"})


def test_local_is_built_in_and_the_default_when_nothing_was_saved(tmp_path: Path) -> None:
    registry = environments.load(tmp_path)
    assert registry.names == [LOCAL]
    assert registry.default == LOCAL
    assert registry.resolve(None) == Environment(LOCAL, Provider.LOCAL)
    assert not (tmp_path / environments.FILE_NAME).exists()


def test_an_unknown_name_is_not_found_and_lists_the_known_ones() -> None:
    registry = Registry().with_environment(PROD)
    with pytest.raises(NotFound) as caught:
        registry.resolve("staging")
    assert "staging" in caught.value.message and "local, prod" in caught.value.message
    assert caught.value.exit_code == 3
    with pytest.raises(NotFound):
        registry.with_default("staging")


def test_resolve_takes_the_named_environment_over_the_default() -> None:
    registry = Registry().with_environment(PROD).with_default("prod")
    assert registry.resolve(None) == PROD
    assert registry.resolve(LOCAL).provider is Provider.LOCAL


def test_changes_return_a_new_registry() -> None:
    registry = Registry()
    changed = registry.with_environment(PROD).with_default("prod")
    assert registry.names == [LOCAL] and registry.default == LOCAL
    assert changed.names == [LOCAL, "prod"] and changed.default == "prod"


def test_adding_a_known_name_replaces_it_and_names_stay_sorted() -> None:
    registry = Registry().with_environment(PROD).with_environment(Environment("dev", Provider.KUBERNETES))
    registry = registry.with_environment(Environment("prod", Provider.KUBERNETES, {"context": "other"}))
    assert registry.names == [LOCAL, "dev", "prod"]
    assert registry.get("prod").settings == {"context": "other"}


@pytest.mark.parametrize("name", [LOCAL, "Prod", "-x", "a b", "x" * 64, ""])
def test_local_cannot_be_redefined_and_names_are_checked(name: str) -> None:
    with pytest.raises(BerthError):
        Registry().with_environment(Environment(name, Provider.KUBERNETES))


def test_save_and_load_round_trip_provider_settings(tmp_path: Path) -> None:
    home = tmp_path / "home"  # not there yet: saving creates it, private
    registry = Registry().with_environment(PROD).with_default("prod")
    environments.save(home, registry)
    assert environments.load(home) == registry
    assert home.stat().st_mode & 0o077 == 0
    assert json.loads((home / "environments.json").read_text()) == {
        "version": 1, "default": "prod",
        "environments": {"prod": {"provider": "kubernetes", "settings": {"context": "prod-eu", "namespace": "ml"}}}}


def test_save_replaces_the_file_whole_and_leaves_no_temporary_behind(tmp_path: Path) -> None:
    environments.save(tmp_path, Registry().with_environment(PROD).with_default("prod"))
    environments.save(tmp_path, Registry())
    assert environments.load(tmp_path) == Registry()
    assert [p.name for p in tmp_path.iterdir()] == ["environments.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    environments.save(tmp_path, Registry().with_environment(PROD))
    before = (tmp_path / "environments.json").read_text()

    def broken(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("berth.backends.environments.os.replace", broken)
    with pytest.raises(OSError):
        environments.save(tmp_path, Registry())
    assert (tmp_path / "environments.json").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["environments.json"]


@pytest.mark.parametrize("content, words", [
    ("{not json", "not a valid environments file"),
    ("[]", "expected an object"),
    ('{"version": 2}', "format version 2"),
    ('{"environments": {"x": {"provider": "mesos"}}}', "unknown provider 'mesos'"),
    ('{"environments": {"x": {"provider": "kubernetes", "settings": []}}}', "`settings` must be an object"),
    ('{"environments": {"local": {"provider": "local"}}}', "built in"),
    ('{"default": "gone"}', "the default 'gone' is not among"),
])
def test_a_bad_file_is_a_clear_error_naming_it(tmp_path: Path, content: str, words: str) -> None:
    (tmp_path / "environments.json").write_text(content)
    with pytest.raises(BerthError) as caught:
        environments.load(tmp_path)
    assert words in caught.value.message
    assert str(tmp_path / "environments.json") in caught.value.message
    assert caught.value.hint and "remove it" in caught.value.hint
