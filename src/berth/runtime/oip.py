"""Open Inference Protocol (KServe v2) REST on every replica, with the binary tensor data extension.

Routes sit under the API's endpoint at the gateway: `/<endpoint>/v2/health/ready`,
`/<endpoint>/v2/models/<model>[/versions/<v>]`, `.../ready`, `.../infer`. ONNX models answer from
their graph; a python predictor takes part by defining `model_metadata` (a dict with `inputs` and
`outputs`, each a list of `{name, datatype, shape}`); its `predict` then gets a dict of numpy arrays
and returns one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from berth import __version__
from berth.runtime.contract import BODY_STREAM, streams_request_body
from berth.runtime.errors import (
    REQUEST_ID_KEY,
    InferenceRequestError,
    ModelNotFound,
    NotReady,
    ReplicaError,
    SerialisationError,
    error_response,
)

if TYPE_CHECKING:
    from berth.runtime.app import ReplicaApp

HEADER_LENGTH = "inference-header-content-length"
NUMPY_DTYPES = {"BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
                "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64", "FP16": "float16",
                "FP32": "float32", "FP64": "float64", "BYTES": "object"}
log = logging.getLogger("berth.replica")


class ModelClient(Protocol):
    """What the inference protocol asks of a model client (`onnx_client`, `python_client`).

    Each method returns None when the client cannot answer from its models (python models are
    opaque to berth); the predictor then answers through `model_metadata` and `predict`.
    """

    def metadata(self, model_name: str | None, model_version: str) -> dict[str, Any] | None: ...

    def infer(self, model_name: str, model_version: str, outputs: list[str],
              tensors: dict[str, Any]) -> dict[str, Any] | None: ...


def routes(app: ReplicaApp) -> list[Route]:
    protocol = Handlers(app)
    model_routes = []
    for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        model_routes += [Route(prefix, protocol.metadata), Route(prefix + "/ready", protocol.model_ready),
                         Route(prefix + "/infer", protocol.infer, methods=["POST"])]
    return [Route("/v2", protocol.server), Route("/v2/health/live", protocol.live),
            Route("/v2/health/ready", protocol.ready), *model_routes]


def _guard(handler: Callable[[Handlers, Request], Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
    async def guarded(self: Handlers, request: Request) -> Response:
        try:
            return await handler(self, request)
        except Exception as raised:  # the predictor's own exceptions included: a JSON 500, traceback logged
            error = self.app.request_error(raised)  # a GPU out of memory is said as such
            request_id = request.scope.get(REQUEST_ID_KEY)
            if not isinstance(error, ReplicaError) or not error.exposed:
                log.error("request %s: inference request failed", request_id, exc_info=error)
            elif error is not raised:
                log.error("request %s: %s", request_id, error, exc_info=raised)
            status, body = error_response(error, request_id)
            return Response(body, status_code=status, media_type="application/json")
    return guarded


class Handlers:
    def __init__(self, app: ReplicaApp) -> None:
        self.app = app

    async def server(self, request: Request) -> Response:
        return JSONResponse({"name": "berth", "version": __version__, "extensions": ["binary_tensor_data"]})

    async def live(self, request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(self, request: Request) -> Response:
        return JSONResponse(_readiness(request, {"ready": self.app.ready}), status_code=200 if self.app.ready else 503)

    @_guard
    async def metadata(self, request: Request) -> Response:
        return JSONResponse(await self.app.run_sync(lambda: self._metadata(request)))

    @_guard
    async def model_ready(self, request: Request) -> Response:
        await self.app.run_sync(lambda: self._metadata(request))
        return JSONResponse(_readiness(request, {"name": request.path_params["model"], "ready": self.app.ready}),
                            status_code=200 if self.app.ready else 503)

    @_guard
    async def infer(self, request: Request) -> Response:
        if not self.app.ready:
            raise NotReady("the predictor is still initialising")
        self._takes_tensors()  # before the body is read: a body_stream API may get bodies of any size
        header, tensors = _parse(await request.body(), request.headers.get(HEADER_LENGTH))
        name, version = request.path_params["model"], str(request.path_params.get("version", "latest"))
        wanted = [o["name"] for o in header.get("outputs", [])]
        models = self.app.models
        outputs = None
        if models is not None:
            outputs = await self.app.run_sync(lambda: models.infer(name, version, wanted, tensors))
        if outputs is None:
            self._declared(name)
            outputs = _arrays(await self.app.call_predict({"payload": tensors, "query_params": {}, "headers": {}}))
        return _encode(name, version, header, outputs)

    def _metadata(self, request: Request) -> dict[str, Any]:
        name, version = request.path_params["model"], str(request.path_params.get("version", "latest"))
        models = self.app.models
        described = models.metadata(name, version) if models is not None else None
        if described is not None:
            return described
        return {"name": name, "versions": ["1"], "platform": "python", **self._declared(name)}

    def _takes_tensors(self) -> None:
        """Only a python predictor takes body_stream, and its own predict answers every inference request."""
        predict = self.app.predict
        if predict is not None and streams_request_body(predict.args):
            raise InferenceRequestError(
                f"this API's predict reads the raw request body ({BODY_STREAM}), which the inference protocol "
                "cannot give it (its tensors are decoded from the whole body): POST the body to the API's own "
                "endpoint instead")

    def _declared(self, name: str) -> dict[str, Any]:
        declared = getattr(self.app.instance, "model_metadata", None)
        if not isinstance(declared, dict):
            raise ModelNotFound("this API declares no model metadata (define model_metadata on the predictor, "
                                "or use type: onnx)", [])
        if name != self.app.settings.api.name:
            raise ModelNotFound(f"no model named {name!r}", [self.app.settings.api.name])
        return declared


def _readiness(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    """The protocol's readiness body; while not ready it is an error too, with `error` and `request_id`."""
    if body["ready"]:
        return body
    return {**body, "error": "the predictor is still initialising",
            "request_id": request.scope.get(REQUEST_ID_KEY)}


def _arrays(result: Any) -> dict[str, Any]:
    import numpy as np

    if not isinstance(result, dict):
        raise SerialisationError("a python predictor serving the inference protocol must return a dict of arrays")
    return {key: np.asarray(value) for key, value in result.items()}


def _parse(body: bytes, header_length: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The JSON header and its input tensors, from JSON data or the binary extension."""
    import numpy as np

    length = int(header_length) if header_length and header_length.isdigit() else len(body)
    try:
        header = json.loads(body[:length])
    except ValueError as exc:
        raise InferenceRequestError(f"the inference request is not valid JSON: {exc}") from exc
    if not isinstance(header, dict) or not isinstance(header.get("inputs", []), list):
        raise InferenceRequestError("the inference request must be a JSON object with a list of `inputs`")
    binary, offset = body[length:], 0
    tensors: dict[str, Any] = {}
    for spec in header.get("inputs", []):
        try:
            name, shape, datatype = spec["name"], spec["shape"], spec["datatype"]
        except (KeyError, TypeError) as exc:
            raise InferenceRequestError(f"each input needs name, shape and datatype ({exc})") from exc
        dtype = NUMPY_DTYPES.get(datatype)
        if dtype is None:
            raise InferenceRequestError(f"input {name!r}: unknown datatype {datatype!r}")
        size = (spec.get("parameters") or {}).get("binary_data_size")
        if size is not None and datatype == "BYTES":
            raise InferenceRequestError("BYTES inputs must be sent as JSON data")
        try:
            if size is not None:
                array = np.frombuffer(binary[offset:offset + int(size)], dtype=dtype)
                offset += int(size)
            else:
                array = np.asarray(spec.get("data"), dtype=dtype)
            tensors[name] = array.reshape(shape)
        except (ValueError, TypeError) as exc:  # data that does not fit the datatype, size or shape
            raise InferenceRequestError(f"input {name!r}: {exc}") from exc
    return header, tensors


def _encode(name: str, version: str, header: dict[str, Any], outputs: dict[str, Any]) -> Response:
    """JSON outputs, or binary ones where the request asked (`parameters.binary_data`)."""
    binary_wanted = {o["name"] for o in header.get("outputs", []) if (o.get("parameters") or {}).get("binary_data")}
    entries, chunks = [], []
    for output_name, value in outputs.items():
        datatype = next((k for k, v in NUMPY_DTYPES.items() if v == str(value.dtype)), "BYTES")
        entry: dict[str, Any] = {"name": output_name, "datatype": datatype, "shape": list(value.shape)}
        if output_name in binary_wanted and datatype != "BYTES":
            raw = value.tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = value.flatten().tolist()
        entries.append(entry)
    body = json.dumps({"model_name": name, "model_version": version, "id": header.get("id", ""),
                       "outputs": entries}).encode()
    if not chunks:
        return Response(body, media_type="application/json")
    return Response(body + b"".join(chunks), media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(body))})
