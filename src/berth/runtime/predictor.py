"""Loading the user's predictor class and calling it with the arguments it declares."""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from berth.errors import PredictorLoadError

PREDICT_ARGS = frozenset({"payload", "query_params", "headers", "batch_id"})
POST_PREDICT_ARGS = PREDICT_ARGS | {"response"}
INIT_ARGS = frozenset({"config", "python_client", "onnx_client", "job_spec"})
CLASS_NAME = "PythonPredictor"


@dataclass(frozen=True)
class BoundMethod:
    """A predictor method and the injectable argument names it declares."""

    func: Callable[..., Any]
    args: frozenset[str]
    is_async: bool

    def call(self, values: Mapping[str, Any]) -> Any:
        return self.func(**{name: values[name] for name in self.args})


def load_class(path: Path, python_path: Path, class_name: str = CLASS_NAME) -> type:
    """Import `path` as a module and return its predictor class (PythonPredictor or ONNXPredictor)."""
    if str(python_path) not in sys.path:
        sys.path.insert(0, str(python_path))
    if not path.is_file():
        raise PredictorLoadError(f"predictor file not found: {path}")
    spec = importlib.util.spec_from_file_location("berth_predictor", path)
    if spec is None or spec.loader is None:
        raise PredictorLoadError(f"cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules["berth_predictor"] = module
    spec.loader.exec_module(module)  # user code: its exceptions propagate with their traceback
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        found = [name for name, value in vars(module).items() if isinstance(value, type)
                 and value.__module__ == module.__name__]
        raise PredictorLoadError(
            f"{path.name} defines no class {class_name} (classes found: {', '.join(found) or 'none'})"
        )
    return cls


def construct(cls: type, config: Mapping[str, Any], clients: Mapping[str, Any] | None = None) -> Any:
    """Instantiate the predictor, passing only the constructor arguments it names."""
    available = {"config": dict(config), "python_client": None, "onnx_client": None, "job_spec": None,
                 **(clients or {})}
    names = _declared(cls.__init__, INIT_ARGS, "__init__")  # type: ignore[misc]
    return cls(**{name: available[name] for name in names})


def bind(instance: Any, name: str, allowed: frozenset[str]) -> BoundMethod | None:
    method = getattr(instance, name, None)
    if method is None:
        return None
    if not callable(method):
        raise PredictorLoadError(f"{CLASS_NAME}.{name} must be a method")
    args = _declared(method, allowed, name)
    return BoundMethod(func=method, args=args, is_async=inspect.iscoroutinefunction(method))


def bind_predict(instance: Any) -> BoundMethod:
    method = bind(instance, "predict", PREDICT_ARGS)
    if method is None:
        raise PredictorLoadError(f"{CLASS_NAME} has no predict method")
    return method


def _declared(func: Callable[..., Any], allowed: frozenset[str], label: str) -> frozenset[str]:
    params = inspect.signature(func).parameters
    names = [p.name for p in params.values() if p.name != "self"
             and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    unknown = [name for name in names if name not in allowed]
    required_unknown = [name for name in unknown if params[name].default is inspect.Parameter.empty]
    if required_unknown:
        raise PredictorLoadError(
            f"{CLASS_NAME}.{label} declares {', '.join(required_unknown)}, which berth cannot supply; "
            f"it may declare any of: {', '.join(sorted(allowed))}"
        )
    return frozenset(name for name in names if name in allowed)
