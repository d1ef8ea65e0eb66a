"""Model sources (local files, version folders, remote prefixes) and an LRU cache of loaded models."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from berth.config.schema import Models
from berth.runtime.errors import ModelNotFound

if TYPE_CHECKING:
    from berth.runtime.remote import RemoteStore

MODEL_SUFFIXES = (".onnx",)


class ModelSource(Protocol):
    @property
    def name(self) -> str: ...

    def versions(self) -> list[str]:
        """Version names, numeric; a model without version folders has version "1"."""

    def open(self, version: str) -> AbstractContextManager[Path]:
        """The version's local path, valid while the context is held."""


def by_number(versions: list[str]) -> list[str]:
    return sorted(versions, key=int)


@dataclass(frozen=True)
class LocalSource:
    name: str
    path: Path  # a model file, or a folder of numbered version folders

    def _paths(self) -> dict[str, Path]:
        if self.path.is_file():
            return {"1": self.path}
        found = {child.name: child for child in self.path.iterdir() if child.is_dir() and child.name.isdigit()}
        return found or {"1": self.path}

    def versions(self) -> list[str]:
        return by_number(list(self._paths()))

    @contextmanager
    def open(self, version: str) -> Iterator[Path]:
        yield self._paths()[version]


@dataclass(frozen=True)
class RemoteSource:
    name: str
    uri: str
    store: RemoteStore

    def _version_folders(self) -> list[str]:
        children = self.store.children(self.uri)
        firsts = {child.split("/")[0] for child in children}
        if children and all("/" in child for child in children) and all(f.isdigit() for f in firsts):
            return by_number(list(firsts))
        return []

    def versions(self) -> list[str]:
        return self._version_folders() or ["1"]

    def open(self, version: str) -> AbstractContextManager[Path]:
        """Downloads just this version, on first use."""
        versioned = bool(self._version_folders())
        return self.store.open(f"{self.uri.rstrip('/')}/{version}" if versioned else self.uri)


def sources(models: Models, project: Path, default_name: str,
            remote: RemoteStore | None = None) -> dict[str, ModelSource]:
    """Every model a predictor may use, by name. A single `path` is named after the API."""

    def source(name: str, path: str) -> ModelSource:
        if "://" in path:
            if remote is None:
                raise ModelNotFound(f"{path}: remote models need a model cache", [])
            return RemoteSource(name, path, remote)
        return LocalSource(name, project / path)

    if models.path:
        return {default_name: source(default_name, models.path)}
    if models.paths:
        return {p.name: source(p.name, p.path) for p in models.paths}
    assert models.dir is not None
    if "://" in models.dir:
        assert remote is not None
        base = models.dir.rstrip("/")
        names = {child.split("/")[0] for child in remote.children(base)}
        return {_stem(n): RemoteSource(_stem(n), f"{base}/{n}", remote) for n in sorted(names)}
    folder = project / models.dir
    return {_stem(c.name): LocalSource(_stem(c.name), c) for c in sorted(folder.iterdir())
            if (c.is_dir() or c.suffix in MODEL_SUFFIXES) and not c.name.startswith(".")}


def _stem(name: str) -> str:
    return name[: -len(suffix)] if (suffix := next((s for s in MODEL_SUFFIXES if name.endswith(s)), "")) else name


def model_file(path: Path) -> Path:
    """The model file inside a version folder (the only one with a known suffix), or the file itself."""
    if path.is_file():
        return path
    files = [child for child in sorted(path.iterdir()) if child.suffix in MODEL_SUFFIXES]
    if len(files) != 1:
        raise ModelNotFound(f"{path} should hold exactly one {'/'.join(MODEL_SUFFIXES)} file, found {len(files)}",
                            [])
    return files[0]


class ModelCache:
    """Loads models on first use and keeps at most `capacity` in memory, least recently used out first."""

    def __init__(self, sources_: dict[str, ModelSource], load: Callable[[Path], Any], capacity: int | None) -> None:
        self.sources = sources_
        self.load = load
        self.capacity = capacity
        self._loaded: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._lock = threading.Lock()  # predict may run on several threads

    def names(self) -> list[str]:
        return sorted(self.sources)

    def source(self, name: str | None) -> ModelSource:
        if name is None:
            if len(self.sources) == 1:
                return next(iter(self.sources.values()))
            raise ModelNotFound("name a model: this API serves several", self.names())
        source = self.sources.get(name)
        if source is None:
            raise ModelNotFound(f"no model named {name!r}", self.names())
        return source

    def resolve(self, name: str | None, version: str) -> tuple[ModelSource, str]:
        source = self.source(name)
        versions = source.versions()
        resolved = versions[-1] if version == "latest" else str(version)
        if resolved not in versions:
            raise ModelNotFound(f"model {source.name!r} has no version {version!r}",
                                [f"{source.name}:{v}" for v in versions])
        return source, resolved

    def get(self, name: str | None = None, version: str = "latest") -> tuple[str, str, Any]:
        """(name, version, loaded model)."""
        source, resolved = self.resolve(name, version)
        key = (source.name, resolved)
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return source.name, resolved, self._loaded[key]
            with source.open(resolved) as path:
                model = self.load(path)
            self._loaded[key] = model
            while self.capacity is not None and len(self._loaded) > self.capacity:
                self._loaded.popitem(last=False)
            return source.name, resolved, model

    @property
    def loaded(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._loaded)
