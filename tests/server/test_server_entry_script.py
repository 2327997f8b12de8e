"""--entry-script mode: /score calls the AzureML script's run(); health routes exist too."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from server_testkit import TestClient, assert_json_error, fake_config

from server.app import build_app

SCRIPT = """
import json, os

def init():
    global scale
    with open(os.path.join(os.environ["AZUREML_MODEL_DIR"], "scale.txt")) as f:
        scale = float(f.read())

def run(raw_data):
    doc = json.loads(raw_data)
    if doc.get("fail"):
        raise ValueError("bad row 3")
    return {"scaled": [v * scale for v in doc["data"]]}
"""

RAW_SCRIPT = """
from azureml.contrib.services.aml_request import AMLRequest, rawhttp
from azureml.contrib.services.aml_response import AMLResponse

def init():
    pass

@rawhttp
def run(request):
    if request.method == "OPTIONS":
        return AMLResponse("", 204, {"Allow": "GET, POST, OPTIONS"})
    if request.method == "GET":
        return AMLResponse({"q": request.args.get("q")}, 200, json_str=True)
    return AMLResponse(request.get_data(), 201)
"""


def _client(tmp_path: Path, script: str) -> TestClient:
    (tmp_path / "model").mkdir(exist_ok=True)
    (tmp_path / "model" / "scale.txt").write_text("10")
    path = tmp_path / "score.py"
    path.write_text(textwrap.dedent(script))
    config = fake_config(model_repository=None, entry_script=path, model_dir=tmp_path / "model")
    return TestClient(build_app(config, registry=CollectorRegistry()), raise_server_exceptions=False)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with _client(tmp_path, SCRIPT) as c:
        yield c


def test_run_receives_the_raw_body(client: TestClient) -> None:
    r = client.post("/score", json={"data": [1, 2]})
    assert r.status_code == 200 and r.json() == {"scaled": [10.0, 20.0]}
    assert float(r.headers["x-ms-run-fn-exec-ms"]) >= 0
    # JSON parsed by run() itself: any content type goes through
    r = client.post("/score", content=b'{"data": [3]}', headers={"content-type": "text/plain"})
    assert r.json() == {"scaled": [30.0]}


def test_get_passes_query_values_as_json(client: TestClient) -> None:
    r = client.get("/score", params={"data": "[1, 2]"})
    assert r.status_code == 200 and r.json() == {"scaled": [10.0, 20.0]}


def test_script_exception_is_500_with_its_message(client: TestClient) -> None:
    r = client.post("/score", json={"fail": True})
    assert assert_json_error(r, 500, "message") == "bad row 3"
    assert client.post("/score", json={"data": [1]}).status_code == 200  # still healthy


def test_health_routes_exist_in_entry_script_mode(client: TestClient) -> None:
    assert client.get("/").text == "Healthy"
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 200
    assert_json_error(client.options("/score"), 405, "message")
    assert client.get("/swagger.json").json()["paths"]["/score"]


def test_rawhttp_script_gets_the_request(tmp_path: Path) -> None:
    with _client(tmp_path, RAW_SCRIPT) as c:
        r = c.post("/score", content=b"raw bytes")
        assert r.status_code == 201 and r.content == b"raw bytes"
        assert c.get("/score", params={"q": "x"}).json() == {"q": "x"}
        r = c.options("/score")
        assert r.status_code == 204 and "OPTIONS" in r.headers["allow"]
