"""Named environments, as in Cortex: each names a provider (where APIs run) and its settings.

`local` is built in and is the default until `berth env default` picks another. What the user adds
is kept in `<BERTH_HOME>/environments.json`:

    {
      "version": 1,
      "default": "local",
      "environments": {
        "prod": {"provider": "kubernetes", "settings": {"context": "prod-eu", "namespace": "ml"}}
      }
    }

`settings` is the provider's own business; this module only keeps it. The file is replaced
atomically, so a crash or a concurrent `berth` never leaves half of it behind.
"""

from __future__ import annotations

import enum
import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from berth.errors import BerthError, NotFound

FILE_NAME = "environments.json"
FORMAT_VERSION = 1
LOCAL = "local"
NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")  # usable as it stands in file names and Kubernetes labels


class Provider(enum.StrEnum):
    LOCAL = "local"
    KUBERNETES = "kubernetes"


@dataclass(frozen=True)
class Environment:
    name: str
    provider: Provider
    # Provider-specific (a kube context, a namespace, ...); read-only by convention, never mutated here.
    settings: Mapping[str, Any] = field(default_factory=dict)


BUILT_IN = Environment(LOCAL, Provider.LOCAL)


@dataclass(frozen=True)
class Registry:
    """Every environment and the default one; a value: changes return a new registry."""

    added: tuple[Environment, ...] = ()  # what the user added, sorted by name; `local` is never among them
    default: str = LOCAL

    @property
    def environments(self) -> tuple[Environment, ...]:
        return (BUILT_IN, *self.added)

    @property
    def names(self) -> list[str]:
        return [env.name for env in self.environments]

    def get(self, name: str) -> Environment:
        for env in self.environments:
            if env.name == name:
                return env
        raise NotFound(f"no environment named {name!r} (known: {', '.join(self.names)})",
                       hint="list them with `berth env list`")

    def resolve(self, name: str | None) -> Environment:
        """The environment a command runs against: the one named with `-e`, else the default."""
        return self.get(self.default if name is None else name)

    def with_default(self, name: str) -> Registry:
        return replace(self, default=self.get(name).name)

    def with_environment(self, env: Environment) -> Registry:
        """Add `env`, or replace the one of the same name."""
        if env.name == LOCAL:
            raise BerthError(f"{LOCAL!r} is built in and cannot be redefined", hint="pick another name")
        if not NAME.fullmatch(env.name):
            raise BerthError(f"{env.name!r} is not a valid environment name",
                             hint="use lowercase letters, digits and - (at most 63, starting with a letter or digit)")
        others = [known for known in self.added if known.name != env.name]
        return replace(self, added=tuple(sorted([*others, env], key=lambda known: known.name)))

    def without(self, name: str) -> Registry:
        """Remove the environment `name`; when it was the default, `local` is the default again."""
        if name == LOCAL:
            raise BerthError(f"{LOCAL!r} is built in and cannot be deleted",
                             hint="make another environment the default with `berth env default NAME` instead")
        removed = self.get(name)
        return replace(self, added=tuple(env for env in self.added if env.name != removed.name),
                       default=LOCAL if self.default == removed.name else self.default)

    def to_json(self) -> dict[str, Any]:
        return {"version": FORMAT_VERSION, "default": self.default,
                "environments": {env.name: {"provider": str(env.provider), "settings": dict(env.settings)}
                                 for env in self.added}}

    @classmethod
    def from_json(cls, data: object) -> Registry:
        """The registry a file holds; ValueError says what is wrong with it."""
        if not isinstance(data, dict) or not isinstance(data.get("environments", {}), dict):
            raise ValueError("expected an object with an `environments` object")
        if data.get("version", FORMAT_VERSION) != FORMAT_VERSION:
            raise ValueError(f"format version {data.get('version')!r}; this berth reads version {FORMAT_VERSION}")
        registry = cls()
        for name, entry in data.get("environments", {}).items():
            registry = registry.with_environment(_environment(name, entry))
        default = data.get("default", LOCAL)
        if not isinstance(default, str) or default not in registry.names:
            raise ValueError(f"the default {default!r} is not among the environments ({', '.join(registry.names)})")
        return replace(registry, default=default)


def _environment(name: str, entry: object) -> Environment:
    if not isinstance(entry, dict):
        raise ValueError(f"environment {name!r}: expected an object")
    try:
        provider = Provider(str(entry.get("provider")))
    except ValueError:
        known = ", ".join(str(p) for p in Provider)
        raise ValueError(f"environment {name!r}: unknown provider {entry.get('provider')!r} "
                         f"(known: {known})") from None
    settings = entry.get("settings", {})
    if not isinstance(settings, dict):
        raise ValueError(f"environment {name!r}: `settings` must be an object")
    return Environment(name, provider, settings)


def registry_file(home: Path) -> Path:
    return home / FILE_NAME


def load(home: Path) -> Registry:
    """The registry of the berth instance at `home`; only `local` when nothing was ever saved."""
    path = registry_file(home)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return Registry()
    except OSError as exc:
        raise BerthError(f"cannot read {path}: {exc}") from exc
    try:
        return Registry.from_json(json.loads(text))
    except (ValueError, BerthError) as exc:
        message = exc.message if isinstance(exc, BerthError) else str(exc)
        raise BerthError(f"{path} is not a valid environments file: {message}",
                         hint=f"fix it, or remove it to start again from the built-in {LOCAL!r}") from exc


def save(home: Path, registry: Registry) -> None:
    """Write the registry whole: a temporary file beside the real one, synced, then renamed over it."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = registry_file(home)
    fd, temporary = tempfile.mkstemp(prefix=f".{FILE_NAME}.", dir=home)
    try:
        with os.fdopen(fd, "w") as file:
            json.dump(registry.to_json(), file, indent=2)
            file.write("\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
