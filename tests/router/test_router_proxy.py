"""The data plane over real sockets: splits, pinning, stickiness, headers, bodies, mirror."""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path

import aiohttp
import yarl
from router_testkit import (
    endpoint,
    key_header,
    router,
    run,
    scoring_url,
    until,
    upstreams,
    version,
)

# Chi-square critical value for 2 degrees of freedom at p = 0.001: a fair router fails this
# one time in a thousand seeds, and the seed is fixed.
CHI2_DF2_P001 = 13.816


def _chi_square(observed: list[int], expected: list[float]) -> float:
    return sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True))


async def _score_many(url: str, headers: dict[str, str], n: int, concurrency: int = 16) -> collections.Counter[str]:
    served: collections.Counter[str] = collections.Counter()
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as session:

        async def one() -> None:
            async with sem, session.post(url, data=b'{"x": 1}', headers=headers) as r:
                assert r.status == 200, await r.text()
                served[r.headers["azureml-model-deployment"]] += 1

        await asyncio.gather(*(one() for _ in range(n)))
    return served


def test_percentile_split_with_remainder_to_default(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with upstreams("a", "b", "c") as (a, b, c):
            # 20 + 10 + 0 claimed; the 70 unclaimed percentiles go to the default, versiona.
            eps = [
                endpoint(
                    "svc",
                    [
                        version("versiona", a, pct=20, default=True, version_type="control"),
                        version("versionb", b, pct=10),
                        version("versionc", c, pct=0),
                    ],
                )
            ]
            async with router(tmp_path, eps, seed=42) as server:
                n = 2000
                served = await _score_many(scoring_url(server, "svc"), key_header(server, "svc"), n)
                assert served["versionc"] == 0 and c.hits == 0
                observed = [served["versiona"], served["versionb"]]
                assert sum(observed) == n
                assert (a.hits, b.hits) == (served["versiona"], served["versionb"])
                stat = _chi_square([*observed, 0], [n * 0.9, n * 0.1, 1e-9])
                assert stat < CHI2_DF2_P001, (served, stat)

    run(scenario())


def test_pinning_header_and_unknown_version(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with upstreams("a", "b") as (a, b):
            eps = [endpoint("svc", [version("va", a, pct=100, default=True), version("vb", b)])]
            async with router(tmp_path, eps) as server, aiohttp.ClientSession() as session:
                headers = {**key_header(server, "svc"), "azureml-model-deployment": "vb"}
                for _ in range(20):
                    async with session.post(scoring_url(server, "svc"), headers=headers) as r:
                        assert r.status == 200
                        assert r.headers["azureml-model-deployment"] == "vb"
                        assert (await r.json())["replica"] == "b"
                assert b.hits == 20 and a.hits == 0
                headers["azureml-model-deployment"] = "nope"
                async with session.post(scoring_url(server, "svc"), headers=headers) as r:
                    assert r.status == 404
                    body = await r.json()
                    assert body["error"] == "not_found" and "nope" in body["message"]
                assert b.hits == 20 and a.hits == 0
                async with session.post(scoring_url(server, "other"), headers=headers) as r:
                    assert r.status == 404

    run(scenario())


def test_stickiness_header_keeps_a_user_on_one_version(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with upstreams("a", "b") as (a, b):
            eps = [
                endpoint(
                    "svc",
                    [version("va", a, pct=50, default=True), version("vb", b, pct=50)],
                    stickiness_header="X-User-Id",
                )
            ]
            async with router(tmp_path, eps) as server, aiohttp.ClientSession() as session:
                first_choice: dict[str, str] = {}
                for user in range(40):
                    for _ in range(5):
                        headers = {**key_header(server, "svc"), "x-user-id": f"user-{user}"}
                        async with session.post(scoring_url(server, "svc"), headers=headers) as r:
                            assert r.status == 200
                            served = r.headers["azureml-model-deployment"]
                        assert first_choice.setdefault(f"user-{user}", served) == served
                # 40 users across a 50/50 split land on both versions.
                assert set(first_choice.values()) == {"va", "vb"}

    run(scenario())


def test_headers_forwarded_and_dropped(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with upstreams("a") as (a,):
            eps = [endpoint("svc", [version("va", a, default=True)])]
            async with router(tmp_path, eps) as server, aiohttp.ClientSession() as session:
                traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
                headers = {
                    **key_header(server, "svc"),
                    "traceparent": traceparent,
                    "X-Forwarded-For": "10.1.2.3",
                    "Connection": "keep-alive, X-Secret-Hop",
                    "X-Secret-Hop": "hop",
                    "X-Custom": "kept",
                    "x-request-id": "req-123",
                }
                async with session.post(scoring_url(server, "svc", "score?a=1&b=2"), headers=headers, data=b"abc") as r:
                    assert r.status == 200
                    assert r.headers["x-request-id"] == "req-123"
                    assert r.headers["azureml-model-deployment"] == "va"
                    body = await r.json()
                    assert body == {"replica": "a", "path": "/score", "query": "a=1&b=2", "bytes": 3}
                seen = a.headers[-1]
                assert "authorization" not in seen
                assert "x-secret-hop" not in seen
                assert seen["traceparent"] == traceparent
                assert seen["x-forwarded-for"] == "10.1.2.3, 127.0.0.1"
                assert seen["x-custom"] == "kept"
                assert seen["x-request-id"] == "req-123"
                # The path goes upstream as the client encoded it.
                raw = scoring_url(server, "svc", "raw/a%2Fb%20c?q=%20")
                async with session.post(yarl.URL(raw, encoded=True), headers=key_header(server, "svc")) as r:
                    assert await r.json() == {"raw_path": "/raw/a%2Fb%20c", "query": "q=%20"}
                # Without one from the client, the router makes a request id.
                async with session.get(scoring_url(server, "svc"), headers=key_header(server, "svc")) as r:
                    assert len(r.headers["x-request-id"]) == 32
                    assert a.headers[-1]["x-request-id"] == r.headers["x-request-id"]

    run(scenario())


def test_upstream_errors_pass_through_unchanged(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with upstreams("a") as (a,):
            eps = [endpoint("svc", [version("va", a, default=True)])]
            async with router(tmp_path, eps) as server, aiohttp.ClientSession() as session:
                for code in (400, 404, 422, 500, 503):
                    async with session.post(scoring_url(server, "svc", f"status/{code}"), headers=key_header(server, "svc")) as r:
                        assert r.status == code
                        assert r.headers["x-upstream"] == "yes"
                        assert await r.json() == {"replica": "a", "detail": "as asked"}

    run(scenario())


def test_bodies_stream_both_ways(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with upstreams("a") as (a,):
            eps = [endpoint("svc", [version("va", a, default=True)])]
            async with router(tmp_path, eps) as server, aiohttp.ClientSession() as session:
                async with session.get(scoring_url(server, "svc", "stream"), headers=key_header(server, "svc")) as r:
                    assert r.status == 200
                    text = await r.text()
                    assert text == "".join(f"chunk-{i:03d};" * 100 for i in range(50))

                async def chunks() -> object:
                    for i in range(64):
                        yield bytes([i]) * 4096

                async with session.post(scoring_url(server, "svc", "echo"), headers=key_header(server, "svc"), data=chunks()) as r:
                    assert r.status == 200
                    assert await r.read() == b"".join(bytes([i]) * 4096 for i in range(64))

    run(scenario())


def test_mirror_copies_a_share_and_never_pinned(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with upstreams("live", "shadow") as (live, shadow):
            eps = [
                endpoint(
                    "svc",
                    [version("va", live, pct=100, default=True), version("vshadow", shadow)],
                    mirror={"version": "vshadow", "percent": 25},
                )
            ]
            async with router(tmp_path, eps, seed=7) as server:
                n = 800
                served = await _score_many(scoring_url(server, "svc"), key_header(server, "svc"), n)
                assert served == {"va": n}
                # Mirrored copies finish in the background; wait for them without a fixed sleep.
                await until(lambda: not server.runtime.background)
                assert live.hits == n
                assert 0.25 * n * 0.75 < shadow.hits < 0.25 * n * 1.25, shadow.hits
                assert all("authorization" not in h for h in shadow.headers)
                before = shadow.hits
                pinned = {**key_header(server, "svc"), "azureml-model-deployment": "va"}
                await _score_many(scoring_url(server, "svc"), pinned, 200)
                await until(lambda: not server.runtime.background)
                assert shadow.hits == before

    run(scenario())


def test_slow_mirror_never_slows_clients(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with upstreams("live", "shadow") as (live, shadow):
            eps = [
                endpoint(
                    "svc",
                    [version("va", live, pct=100, default=True), version("vshadow", shadow)],
                    mirror={"version": "vshadow", "percent": 50},
                )
            ]
            async with router(tmp_path, eps) as server, aiohttp.ClientSession() as session:
                # The shadow's /slow never answers until released; every live call still does.
                for _ in range(20):
                    async with session.post(scoring_url(server, "svc", "score"), headers=key_header(server, "svc")) as r:
                        assert r.status == 200
                url = scoring_url(server, "svc", "slow")
                live.release.set()
                for _ in range(10):
                    async with session.post(url, headers=key_header(server, "svc")) as r:
                        assert r.status == 200
                assert shadow.inflight > 0
                shadow.release.set()
                await until(lambda: not server.runtime.background)

    run(scenario())


def test_healthz_and_unknown_paths(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with upstreams("a") as (a,):
            eps = [endpoint("svc", [version("va", a, default=True)])]
            async with router(tmp_path, eps) as server, aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{server.port}/healthz") as r:
                    assert r.status == 200
                async with session.get(f"http://127.0.0.1:{server.port}/nope") as r:
                    assert r.status == 404
                    assert (await r.json())["error"] == "not_found"
                assert a.hits == 0

    run(scenario())


def test_tracing_span_is_a_child_of_the_callers_traceparent(tmp_path: Path) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")

    async def scenario() -> None:
        async with upstreams("a") as (a,):
            eps = [endpoint("svc", [version("va", a, default=True)])]
            async with router(tmp_path, eps, tracer=tracer) as server, aiohttp.ClientSession() as session:
                trace_id = "0af7651916cd43dd8448eb211c80319c"
                headers = {**key_header(server, "svc"), "traceparent": f"00-{trace_id}-b7ad6b7169203331-01"}
                async with session.post(scoring_url(server, "svc"), headers=headers) as r:
                    assert r.status == 200
                (span,) = exporter.get_finished_spans()
                assert f"{span.context.trace_id:032x}" == trace_id
                assert span.parent is not None and f"{span.parent.span_id:016x}" == "b7ad6b7169203331"
                # Upstream sees the same trace, with the router's span as parent.
                assert a.headers[-1]["traceparent"] == f"00-{trace_id}-{span.context.span_id:016x}-01"

    run(scenario())
