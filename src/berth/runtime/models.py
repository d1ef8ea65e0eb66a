"""Model files on disk: names, version folders, and an LRU cache of what is loaded from them."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from berth.config.schema import Models

MODEL_SUFFIXES = (".onnx",)


class ModelNotFound(LookupError):
    """A request named a model or version that does not exist; the client gets a 404."""

    def __init__(self, message: str, available: list[str]) -> None:
        super().__init__(message)
        self.available = available


class ModelInputError(ValueError):
    """The request's inputs do not fit the model; the client gets a 400 that says how."""


@dataclass(frozen=True)
class ModelSource:
    name: str
    path: Path  # a model file, or a folder of numbered version folders

    def versions(self) -> dict[str, Path]:
        """Version -> model path; a plain file is version "1"."""
        if self.path.is_file():
            return {"1": self.path}
        found = {child.name: child for child in self.path.iterdir() if child.is_dir() and child.name.isdigit()}
        if not found:
            return {"1": self.path}
        return found

    def resolve(self, version: str) -> tuple[str, Path]:
        versions = self.versions()
        if version == "latest":
            version = max(versions, key=int)
        if version not in versions:
            raise ModelNotFound(f"model {self.name!r} has no version {version!r}",
                                [f"{self.name}:{v}" for v in sorted(versions, key=int)])
        return version, versions[version]


def sources(models: Models, project: Path, default_name: str,
            resolve: Callable[[str], Path] | None = None) -> dict[str, ModelSource]:
    """Every model a predictor may use, by name. A single `path` is named after the API.

    `resolve` turns a configured path into a local one (remote URIs are downloaded by it).
    """
    local = resolve or (lambda path: project / path)
    if models.path:
        return {default_name: ModelSource(default_name, local(models.path))}
    if models.paths:
        return {p.name: ModelSource(p.name, local(p.path)) for p in models.paths}
    assert models.dir is not None
    folder = local(models.dir)
    return {child.stem if child.is_file() else child.name: ModelSource(child.stem if child.is_file() else child.name,
                                                                         child)
            for child in sorted(folder.iterdir())
            if (child.is_dir() or child.suffix in MODEL_SUFFIXES) and not child.name.startswith(".")}


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

    def get(self, name: str | None = None, version: str = "latest") -> tuple[str, str, Any]:
        """(name, version, loaded model)."""
        source = self.source(name)
        resolved, path = source.resolve(str(version))
        key = (source.name, resolved)
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return source.name, resolved, self._loaded[key]
            model = self.load(path)
            self._loaded[key] = model
            while self.capacity is not None and len(self._loaded) > self.capacity:
                self._loaded.popitem(last=False)
            return source.name, resolved, model

    @property
    def loaded(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._loaded)
