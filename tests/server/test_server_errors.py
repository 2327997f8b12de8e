"""server/errors.py: the one status table, and rendering per protocol."""

from __future__ import annotations

import logging

import orjson
import pytest
from starlette.exceptions import HTTPException

from scoring import (
    ConfigError,
    DeadlineExceeded,
    InferenceFailed,
    InvalidInput,
    ModelLoadError,
    ModelNotFound,
    ModelNotReady,
    Overloaded,
    ScoringError,
    VersionNotFound,
)
from server import errors


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (InvalidInput("x: bad", field="x"), 400),
        (ConfigError("batching.max_batch_size", "must be >= 1", 0), 400),
        (ModelLoadError("m:1 model.onnx: broken"), 400),
        (errors.BadRequest("bad"), 400),
        (errors.AmbiguousModel("which one?"), 400),
        (ModelNotFound("m"), 404),
        (VersionNotFound("m", 3), 404),
        (errors.MethodNotAllowed("no", allow="GET"), 405),
        (errors.PayloadTooLarge("big"), 413),
        (errors.UnsupportedMediaType("png"), 415),
        (InferenceFailed("boom"), 500),
        (ScoringError("generic"), 500),
        (ModelNotReady("m", 1, "unloaded"), 503),
        (Overloaded("full", retry_after_s=0.2), 503),
        (errors.Unavailable("draining"), 503),
        (DeadlineExceeded("late"), 504),
        (errors.ScoringTimeout("late"), 504),
        (HTTPException(404), 404),
        (RuntimeError("bug"), 500),
    ],
)
def test_status_table(exc: Exception, status: int) -> None:
    assert errors.status_of(exc) == status


def test_render_uses_error_on_v2_and_message_on_azureml() -> None:
    exc = InvalidInput("inputs[0].shape: must be a list", field="inputs[0].shape")
    status, body, _ = errors.render(exc, "v2")
    assert status == 400 and orjson.loads(body) == {"error": "inputs[0].shape: must be a list"}
    _, body, _ = errors.render(exc, "azureml")
    assert orjson.loads(body) == {"message": "inputs[0].shape: must be a list"}


def test_overloaded_carries_retry_after_rounded_up() -> None:
    _, _, headers = errors.render(Overloaded("full", retry_after_s=1.2), "v2")
    assert (b"retry-after", b"2") in headers


def test_unexpected_errors_are_logged_with_stack_and_hidden(caplog: pytest.LogCaptureFixture) -> None:
    try:
        raise RuntimeError("password=hunter2")
    except RuntimeError as exc:
        with caplog.at_level(logging.ERROR, logger="infergate.server"):
            status, body, _ = errors.render(exc, "v2", request_id="r-1")
    assert status == 500
    assert b"hunter2" not in body and orjson.loads(body) == {"error": "internal server error"}
    record = caplog.records[-1]
    assert record.exc_info is not None and getattr(record, "request_id") == "r-1"


def test_inference_failures_send_their_message() -> None:
    status, body, _ = errors.render(InferenceFailed("run() raised ValueError: bad row"), "azureml")
    assert status == 500 and orjson.loads(body) == {"message": "run() raised ValueError: bad row"}
