"""The admin API (AzureML AksEndpoint calls), atomic table swaps, reloads and /metrics."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiohttp
import pytest
import yaml
from router_testkit import ADMIN, admin_url, endpoint, key_header, router, run, scoring_url, upstreams, version

from router.config import load_config


def test_admin_needs_its_token_but_metrics_do_not(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with upstreams("a") as (a,):
            eps = [endpoint("svc", [version("va", a, default=True)])]
            async with router(tmp_path, eps) as server, aiohttp.ClientSession() as session:
                async with session.post(scoring_url(server, "svc"), headers=key_header(server, "svc")) as r:
                    assert r.status == 200
                for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, key_header(server, "svc")):
                    async with session.get(admin_url(server, "/admin/endpoints"), headers=headers) as r:
                        assert r.status == 401
                        assert r.headers["www-authenticate"].startswith("Bearer")
                async with session.get(admin_url(server, "/metrics")) as r:
                    assert r.status == 200
                    text = await r.text()
                for name in (
                    'infergate_router_requests_total{code="200",endpoint="svc",version="va",version_type="treatment"} 1.0',
                    "infergate_router_upstream_duration_seconds_bucket",
                    'infergate_router_inflight_requests{endpoint="svc",version="va"} 0.0',
                    'infergate_router_utilization{endpoint="svc",version="va"} 0.0',
                ):
                    assert name in text, name
                # The scoring port does not serve the admin API.
                async with session.get(f"http://127.0.0.1:{server.port}/admin/endpoints", headers=ADMIN) as r:
                    assert r.status == 404

    run(scenario())


def test_version_lifecycle_is_live_and_persisted(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with upstreams("a", "b") as (a, b):
            eps = [endpoint("svc", [version("va", a, default=True, version_type="control")])]
            async with router(tmp_path, eps) as server, aiohttp.ClientSession() as session:
                url, keys = scoring_url(server, "svc"), key_header(server, "svc")
                base = admin_url(server, "/admin/endpoints/svc")
                async with session.get(admin_url(server, "/admin/endpoints"), headers=ADMIN) as r:
                    listed = await r.json()
                assert [e["name"] for e in listed] == ["svc"]
                assert "primaryKey" not in str(listed) and server.runtime.keys.get("svc").primary not in str(listed)
                assert listed[0]["live"][0]["replicas"] == [{"url": a.url, "healthy": True, "outstanding": 0}]

                new = {"name": "vb", "upstreams": [b.url], "traffic_percentile": 0, "description": "candidate"}
                async with session.post(f"{base}/versions", headers=ADMIN, json=new) as r:
                    assert r.status == 201
                    assert [v["name"] for v in (await r.json())["versions"]] == ["va", "vb"]
                async with session.post(f"{base}/versions", headers=ADMIN, json=new) as r:
                    assert r.status == 409
                async with session.post(f"{base}/versions", headers=ADMIN, json={**new, "name": "vc", "traffic_percentile": 101}) as r:
                    assert r.status == 400
                    assert (await r.json())["message"].startswith("traffic_percentile: must be between 0 and 100")
                async with session.post(f"{base}/versions", headers=ADMIN, data=b"{not json") as r:
                    assert r.status == 400
                async with session.post(admin_url(server, "/admin/endpoints/nope/versions"), headers=ADMIN, json=new) as r:
                    assert r.status == 404

                # All traffic to vb, and vb becomes the control: va turns treatment.
                async with session.patch(f"{base}/versions/vb", headers=ADMIN, json={"traffic_percentile": 100, "version_type": "control"}) as r:
                    assert r.status == 200
                    versions = {v["name"]: v for v in (await r.json())["versions"]}
                assert versions["va"]["version_type"] == "treatment"
                for _ in range(10):
                    async with session.post(url, headers=keys) as r:
                        assert r.headers["azureml-model-deployment"] == "vb"
                async with session.patch(f"{base}/versions/vb", headers=ADMIN, json={"bogus": 1}) as r:
                    assert r.status == 400 and "bogus" in (await r.json())["message"]
                async with session.patch(f"{base}/versions/zz", headers=ADMIN, json={"traffic_percentile": 1}) as r:
                    assert r.status == 404

                async with session.delete(f"{base}/versions/va", headers=ADMIN) as r:
                    assert r.status == 409  # the default, while others exist
                async with session.patch(f"{base}/versions/vb", headers=ADMIN, json={"is_default": True}) as r:
                    assert r.status == 200
                async with session.delete(f"{base}/versions/va", headers=ADMIN) as r:
                    assert r.status == 200
                async with session.delete(f"{base}/versions/vb", headers=ADMIN) as r:
                    assert r.status == 409  # the only one left

                async with session.patch(base, headers=ADMIN, json={"auth_enabled": False}) as r:
                    assert r.status == 200
                async with session.post(url) as r:
                    assert r.status == 200
                async with session.patch(base, headers=ADMIN, json={"scoring_timeout_ms": -1}) as r:
                    assert r.status == 400
                    assert "scoring_timeout_ms: must be >= 1, got -1" in (await r.json())["message"]

                saved = load_config(tmp_path / "router.yaml").endpoints[0]
                assert [v.name for v in saved.versions] == ["vb"]
                assert saved.versions[0].is_default and saved.versions[0].description == "candidate"
                assert saved.auth_enabled is False

    run(scenario())


def test_in_flight_requests_finish_on_the_old_table(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with upstreams("a", "b") as (a, b):
            eps = [endpoint("svc", [version("va", a, default=True), version("vb", b)])]
            async with router(tmp_path, eps) as server, aiohttp.ClientSession() as session:
                url, keys = scoring_url(server, "svc", "slow"), key_header(server, "svc")

                async def slow() -> tuple[int, str]:
                    async with session.post(url, headers=keys) as r:
                        await r.read()
                        return r.status, r.headers["azureml-model-deployment"]

                pending = asyncio.create_task(slow())
                while a.inflight == 0:
                    await asyncio.sleep(0.01)
                base = admin_url(server, "/admin/endpoints/svc/versions")
                async with session.patch(f"{base}/vb", headers=ADMIN, json={"is_default": True}) as r:
                    assert r.status == 200
                async with session.delete(f"{base}/va", headers=ADMIN) as r:
                    assert r.status == 200
                async with session.post(scoring_url(server, "svc"), headers=keys) as r:
                    assert r.headers["azureml-model-deployment"] == "vb"
                a.release.set()
                assert await pending == (200, "va")

    run(scenario())


def test_reload_valid_and_invalid(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with upstreams("a", "b") as (a, b):
            eps = [endpoint("svc", [version("va", a, default=True)])]
            async with router(tmp_path, eps) as server, aiohttp.ClientSession() as session:
                path = tmp_path / "router.yaml"
                keys = key_header(server, "svc")
                good = {"endpoints": [endpoint("svc", [version("vb", b, default=True)]), endpoint("new", [version("vn", a, default=True)])]}
                path.write_text(yaml.safe_dump(good))
                assert await server.runtime.reload()
                async with session.post(scoring_url(server, "svc"), headers=keys) as r:
                    assert r.headers["azureml-model-deployment"] == "vb"
                async with session.post(scoring_url(server, "new"), headers=key_header(server, "new")) as r:
                    assert r.status == 200  # keys were generated for the new endpoint
                bad = {"endpoints": [endpoint("svc", [version("vb", b, pct=120, default=True)])]}
                path.write_text(yaml.safe_dump(bad))
                with caplog.at_level(logging.ERROR, logger="infergate.router"):
                    assert not await server.runtime.reload()
                assert "endpoints[0].versions[0].traffic_percentile: must be between 0 and 100, got 120" in caplog.text
                async with session.post(scoring_url(server, "svc"), headers=keys) as r:
                    assert r.status == 200 and r.headers["azureml-model-deployment"] == "vb"
                rejected = server.runtime.registry.get_sample_value("infergate_router_config_reloads_total", {"result": "rejected"})
                assert rejected == 1

    run(scenario())
