"""`python_client`: multi-model access for python predictors with a `load_model(self, model_path)`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from berth.errors import PredictorLoadError
from berth.runtime.models import ModelCache, ModelSource


class PythonClient:
    """Cortex's `python_client.get_model(model_name, model_version)`; models load on first use (LRU)."""

    def __init__(self, sources: dict[str, ModelSource], capacity: int | None) -> None:
        self.sources = sources
        self.capacity = capacity
        self.cache: ModelCache | None = None

    def bind(self, predictor: Any) -> None:
        load_model = getattr(predictor, "load_model", None)
        if not callable(load_model):
            raise PredictorLoadError("predictor.models is set, so PythonPredictor needs a "
                                     "load_model(self, model_path) method")
        self.cache = ModelCache(self.sources, lambda path: load_model(str(Path(path))), self.capacity)

    def metadata(self, model_name: str | None = None, model_version: str = "latest") -> None:
        """Python models are opaque to berth: the predictor describes them (`model_metadata`)."""
        return None

    def infer(self, model_name: str, model_version: str, outputs: list[str], tensors: dict[str, Any]) -> None:
        """The predictor's own `predict` answers inference requests: nothing to run here."""
        return None

    def get_model(self, model_name: str | None = None, model_version: str = "latest") -> Any:
        if self.cache is None:
            raise RuntimeError("python_client.get_model cannot be called from __init__: models load on first use")
        return self.cache.get(model_name, str(model_version))[2]
