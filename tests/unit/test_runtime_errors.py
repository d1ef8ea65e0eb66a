"""One status per kind of runtime error, and one body for it on every route."""

import json

import pytest

from berth.runtime.errors import (
    BatchError,
    InferenceRequestError,
    ModelInputError,
    ModelNotFound,
    NotReady,
    PayloadError,
    RemoteModelError,
    SerialisationError,
    error_response,
)


@pytest.mark.parametrize(("error", "status"), [
    (PayloadError("bad body"), 400), (ModelInputError("bad input"), 400), (InferenceRequestError("bad"), 400),
    (NotReady("wait"), 503), (BatchError("batch broke"), 500), (SerialisationError("unsendable"), 500),
])
def test_each_error_carries_its_status_and_message(error: Exception, status: int) -> None:
    assert error_response(error, "r-1") == (status, json.dumps({"error": str(error), "request_id": "r-1"}).encode())


def test_a_missing_model_lists_those_there_are() -> None:
    status, body = error_response(ModelNotFound("no model named 'c'", ["a", "b"]))
    assert (status, json.loads(body)) == (404, {"error": "no model named 'c'", "available": ["a", "b"]})


@pytest.mark.parametrize("error", [RemoteModelError("cannot download s3://secret/m"), KeyError("user bug")])
def test_what_the_client_may_not_read_is_an_internal_error(error: Exception) -> None:
    assert error_response(error, "r-2") == (500, b'{"error": "internal server error", "request_id": "r-2"}')


def test_errors_keep_the_builtin_bases_callers_may_catch() -> None:
    assert isinstance(ModelNotFound("x", []), LookupError)
    assert isinstance(ModelInputError("x"), ValueError)
    assert isinstance(RemoteModelError("x"), RuntimeError)
