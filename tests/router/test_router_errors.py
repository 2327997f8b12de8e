"""The one status table: every router error's status, headers and JSON body."""

from __future__ import annotations

import logging

import orjson
import pytest

from router.auth import AuthFailed
from router.config import EndpointNotFound, VersionConflict
from router.errors import (
    NoHealthyReplica,
    NotFound,
    ReplicaBusy,
    UpstreamTimeout,
    UpstreamUnavailable,
    classify,
    render_error,
)
from router.keys import InvalidKeyRequest, UnknownEndpoint
from scoring import ConfigError


@pytest.mark.parametrize(
    ("exc", "status", "kind"),
    [
        (AuthFailed("expired"), 401, "unauthorized"),
        (ConfigError("traffic_percentile", "must be between 0 and 100", 150), 400, "invalid_request"),
        (InvalidKeyRequest("keyType", "must be 'Primary' or 'Secondary'"), 400, "invalid_request"),
        (VersionConflict("dup"), 409, "conflict"),
        (EndpointNotFound("nope"), 404, "not_found"),
        (UnknownEndpoint("nope"), 404, "not_found"),
        (NotFound("nope"), 404, "not_found"),
        (ReplicaBusy("full", 2.5), 503, "overloaded"),
        (NoHealthyReplica("none"), 503, "no_healthy_replica"),
        (UpstreamUnavailable("refused"), 502, "upstream_unavailable"),
        (UpstreamTimeout("slow"), 504, "upstream_timeout"),
        (KeyError("internal detail"), 500, "internal_error"),
    ],
)
def test_status_table(exc: Exception, status: int, kind: str) -> None:
    assert classify(exc) == (status, kind)


def test_rendered_bodies_and_headers(caplog: pytest.LogCaptureFixture) -> None:
    status, headers, body = render_error(ReplicaBusy("full", 2.5))
    assert status == 503 and (b"retry-after", b"3") in headers
    assert orjson.loads(body) == {"error": "overloaded", "message": "full"}
    status, headers, body = render_error(AuthFailed("invalid_key"))
    assert status == 401 and headers[0][0] == b"www-authenticate" and headers[0][1].startswith(b"Bearer")
    assert orjson.loads(body)["message"] == "authentication failed: invalid_key"
    status, _, body = render_error(ConfigError("traffic_percentile", "must be between 0 and 100", 150))
    assert orjson.loads(body)["message"] == "traffic_percentile: must be between 0 and 100, got 150"
    with caplog.at_level(logging.ERROR, logger="infergate.router"):
        status, _, body = render_error(RuntimeError("secret internals"))
    assert status == 500 and b"secret" not in body
    assert "secret internals" in caplog.text  # logged with its stack, never sent
