"""Property tests: random and adversarial bodies at every route answer 4xx with a JSON
error body (never a 500 or a stack trace), and the server stays healthy afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from server_testkit import TestClient, fake_config, write_models

from server.app import build_app

POST_ROUTES = [
    "/v2/models/tiny/infer",
    "/v2/models/tiny/versions/1/infer",
    "/score",
    "/v2/repository/index",
    "/v2/repository/models/tiny/load",
]
GET_ROUTES = ["/v2/models/{m}", "/v2/models/{m}/ready", "/v2/models/{m}/versions/{v}", "/score", "/swagger.json"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)
datatypes = st.sampled_from(["FP32", "FP16", "INT64", "INT8", "UINT8", "BOOL", "BYTES", "FP64", "nope", 3])
tensor = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["x", "y", "", 5]),
        "datatype": datatypes,
        "shape": st.lists(st.integers(-2, 5), max_size=3) | json_values,
        "data": json_values,
    },
    optional={"parameters": st.dictionaries(st.sampled_from(["binary_data_size", "x"]), json_values, max_size=2)},
)
infer_doc = st.fixed_dictionaries(
    {"inputs": st.lists(tensor, max_size=3) | json_values},
    optional={
        "outputs": st.lists(st.fixed_dictionaries({"name": st.text(max_size=3)}), max_size=2) | json_values,
        "parameters": st.dictionaries(st.sampled_from(["binary_data_output", "x"]), json_values, max_size=2),
        "id": json_values,
    },
)
adversarial = st.sampled_from(
    [
        b"",
        b"{",
        b"[NaN]",
        b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1e400, 1, 1, 1]}]}',
        b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [Infinity, 1, 1, 1]}]}',
        b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "INT64", "data": [99999999999999999999, 1, 1, 1]}]}',
        b'{"inputs": [{"name": "x", "shape": [-1, 4], "datatype": "FP32", "data": [1, 1, 1, 1]}]}',
        b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": ["1", 1, 1, 1]}]}',
        b'{"data": [[' + b"[" * 200 + b"]" * 200 + b"]]}",
        b"\x00\xff\xfe" * 10,
        b'{"data": [[1, 2, 3, 4]]}',
        b'{"inputs": []}',
    ]
)
bodies = adversarial | infer_doc.map(orjson.dumps) | st.binary(max_size=64)
headers = st.sampled_from(
    [
        {},
        {"content-type": "application/json"},
        {"content-type": "application/octet-stream", "inference-header-content-length": "5"},
        {"inference-header-content-length": "-1"},
        {"inference-header-content-length": "99999"},
        {"content-type": "text/html"},
    ]
)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root: Path = write_models(tmp_path_factory.mktemp("models"), ["tiny"])
    app = build_app(fake_config(model_repository=root, max_request_bytes=4096), registry=CollectorRegistry())
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c
        # healthy afterwards: ready, and a good request still works
        assert c.get("/v2/health/ready").status_code == 200
        good = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
        assert c.post("/v2/models/tiny/infer", json=good).status_code == 200


def _check(response: Any) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    doc = response.json()
    assert isinstance(doc, dict) and len(doc) == 1
    (key, message), = doc.items()
    assert key in ("error", "message") and isinstance(message, str) and message
    assert "Traceback" not in message


FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(route=st.sampled_from(POST_ROUTES), body=bodies, hdrs=headers)
def test_post_routes_answer_4xx_json(client: TestClient, route: str, body: bytes, hdrs: dict[str, str]) -> None:
    r = client.post(route, content=body, headers=hdrs)
    if r.status_code == 200:
        # a body that happens to be valid (empty index/load request, or a valid /score row)
        assert route in ("/v2/repository/index", "/v2/repository/models/tiny/load", "/score")
        return
    _check(r)


@FUZZ
@given(
    route=st.sampled_from(GET_ROUTES),
    model=st.text(min_size=1, max_size=8).filter(lambda s: "/" not in s and s not in (".", "..")),
    version=st.text(min_size=1, max_size=5).filter(lambda s: "/" not in s and s not in (".", "..")),
    query=st.dictionaries(st.sampled_from(["data", "x", "version"]), st.text(max_size=10), max_size=2),
)
def test_get_routes_answer_4xx_json(client: TestClient, route: str, model: str, version: str, query: dict[str, str]) -> None:
    from urllib.parse import quote

    url = route.format(m=quote(model, safe=""), v=quote(version, safe=""))
    r = client.get(url, params=query)
    if r.status_code == 200:
        assert route == "/swagger.json" or model == "tiny" or route == "/score"
        return
    _check(r)


@FUZZ
@given(method=st.sampled_from(["PUT", "DELETE", "PATCH"]), route=st.sampled_from(POST_ROUTES + ["/", "/metrics", "/v2"]))
def test_wrong_methods_answer_405_json(client: TestClient, method: str, route: str) -> None:
    r = client.request(method, route)
    assert r.status_code == 405
    _check(r)
