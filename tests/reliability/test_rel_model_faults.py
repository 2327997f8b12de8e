"""Models that cannot load: a corrupt file, a version that fails, a missing provider with
``strict_device``. The server stays up, readiness names what is not ready, the rest serves.
Also path traversal in model names and repository operations (URL-encoded too)."""

from __future__ import annotations

import http.client
import json
import shutil

import httpx
import pytest
from rel_testkit import Replica, wait_http, write_models

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> object:
    root = write_models(tmp_path_factory.mktemp("models"), ["identity", "tiny"])
    # corrupt: bytes that are not an ONNX protobuf
    (root / "corrupt" / "1").mkdir(parents=True)
    (root / "corrupt" / "1" / "model.onnx").write_bytes(b"\x08\x07garbage, not a model" * 50)
    # twoversions: v1 good, v2 truncated; version_policy all
    shutil.copytree(root / "tiny", root / "twoversions")
    good = (root / "twoversions" / "1" / "model.onnx").read_bytes()
    (root / "twoversions" / "2").mkdir()
    (root / "twoversions" / "2" / "model.onnx").write_bytes(good[: len(good) // 2])
    (root / "twoversions" / "config.yaml").write_text("version_policy: all\n")
    # nogpu: wants a GPU, may not fall back to the CPU
    shutil.copytree(root / "tiny", root / "nogpu")
    (root / "nogpu" / "config.yaml").write_text("device: gpu\nstrict_device: true\n")
    # a secret-looking file outside the repository, for the traversal checks
    (root.parent / "outside.onnx").write_bytes(good)
    replica = Replica(root)
    wait_http(replica.url + "/v2/health/live", 60, replica)
    yield replica
    replica.stop()


def _index(url: str) -> dict[tuple[str, str], dict[str, str]]:
    r = httpx.post(url + "/v2/repository/index", json={})
    assert r.status_code == 200, r.text
    return {(d["name"], str(d.get("version", ""))): d for d in r.json()}


def test_failed_loads_leave_the_rest_serving(server: Replica) -> None:
    url = server.url
    index = _index(url)
    assert index[("corrupt", "1")]["state"] == "UNAVAILABLE" and index[("corrupt", "1")]["reason"]
    assert index[("twoversions", "2")]["state"] == "UNAVAILABLE"
    assert index[("twoversions", "1")]["state"] == "READY"
    assert index[("identity", "1")]["state"] == "READY"
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        nogpu = index[("nogpu", "1")]
        assert nogpu["state"] == "UNAVAILABLE" and nogpu["reason"], nogpu
    # readiness: 503 and names a model that is not ready
    ready = httpx.get(url + "/v2/health/ready")
    assert ready.status_code == 503
    assert "corrupt" in ready.text, ready.text
    assert httpx.get(url + "/v2/models/corrupt/ready").status_code == 503
    assert httpx.get(url + "/v2/models/identity/ready").status_code == 200
    # the others serve
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    for path in ("/v2/models/tiny/infer", "/v2/models/twoversions/infer", "/v2/models/twoversions/versions/1/infer"):
        r = httpx.post(url + path, json=body)
        assert r.status_code == 200, (path, r.text)
        assert r.json()["outputs"][0]["data"] == [3.0, 5.0, 7.0, 9.0]
    r = httpx.post(url + "/v2/models/corrupt/infer", json=body)
    assert r.status_code == 503 and "error" in r.json()
    r = httpx.post(url + "/v2/models/twoversions/versions/2/infer", json=body)
    assert r.status_code == 503 and "error" in r.json()
    # a reload of the corrupt model fails cleanly (400 naming it) and the server stays up
    r = httpx.post(url + "/v2/repository/models/corrupt/load")
    assert r.status_code in (400, 503) and "error" in r.json(), r.text
    assert httpx.get(url + "/v2/health/live").status_code == 200
    assert "Traceback" not in "".join(json.loads(line).get("message", "") for line in server.log().splitlines()
                                      if line.startswith("{"))


TRAVERSALS = [
    "..", "../outside", "..%2Foutside", "%2E%2E", "%2e%2e%2foutside", "..%5Coutside",
    "%2E%2E%2F%2E%2E%2Fetc", "identity%2F..%2F..%2Foutside", "%00identity", "a%2Fb",
]


@pytest.mark.parametrize("name", TRAVERSALS)
def test_path_traversal_is_refused(server: Replica, name: str) -> None:
    url = server.url
    for method, path in (
        ("POST", f"/v2/repository/models/{name}/load"),
        ("POST", f"/v2/repository/models/{name}/unload"),
        ("GET", f"/v2/models/{name}"),
        ("GET", f"/v2/models/{name}/ready"),
        ("POST", f"/v2/models/{name}/infer"),
    ):
        # the target exactly as written: http.client does not normalise dot segments
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request(method, path, body=b"{}", headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        text = r.read().decode()
        conn.close()
        assert r.status in (400, 404, 405), (method, path, r.status, text)
        assert (r.getheader("content-type") or "").startswith("application/json"), (path, r.getheaders())
        assert "Traceback" not in text
    # nothing outside the repository got loaded
    assert all(not n.startswith(".") and n != "outside" for n, _ in _index(url))
    assert httpx.get(url + "/v2/health/live").status_code == 200
