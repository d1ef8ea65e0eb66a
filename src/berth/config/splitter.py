"""The TrafficSplitter spec: one endpoint whose requests go to several APIs by weight (Cortex's
canary / A-B kind), plus berth's shadowing (a copy of every request to one more API) and sticky
splitting by a header value. It lives in the same file as the APIs it splits."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from berth.config.schema import NAME_PATTERN, CrossField, Model, Networking, refuse

# RFC 9110 token characters: what a header name may be made of.
SPLIT_BY = re.compile(r"^header\s+([A-Za-z0-9!#$%&'*+.^_`|~-]+)$")
TOTAL_WEIGHT = 100


class SplitterNetworking(Model):
    endpoint: str | None = None
    # Enforced by the gateway's API-key check; the splitter only carries it.
    api_keys: Literal["required", "none"] = "none"

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return Networking.model_validate({"endpoint": value}).endpoint
        except ValidationError as exc:  # the same rule and wording as an API's endpoint
            raise ValueError(str(exc.errors()[0]["msg"]).removeprefix("Value error, ")) from None


class SplitBackend(Model):
    name: str = Field(max_length=63)
    weight: int = Field(default=0, ge=0, le=100)
    shadow: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_PATTERN.match(value):
            raise ValueError(f"must be the name of a RealtimeAPI: lower-case letters, digits and '-' (got {value!r})")
        return value


class TrafficSplitter(Model):
    name: str = Field(max_length=63)
    kind: Literal["TrafficSplitter"]
    networking: SplitterNetworking = Field(default_factory=SplitterNetworking)
    apis: tuple[SplitBackend, ...]
    split_by: str | None = None  # "header X-User": one value always goes to one backend

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_PATTERN.match(value):
            raise ValueError("must be lower-case letters, digits and '-', starting and ending with a "
                             f"letter or digit (got {value!r})")
        return value

    @field_validator("split_by")
    @classmethod
    def _split_by(cls, value: str | None) -> str | None:
        if value is not None and not SPLIT_BY.match(value.strip()):
            raise ValueError(f"expected 'header <Header-Name>', such as 'header X-User' (got {value!r})")
        return value.strip() if value is not None else None

    @model_validator(mode="after")
    def _rules(self) -> TrafficSplitter:
        problems: list[CrossField] = []
        seen: set[str] = set()
        for index, backend in enumerate(self.apis):
            if backend.name in seen:
                problems.append((f"API {backend.name!r} is listed twice; list each API once",
                                 (f"apis.{index}.name",)))
            seen.add(backend.name)
            if backend.shadow and backend.weight:
                problems.append((f"the shadow API {backend.name!r} takes a copy of every request and answers "
                                 f"no client, so it has no weight (got weight: {backend.weight}); remove it",
                                 (f"apis.{index}.weight",)))
        shadows = [backend.name for backend in self.apis if backend.shadow]
        if len(shadows) > 1:
            problems.append((f"at most one API can be the shadow (got {len(shadows)}: {', '.join(shadows)})",
                             ("apis.0",)))
        serving = self.serving
        total = sum(backend.weight for backend in serving)
        if not serving or not any(backend.weight for backend in serving):
            problems.append(("needs at least one API with shadow: false and a weight above 0 to answer "
                             "requests", ("apis.0",)))
        elif total != TOTAL_WEIGHT:
            problems.append((f"the weights of the serving APIs must sum to {TOTAL_WEIGHT} (got "
                             f"{' + '.join(str(b.weight) for b in serving)} = {total})", ("apis.0",)))
        refuse(problems)
        return self

    @property
    def endpoint(self) -> str:
        return self.networking.endpoint or "/" + self.name

    @property
    def serving(self) -> tuple[SplitBackend, ...]:
        return tuple(backend for backend in self.apis if not backend.shadow)

    @property
    def shadow(self) -> SplitBackend | None:
        return next((backend for backend in self.apis if backend.shadow), None)

    @property
    def header(self) -> str | None:
        """The lower-cased header name requests are split by, if any."""
        match = SPLIT_BY.match(self.split_by) if self.split_by else None
        return match.group(1).lower() if match else None

    @property
    def api_names(self) -> tuple[str, ...]:
        return tuple(backend.name for backend in self.apis)
