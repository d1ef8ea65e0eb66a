"""The RealtimeAPI spec as frozen pydantic models, with Cortex's defaults and validation rules."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from berth.config.units import format_duration, parse_duration, parse_quantity

Duration = Annotated[float, BeforeValidator(parse_duration)]
Quantity = Annotated[float, BeforeValidator(parse_quantity)]

NAME_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
ENDPOINT_PATTERN = re.compile(r"^(/[A-Za-z0-9._~-]+)+$")
_PERCENT = re.compile(r"^(\d+)%$")

CROSS_FIELD = "cross_field"
# A rule broken by several fields together: its message and the fields it reads (dotted, relative
# to the model that checks it). The loader reports every one, and uses the fields to tell whether
# the rule still means something when one of them was itself invalid.
CrossField = tuple[str, tuple[str, ...]]


def refuse(problems: list[CrossField]) -> None:
    """Raise every broken cross-field rule of one model as one error the loader splits again."""
    if problems:
        raise PydanticCustomError(CROSS_FIELD, "{summary}",
                                  {"summary": "; ".join(message for message, _ in problems),
                                   "problems": tuple(problems)})


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ServerSideBatching(Model):
    max_batch_size: int = Field(ge=2, le=1024)
    batch_interval: Duration

    @field_validator("batch_interval")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be greater than 0s")
        return value


class ModelPath(Model):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    path: str


class Models(Model):
    """Where models live (Cortex's `predictor.models`): one `path`, named `paths`, or a `dir` of them.

    A model's path is a model file, or a folder of version folders (`1/`, `2/`, ...; "latest" is
    the highest). Paths are relative to the project folder.
    """

    path: str | None = None
    paths: tuple[ModelPath, ...] | None = None
    dir: str | None = None
    cache_size: int | None = Field(default=None, gt=0)  # models kept loaded in memory (LRU)
    disk_cache_size: int | None = Field(default=None, gt=0)  # accepted for Cortex; models are local files

    @model_validator(mode="after")
    def _one_source(self) -> Models:
        problems: list[CrossField] = []
        given = [name for name in ("path", "paths", "dir") if getattr(self, name)]
        if len(given) != 1:
            problems.append((f"give exactly one of path, paths or dir (got {', '.join(given) or 'none'})",
                             ("path", "paths", "dir")))
        if self.paths is not None and len({p.name for p in self.paths}) != len(self.paths):
            problems.append(("model names in paths must be unique", ("paths",)))
        if (self.cache_size is None) != (self.disk_cache_size is None):
            problems.append(("cache_size and disk_cache_size go together (Cortex's rule)",
                             ("cache_size", "disk_cache_size")))
        if self.cache_size and self.disk_cache_size and self.cache_size > self.disk_cache_size:
            problems.append(("cache_size must not exceed disk_cache_size", ("cache_size", "disk_cache_size")))
        refuse(problems)
        return self


class Predictor(Model):
    type: Literal["python", "onnx"]
    path: str | None = None  # required for python; optional for onnx (inputs then go straight to the model)
    models: Models | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    python_path: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    processes_per_replica: int = Field(default=1, ge=1, le=100)
    threads_per_process: int = Field(default=1, ge=1)
    server_side_batching: ServerSideBatching | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("type", mode="before")
    @classmethod
    def _known_type(cls, value: object) -> object:
        if value == "tensorflow":
            raise ValueError("predictor type 'tensorflow' is not supported; export the model to ONNX and use "
                             "type: onnx, or load it in a type: python predictor")
        return value

    @model_validator(mode="before")
    @classmethod
    def _cortex_names(cls, data: object) -> object:
        # Cortex v0.25 called the python predictor's models `multi_model_reloading`.
        if isinstance(data, dict) and "multi_model_reloading" in data and "models" not in data:
            data = {**data, "models": data["multi_model_reloading"]}
            del data["multi_model_reloading"]
        return data

    @model_validator(mode="after")
    def _needs(self) -> Predictor:
        problems: list[CrossField] = []
        if self.type == "python" and not self.path:
            problems.append(("a python predictor needs path: the file holding class PythonPredictor",
                             ("path", "type")))
        if self.type == "onnx" and self.models is None:
            problems.append(("an onnx predictor needs models: {path: model.onnx} (or paths, or dir)",
                             ("models", "type")))
        if self.models and self.models.cache_size and self.processes_per_replica > 1:
            problems.append(("models.cache_size needs processes_per_replica: 1 (Cortex's rule)",
                             ("processes_per_replica", "models")))
        refuse(problems)
        return self

    @property
    def class_name(self) -> str:
        return "ONNXPredictor" if self.type == "onnx" else "PythonPredictor"


class Compute(Model):
    cpu: Quantity = 0.2
    mem: Quantity | None = None
    gpu: float = Field(default=0, ge=0)

    @field_validator("cpu")
    @classmethod
    def _min_cpu(cls, value: float) -> float:
        if value < 0.02:
            raise ValueError(f"must be at least 20m (got {value * 1000:g}m)")
        return value

    @field_validator("gpu")
    @classmethod
    def _whole_beyond_one(cls, value: float) -> float:
        if value > 1 and value != int(value):
            raise ValueError(f"a fraction of one GPU or a whole number of GPUs (got {value:g})")
        return value

    @field_validator("mem")
    @classmethod
    def _min_mem(cls, value: float | None) -> float | None:
        if value is not None and value < 20 * 2**20:
            raise ValueError("must be at least 20Mi")
        return value


class Autoscaling(Model):
    min_replicas: int = Field(default=1, ge=0)  # 0: scale to zero
    max_replicas: int = Field(default=100, ge=1)
    init_replicas: int | None = Field(default=None, ge=0)
    target_replica_concurrency: float | None = Field(default=None, gt=0)
    max_replica_concurrency: int = Field(default=1024, gt=0, le=65535)
    window: Duration = 60.0
    downscale_stabilization_period: Duration = 300.0
    upscale_stabilization_period: Duration = 60.0
    max_downscale_factor: float = Field(default=0.75, ge=0, lt=1)
    max_upscale_factor: float = Field(default=1.5, gt=1)
    downscale_tolerance: float = Field(default=0.05, ge=0, lt=1)
    upscale_tolerance: float = Field(default=0.05, ge=0)
    # new: while an API scaled to zero starts a replica, the gateway holds this many requests ...
    scale_from_zero_queue: int = Field(default=1024, ge=1)
    # ... for at most this long, then answers 503
    scale_from_zero_timeout: Duration = 120.0

    @field_validator("window")
    @classmethod
    def _window(cls, value: float) -> float:
        if value < 10 or value % 10 != 0:
            raise ValueError(f"must be a multiple of 10s (got {format_duration(value)})")
        return value

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        problems: list[CrossField] = []
        if self.min_replicas > self.max_replicas:
            problems.append((f"min_replicas ({self.min_replicas}) must not exceed max_replicas "
                             f"({self.max_replicas})", ("min_replicas", "max_replicas")))
        init = self.init_replicas
        if init is not None and not self.min_replicas <= init <= self.max_replicas:
            problems.append((f"init_replicas ({init}) must lie between min_replicas ({self.min_replicas}) "
                             f"and max_replicas ({self.max_replicas})",
                             ("init_replicas", "min_replicas", "max_replicas")))
        target = self.target_replica_concurrency
        if target is not None and target > self.max_replica_concurrency:
            problems.append((f"target_replica_concurrency ({target:g}) must not exceed "
                             f"max_replica_concurrency ({self.max_replica_concurrency})",
                             ("target_replica_concurrency", "max_replica_concurrency")))
        refuse(problems)
        return self


def _surge_value(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected an integer or a percentage such as 25% (got {value!r})")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"must not be negative (got {value})")
        return value
    match = _PERCENT.match(value.strip())
    if not match:
        raise ValueError(f"expected an integer or a percentage such as 25% (got {value!r})")
    if int(match.group(1)) > 100:
        raise ValueError(f"a percentage must be at most 100% (got {value})")
    return value.strip()


class UpdateStrategy(Model):
    max_surge: Annotated[int | str, BeforeValidator(_surge_value)] = "25%"
    max_unavailable: Annotated[int | str, BeforeValidator(_surge_value)] = "25%"

    @model_validator(mode="after")
    def _not_both_zero(self) -> UpdateStrategy:
        if _is_zero(self.max_surge) and _is_zero(self.max_unavailable):
            refuse([("max_surge and max_unavailable must not both be 0", ("max_surge", "max_unavailable"))])
        return self


def _is_zero(value: int | str) -> bool:
    return value in (0, "0%")


class Networking(Model):
    endpoint: str | None = None
    # new: seconds the gateway waits for a replica's response before answering 504; generous,
    # since predictions can be long
    timeout: Duration = 600.0
    # new: the fraction of requests the gateway writes a line for in logs/<api>/requests-<worker>.log
    request_log_sample_rate: float = 1.0
    # new: `required`: every request carries an API key (`berth key create`); see docs/api-keys.md
    api_keys: Literal["required", "none"] = "none"

    @field_validator("request_log_sample_rate")
    @classmethod
    def _sample_rate(cls, value: float) -> float:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"expected a fraction of requests from 0 (none) to 1 (every request), "
                             f"such as 0.1 for one in ten (got {value:g})")
        return value

    @field_validator("timeout")
    @classmethod
    def _positive_timeout(cls, value: float) -> float:
        if value <= 0:
            raise ValueError(f"must be greater than 0s (got {format_duration(value)})")
        return value

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        endpoint = "/" + value.strip().strip("/")
        if not ENDPOINT_PATTERN.match(endpoint):
            raise ValueError(
                f"expected a URL path of letters, digits and . _ ~ - such as /my-api (got {value!r})"
            )
        if endpoint.startswith("/_berth"):
            raise ValueError("paths under /_berth are reserved for berth itself")
        return endpoint


class Monitoring(Model):
    model_type: Literal["classification", "regression"] = "classification"
    key: str | None = None


class RealtimeAPI(Model):
    name: str = Field(max_length=63)
    kind: Literal["RealtimeAPI"]
    predictor: Predictor
    compute: Compute = Field(default_factory=Compute)
    autoscaling: Autoscaling = Field(default_factory=Autoscaling, validate_default=True)
    update_strategy: UpdateStrategy = Field(default_factory=UpdateStrategy)
    networking: Networking = Field(default_factory=Networking, validate_default=True)
    monitoring: Monitoring | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_PATTERN.match(value):
            raise ValueError(
                "must be lower-case letters, digits and '-', starting and ending with a "
                f"letter or digit (got {value!r})"
            )
        return value

    @field_validator("kind", mode="before")
    @classmethod
    def _known_kind(cls, value: object) -> object:
        if value in ("BatchAPI", "TaskAPI", "AsyncAPI"):
            raise ValueError(f"kind {value!r} is not supported yet; use kind: RealtimeAPI")
        return value

    @field_validator("autoscaling")
    @classmethod
    def _autoscaling_defaults(cls, value: Autoscaling, info: ValidationInfo) -> Autoscaling:
        predictor = info.data.get("predictor")
        update: dict[str, Any] = {}
        if value.init_replicas is None:
            update["init_replicas"] = value.min_replicas
        if value.target_replica_concurrency is None and isinstance(predictor, Predictor):
            target = predictor.processes_per_replica * predictor.threads_per_process
            # One that does not fit stays unset, for _default_target_fits to report with the
            # rest rather than alone here.
            if target <= value.max_replica_concurrency:
                update["target_replica_concurrency"] = float(target)
        return value.model_copy(update=update) if update else value

    @field_validator("networking")
    @classmethod
    def _default_endpoint(cls, value: Networking, info: ValidationInfo) -> Networking:
        name = info.data.get("name")
        if value.endpoint is None and isinstance(name, str):
            return value.model_copy(update={"endpoint": "/" + name})
        return value

    @model_validator(mode="after")
    def _default_target_fits(self) -> RealtimeAPI:
        if self.autoscaling.target_replica_concurrency is None:
            target = self.predictor.processes_per_replica * self.predictor.threads_per_process
            refuse([(f"the default target_replica_concurrency (processes x threads = {target}) "
                     f"exceeds max_replica_concurrency ({self.autoscaling.max_replica_concurrency})",
                     ("autoscaling.max_replica_concurrency", "predictor.processes_per_replica",
                      "predictor.threads_per_process"))])
        return self

    @property
    def endpoint(self) -> str:
        return self.networking.endpoint or "/" + self.name

    @property
    def init_replicas(self) -> int:
        return self.autoscaling.init_replicas or self.autoscaling.min_replicas


API = RealtimeAPI
