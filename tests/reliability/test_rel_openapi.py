"""schemathesis against the scoring server's own OpenAPI document (/swagger.json?version=3):
every generated request answers without a 5xx (a client error is a 4xx with a JSON body), and
the server stays healthy."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from rel_testkit import SOAK, Replica, scaled, write_models

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def replica(tmp_path_factory: pytest.TempPathFactory) -> Any:
    repo = write_models(tmp_path_factory.mktemp("models"), ["tiny"])
    server = Replica(repo)
    server.wait_ready()
    yield server
    assert httpx.get(server.url + "/v2/health/ready").status_code == 200
    server.stop()
    assert "Traceback" not in server.log(), server.log()[-3000:]


def test_openapi_document_fuzz(replica: Any) -> None:
    """Every operation of the document, with schemathesis' generated requests (its pytest
    plugin does not load under pytest 9, so the strategies are driven with hypothesis here)."""
    from hypothesis import given

    api = schemathesis.openapi.from_url(replica.url + "/swagger.json?version=3")
    api.config.update(base_url=replica.url)
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 10, [op.label for op in operations]
    seen: dict[int, int] = {}
    with httpx.Client(base_url=replica.url, timeout=15) as client:
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(max_examples=int(scaled(15, 300)), deadline=None, suppress_health_check=list(HealthCheck), database=None,
                      derandomize=not SOAK)
            def check(case: Any) -> None:
                kwargs = case.as_transport_kwargs(base_url=replica.url)
                response = client.request(kwargs["method"], kwargs["url"], headers=kwargs.get("headers"),
                                          params=kwargs.get("params"), content=_content(kwargs))
                seen[response.status_code] = seen.get(response.status_code, 0) + 1
                assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:300])
                if response.status_code >= 400:
                    assert response.headers.get("content-type", "").startswith("application/json"), response.text[:200]
                    assert "Traceback" not in response.text

            check()
    print(f"\nschemathesis: {len(operations)} operations, answers by status {dict(sorted(seen.items()))}")


def _content(kwargs: dict[str, Any]) -> bytes | None:
    import json

    if kwargs.get("json") is not None:
        return json.dumps(kwargs["json"]).encode()  # the stdlib: integers past 64 bits too
    data = kwargs.get("data")
    if isinstance(data, str):
        return data.encode()
    return data if isinstance(data, bytes) else None
