"""Bad input against real processes (tests/server/test_server_fuzz.py covers v2 JSON bodies
in-process; this adds what needs sockets): the binary extension with lying lengths, huge and
negative shapes and datatype/shape mismatches on a real server; every route of the router
(proxy paths, headers and bodies) and its admin API with random JSON. Every answer a 2xx or a
4xx with a JSON error; never a 5xx, never a hang; healthy after."""

from __future__ import annotations

import struct
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rel_testkit import ADMIN_TOKEN, SOAK, Replica, Router, router_config, scaled, write_models

pytestmark = pytest.mark.e2e

# Deterministic in `make test`; fresh random examples every `make soak`.
FUZZ = settings(
    max_examples=int(scaled(80, 2000)), deadline=None, derandomize=not SOAK,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("bad")
    repo = write_models(tmp / "models", ["identity", "tiny"])
    replica = Replica(repo, "--max-request-bytes", str(1024 * 1024))
    replica.wait_ready()
    config = tmp / "router.yaml"
    router_config(config, "svc", [replica.url], auth_enabled=False)
    import yaml

    doc = yaml.safe_load(config.read_text())
    doc["endpoints"].append({**doc["endpoints"][0], "name": "fuzz"})
    config.write_text(yaml.safe_dump(doc))
    router = Router(config, tmp / "state")
    with httpx.Client(timeout=15) as client:
        yield replica, router, client
        # healthy after: ready, a good request through the router, and nothing logged a stack
        assert client.get(replica.url + "/v2/health/ready").status_code == 200
        r = client.post(router.scoring_url("svc", "v2/models/tiny/infer"), json={"inputs": [
            {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]})
        assert r.status_code == 200, r.text
    router.stop()
    replica.stop()
    for proc in (replica, router):
        assert "Traceback" not in proc.log(), proc.log()[-4000:]


def _check(r: httpx.Response, allow_ok: bool = True) -> None:
    if allow_ok and r.status_code < 300:
        return
    assert 400 <= r.status_code < 500, (r.request.method, r.request.url, r.status_code, r.text[:500])
    assert r.headers.get("content-type", "").startswith("application/json"), (r.request.method, r.request.url, r.status_code, r.text[:200])
    doc = r.json()
    assert isinstance(doc, dict) and ("error" in doc or "message" in doc), doc
    assert "Traceback" not in r.text


SIZES = {"FP32": 4, "FP64": 8, "FP16": 2, "INT64": 8, "INT8": 1, "UINT8": 1, "BOOL": 1, "INT32": 4}
shape_dim = st.integers(0, 4) | st.sampled_from([-1, -(2**31), 2**31, 2**40, 2**62, 10**6])


@st.composite
def binary_requests(draw: st.DrawFn) -> tuple[bytes, dict[str, Any]]:
    datatype = draw(st.sampled_from([*SIZES, "BYTES", "NOPE"]))
    shape = draw(st.lists(shape_dim, min_size=0, max_size=3))
    honest = 1
    for d in shape:
        honest *= max(d, 0)
    honest = min(honest, 64) * SIZES.get(datatype, 4)
    payload_len = draw(st.sampled_from([honest, 0, honest + 1, max(honest - 1, 0), 7]))
    payload = bytes(draw(st.binary(min_size=min(payload_len, 8), max_size=min(payload_len, 8)))).ljust(payload_len, b"\x01")
    if datatype == "BYTES":
        payload = draw(st.sampled_from([struct.pack("<I", 3) + b"abc", struct.pack("<I", 2**31) + b"x", b"\x01\x00", b""]))
    declared = draw(st.sampled_from([len(payload), len(payload) + 1, 2**40, -1, 0, "x"]))
    tensor: dict[str, Any] = {"name": draw(st.sampled_from(["x", "input", "nope"])), "datatype": datatype,
                              "shape": shape, "parameters": {"binary_data_size": declared}}
    doc = {"inputs": [tensor], **draw(st.sampled_from([{}, {"parameters": {"binary_data_output": True}}]))}
    header = orjson.dumps(doc)
    header_len = draw(st.sampled_from([len(header), len(header) - 1, len(header) + 1, 0, 2**40, len(header) + len(payload) + 5]))
    hdrs: dict[str, Any] = {"Inference-Header-Content-Length": str(header_len), "Content-Type": "application/octet-stream"}
    if draw(st.booleans()):
        hdrs["Inference-Header-Content-Length"] = draw(st.sampled_from(["-5", "1e3", "", "+12", "0x10", b"\xb2", b"1\xb9"]))
    return header + payload, hdrs


@FUZZ
@given(req=binary_requests(), model=st.sampled_from(["tiny", "identity"]), via_router=st.booleans())
def test_binary_extension_lies_are_4xx(stack: Any, req: tuple[bytes, dict[str, str]], model: str, via_router: bool) -> None:
    replica, router, client = stack
    body, hdrs = req
    url = router.scoring_url("svc", f"v2/models/{model}/infer") if via_router else f"{replica.url}/v2/models/{model}/infer"
    _check(client.post(url, content=body, headers=hdrs))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=16,
)
admin_fields = st.sampled_from([
    "auth_enabled", "token_auth_enabled", "scoring_timeout_ms", "replica_max_concurrent_requests",
    "max_request_wait_time", "stickiness_header", "mirror", "jwt_issuers", "name", "upstreams",
    "traffic_percentile", "is_default", "version_type", "description", "keyType", "keyValue",
])
admin_bodies = (
    st.dictionaries(admin_fields, json_values, max_size=4).map(orjson.dumps)
    | json_values.map(orjson.dumps)
    | st.sampled_from([b"", b"{", b"\xff\xfe", b"[" * 5000, b'{"a":' * 3000])
)
admin_calls = st.sampled_from([
    ("PATCH", "/admin/endpoints/fuzz"),
    ("POST", "/admin/endpoints/fuzz/versions"),
    ("PATCH", "/admin/endpoints/fuzz/versions/v1"),
    ("PATCH", "/admin/endpoints/fuzz/versions/nope"),
    ("DELETE", "/admin/endpoints/fuzz/versions/nope"),
    ("POST", "/admin/endpoints/fuzz/regenerate-keys"),
    ("POST", "/admin/endpoints/fuzz/token"),
    ("GET", "/admin/endpoints/%2e%2e%2ffuzz"),
    ("POST", "/admin/endpoints/..%2Fsvc/regenerate-keys"),
    ("PATCH", "/admin/endpoints/nope"),
])


@FUZZ
@given(call=admin_calls, body=admin_bodies)
def test_admin_api_random_json_is_4xx(stack: Any, call: tuple[str, str], body: bytes) -> None:
    _, router, client = stack
    method, path = call
    r = client.request(method, router.admin_url + path, content=body,
                       headers={**ADMIN, "Content-Type": "application/json"})
    _check(r)


proxy_paths = st.sampled_from([
    "/api/v1/service/svc/score", "/api/v1/service/nope/score", "/api/v1/service/svc/", "/api/v1/service/svc",
    "/api/v1/service/", "/api/v1/service/svc/v2/models/tiny/infer", "/api/v1/service/svc/../fuzz/score",
    "/api/v1/service/%2e%2e/score", "/api/v1/service/svc/%2e%2e%2f%2e%2e/admin/endpoints", "/admin/endpoints",
    "/", "/healthz", "/metrics", "/api/v1/service/svc/v2/repository/models/..%2F..%2Fetc/load",
])
weird_headers = st.dictionaries(
    st.sampled_from(["azureml-model-deployment", "x-request-id", "content-encoding", "content-type",
                     "transfer-encoding-x", "x-ms-request-id", "inference-header-content-length", "authorization"]),
    # (no leading or trailing spaces: the client library refuses to send those)
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40).map(str.strip),
    max_size=3,
)


@FUZZ
@given(path=proxy_paths, method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS"]),
       body=st.binary(max_size=64) | admin_bodies, hdrs=weird_headers)
def test_router_routes_answer_cleanly(stack: Any, path: str, method: str, body: bytes, hdrs: dict[str, str]) -> None:
    _, router, client = stack
    r = client.request(method, router.url + path, content=body, headers=hdrs)
    if r.status_code >= 500:
        # upstream answers pass through; the only 5xx allowed is the scoring server's own for
        # a model that raised (never for client error)
        raise AssertionError((path, method, hdrs, r.status_code, r.text[:300]))
    if r.status_code >= 400:
        _check(r, allow_ok=False)


@pytest.mark.parametrize("version", ["%C2%B2", "%D9%A3", "%EF%BC%91", "1%C2%B9"])
def test_unicode_digit_versions_are_400(stack: Any, version: str) -> None:
    """'²'.isdigit() is True but int('²') raises: a version must be ASCII digits."""
    replica, router, client = stack
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    for url in (f"{replica.url}/v2/models/tiny/versions/{version}/infer",
                router.scoring_url("svc", f"v2/models/tiny/versions/{version}/infer")):
        r = client.post(url, json=body)
        assert r.status_code == 400, (url, r.status_code, r.text)
        _check(r)


@pytest.mark.parametrize("shape", [[2**31], [1, 2**31], [2**20, 2**20]])
def test_huge_bytes_shape_is_refused_before_allocating(stack: Any, shape: list[int]) -> None:
    """Found by the binary fuzz: a BYTES input of shape [2**31] with a short payload made the
    server allocate 16 GiB of object pointers on the event loop (17 s, the router ejected it)."""
    replica, _, client = stack
    header = orjson.dumps({"inputs": [{"name": "input", "datatype": "BYTES", "shape": shape,
                                       "parameters": {"binary_data_size": 4}}]})
    r = client.post(f"{replica.url}/v2/models/identity/infer", content=header + b"\x00\x00\x00\x00",
                    headers={"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"})
    assert r.status_code == 400 and "cannot hold" in r.json()["error"], r.text


@pytest.mark.parametrize("shape", [[2**62, 0], [0, 2**62, 2**62], [2**41]])
def test_shapes_past_numpy_range_are_400(stack: Any, shape: list[int]) -> None:
    """Found by the soak fuzz: [2**62, 0] holds no element but numpy cannot reshape to it (500)."""
    replica, _, client = stack
    header = orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": shape,
                                       "parameters": {"binary_data_size": 0}}]})
    r = client.post(f"{replica.url}/v2/models/tiny/infer", content=header,
                    headers={"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"})
    assert r.status_code == 400, r.text
    r = client.post(f"{replica.url}/v2/models/tiny/infer", json={"inputs": [{"name": "x", "datatype": "FP32", "shape": shape, "data": []}]})
    assert r.status_code == 400, r.text
