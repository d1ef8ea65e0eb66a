"""Every error the replica runtime raises, and the one way an error becomes a response.

Each class carries the HTTP status its request gets; `error_response` builds the body. The
predict path and the inference protocol both answer through it, so a kind of error gets the same
status on every route.

ReplicaError                  500 unless a subclass says otherwise
├── RequestError              400: the request cannot be served as sent; the message says why
│   ├── PayloadError          the body does not parse as its Content-Type says
│   ├── ModelInputError       the inputs do not fit the model
│   ├── InferenceRequestError an inference protocol request is malformed
│   └── ClientDisconnected    499: the client left while its body was being read (body_stream)
├── ModelNotFound             404: no such model or version; the body lists those there are
├── RouteNotFound             404: the replica has no such path
├── MethodNotAllowed          405: the path does not take that method (the response says which it does)
├── NotReady                  503: the predictor is still initialising
├── PredictError              500: the predictor failed or answered with something unsendable
│   ├── BatchError            a batched predict failed as a whole; each of its requests gets this
│   ├── GpuOutOfMemory        the predict (or its batch) ran out of GPU memory: says so, and what to do
│   └── SerialisationError    the predictor returned something that cannot be sent
└── RemoteModelError          a remote model could not be fetched (its message stays in the log)

Errors outside this tree are the predictor's own: a 500 that says only "internal server error".
Every error body is JSON with `error` and, where a request is being served, `request_id`.
The user-facing errors of the CLI (`berth.errors`, e.g. `PredictorLoadError`) are a separate tree.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

INTERNAL = "internal server error"
REQUEST_ID_KEY = "berth.request_id"  # where a request's scope carries its id to the Starlette routes


class ReplicaError(Exception):
    status: ClassVar[int] = 500
    # Whether the client may read the message; otherwise it goes to the API's log only.
    exposed: ClassVar[bool] = True

    def fields(self) -> dict[str, Any]:
        """What the response body holds besides the message and the request id."""
        return {}


class RequestError(ReplicaError):
    status = 400


class PayloadError(RequestError):
    """The body cannot be parsed as its Content-Type says."""


class ModelInputError(RequestError, ValueError):
    """The request's inputs do not fit the model."""


class InferenceRequestError(RequestError):
    """An Open Inference Protocol request that is not valid JSON, or whose tensors are malformed."""


class ClientDisconnected(RequestError):
    status = 499  # nginx's: nobody is left to read the answer; counted, never logged as an error


class ModelNotFound(ReplicaError, LookupError):
    """A request named a model or version that does not exist."""

    status = 404

    def __init__(self, message: str, available: list[str]) -> None:
        super().__init__(message)
        self.available = available

    def fields(self) -> dict[str, Any]:
        return {"available": self.available}


class RouteNotFound(ReplicaError):
    status = 404


class MethodNotAllowed(ReplicaError):
    status = 405


class NotReady(ReplicaError):
    status = 503


class PredictError(ReplicaError):
    """The predictor's part of a request failed; the client gets the message and a request id."""


class BatchError(PredictError):
    """The batch's predict failed as a whole; every request in it gets this error."""


class GpuOutOfMemory(PredictError):
    """The predict (or its batch) ran out of GPU memory (`berth.runtime.gpu` tells it apart)."""


class SerialisationError(PredictError):
    """The predictor returned something that cannot be sent."""


class RemoteModelError(ReplicaError, RuntimeError):
    """A remote model could not be fetched: at start the replica fails with this message."""

    exposed = False  # bucket names and credentials errors are the operator's business


def error_response(exc: BaseException, request_id: str | None = None) -> tuple[int, bytes]:
    """(status, JSON body) for an error raised while serving a request; no request id, no key."""
    if isinstance(exc, ReplicaError) and exc.exposed:
        status, content = exc.status, {"error": str(exc), **exc.fields()}
    else:
        status, content = 500, {"error": INTERNAL}
    if request_id is not None:
        content["request_id"] = request_id
    return status, json.dumps(content).encode("utf-8")
