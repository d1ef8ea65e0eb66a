from pathlib import Path

import pytest

from berth.config.schema import Models
from berth.runtime.errors import ModelNotFound
from berth.runtime.models import ModelCache, model_file, sources


def layout(root: Path) -> Path:
    for model, versions in {"alpha": ["1", "2", "10"], "beta": ["3"]}.items():
        for version in versions:
            (root / "models" / model / version).mkdir(parents=True)
            (root / "models" / model / version / "model.onnx").write_text(f"{model}-{version}")
    (root / "models" / "gamma.onnx").write_text("gamma")
    return root


def test_dir_sources_and_versions(tmp_path: Path) -> None:
    cache = ModelCache(sources(Models(dir="models"), layout(tmp_path), "api"), lambda p: p, None)
    assert cache.names() == ["alpha", "beta", "gamma"]
    assert cache.get("alpha") == ("alpha", "10", tmp_path / "models" / "alpha" / "10")  # numeric, not lexical
    assert cache.get("gamma")[1] == "1"
    with pytest.raises(ModelNotFound) as info:
        cache.get("alpha", "4")
    assert info.value.available == ["alpha:1", "alpha:2", "alpha:10"]


def test_single_path_is_named_after_the_api_and_paths_by_their_names(tmp_path: Path) -> None:
    layout(tmp_path)
    assert list(sources(Models(path="models/gamma.onnx"), tmp_path, "api")) == ["api"]
    named = sources(Models.model_validate({"paths": [{"name": "a", "path": "models/alpha"}]}), tmp_path, "api")
    assert named["a"].path == tmp_path / "models" / "alpha"
    assert model_file(tmp_path / "models" / "alpha" / "2").read_text() == "alpha-2"


def test_cache_loads_on_first_use_and_evicts_the_least_recently_used(tmp_path: Path) -> None:
    loads: list[str] = []

    def load(path: Path) -> str:
        loads.append(path.name)
        return model_file(path).read_text()

    cache = ModelCache(sources(Models(dir="models"), layout(tmp_path), "api"), load, capacity=2)
    assert cache.get("alpha") == ("alpha", "10", "alpha-10")
    assert cache.get("beta")[2] == "beta-3"
    assert cache.get("alpha", "10")[2] == "alpha-10"  # cached: no new load
    cache.get("gamma")  # evicts beta, the least recently used
    assert cache.loaded == [("alpha", "10"), ("gamma", "1")]
    cache.get("beta")
    assert loads == ["10", "3", "gamma.onnx", "3"]


def test_missing_models_list_the_available_ones(tmp_path: Path) -> None:
    cache = ModelCache(sources(Models(dir="models"), layout(tmp_path), "api"), lambda p: p, capacity=None)
    with pytest.raises(ModelNotFound) as info:
        cache.get("delta")
    assert info.value.available == ["alpha", "beta", "gamma"]
    with pytest.raises(ModelNotFound, match="name a model"):
        cache.get(None)


@pytest.mark.parametrize(
    ("fields", "message"),
    [({}, "exactly one of path, paths or dir"), ({"path": "a", "dir": "b"}, "exactly one"),
     ({"path": "a", "cache_size": 2}, "go together"), ({"path": "a", "cache_size": 3, "disk_cache_size": 2},
                                                        "must not exceed")],
)
def test_models_validation(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Models.model_validate(fields)
