"""server/logs.py: one JSON object per line, with the request id of the request being served."""

from __future__ import annotations

import logging

import orjson
import pytest
from prometheus_client import CollectorRegistry
from server_testkit import FakeRepository, TestClient, fake_config, v2_body

from server.app import build_app
from server.logs import JsonFormatter, request_id_var


def _format(record: logging.LogRecord) -> dict[str, object]:
    doc = orjson.loads(JsonFormatter().format(record))
    assert isinstance(doc, dict)
    return doc


def test_json_lines_carry_request_id_and_extra_fields() -> None:
    token = request_id_var.set("rid-1")
    try:
        record = logging.LogRecord("infergate.x", logging.INFO, __file__, 1, "hello %s", ("you",), None)
        record.port = 8001
        doc = _format(record)
    finally:
        request_id_var.reset(token)
    assert doc["message"] == "hello you" and doc["level"] == "info" and doc["request_id"] == "rid-1"
    assert doc["port"] == 8001 and str(doc["time"]).endswith("Z")


def test_exceptions_are_one_line_with_the_stack() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    doc = _format(record)
    assert "ValueError: boom" in str(doc["exc"])


def test_access_log_names_the_request(caplog: pytest.LogCaptureFixture) -> None:
    app = build_app(
        fake_config(access_log=True), registry=CollectorRegistry(), repository_factory=lambda c: FakeRepository()
    )
    with TestClient(app) as client, caplog.at_level(logging.INFO, logger="infergate.access"):
        client.post("/v2/models/double/infer", json=v2_body([1, 2, 3], [1, 3]), headers={"x-ms-request-id": "acc-9"})
    (record,) = [r for r in caplog.records if r.name == "infergate.access"]
    doc = _format(record)
    assert doc["request_id"] == "acc-9" and doc["status"] == 200 and "/v2/models/double/infer" in str(doc["message"])
