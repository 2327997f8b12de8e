"""Replicas failing and filling up: ejection and re-probing, retries, timeouts, overload, DNS."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from pathlib import Path

import aiohttp
from router_testkit import FAST_LIMITS, Upstream, endpoint, key_header, router, run, scoring_url, until, upstreams, version

from router.upstream import Replica


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_replica_killed_mid_run_then_back(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with upstreams("a", "b") as (a, b):
            eps = [endpoint("svc", [version("va", a, b, default=True)])]
            async with router(tmp_path, eps) as server, aiohttp.ClientSession() as session:
                url, headers = scoring_url(server, "svc"), key_header(server, "svc")
                replica_a = next(r for r in server.runtime.table.endpoints["svc"].versions["va"].replicas.replicas if r.url == a.url)
                results: list[tuple[bool, int]] = []  # (a was already ejected when sent, status)
                stop = asyncio.Event()

                async def client() -> None:
                    while not stop.is_set():
                        ejected = not replica_a.healthy
                        async with session.post(url, headers=headers) as r:
                            await r.read()
                            results.append((ejected, r.status))

                clients = [asyncio.create_task(client()) for _ in range(4)]
                await until(lambda: len(results) >= 40)
                await a.stop()
                await until(lambda: not replica_a.healthy)
                sent_after = len(results)
                await until(lambda: len(results) >= sent_after + 100)
                # Bring it back on the same port: the probe on /v2/health/ready readmits it.
                revived = Upstream("a2", port=a.port)
                await revived.start()
                try:
                    await until(lambda: replica_a.healthy)
                    await until(lambda: revived.hits >= 5)
                finally:
                    stop.set()
                    await asyncio.gather(*clients)
                    await revived.stop()
                assert sum(1 for ejected, _ in results if ejected) >= 100
                assert all(status == 200 for ejected, status in results if ejected), [s for e, s in results if e and s != 200]
                assert server.runtime.registry.get_sample_value("infergate_router_replica_ejections_total", {"replica": a.url}) == 1

    run(scenario())


def test_connect_failure_is_retried_on_another_replica(tmp_path: Path) -> None:
    async def scenario() -> None:
        dead = f"http://127.0.0.1:{_free_port()}"
        async with upstreams("b") as (b,):
            eps = [endpoint("svc", [version("va", dead, b, default=True)])]
            async with router(tmp_path, eps) as server, aiohttp.ClientSession() as session:
                for _ in range(10):
                    async with session.post(scoring_url(server, "svc"), headers=key_header(server, "svc")) as r:
                        assert r.status == 200
                assert b.hits == 10

    run(scenario())


def test_no_healthy_replica_is_503(tmp_path: Path) -> None:
    async def scenario() -> None:
        dead = f"http://127.0.0.1:{_free_port()}"
        async with upstreams("a") as (a,):
            eps = [endpoint("svc", [version("va", a, default=True), version("vdead", dead)])]
            async with router(tmp_path, eps) as server, aiohttp.ClientSession() as session:
                pin = {**key_header(server, "svc"), "azureml-model-deployment": "vdead"}
                for _ in range(3):
                    async with session.post(scoring_url(server, "svc"), headers=pin) as r:
                        assert r.status == 503
                        assert int(r.headers["retry-after"]) >= 1
                        assert (await r.json())["error"] == "no_healthy_replica"
                        assert r.headers["azureml-model-deployment"] == "vdead"

    run(scenario())


def test_scoring_timeout_is_504(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with upstreams("a") as (a,):
            eps = [endpoint("svc", [version("va", a, default=True)], scoring_timeout_ms=150)]
            async with router(tmp_path, eps) as server, aiohttp.ClientSession() as session:
                async with session.post(scoring_url(server, "svc", "slow"), headers=key_header(server, "svc")) as r:
                    assert r.status == 504
                    assert (await r.json())["error"] == "upstream_timeout"
                # The slot was given back: a fast request still goes through.
                async with session.post(scoring_url(server, "svc"), headers=key_header(server, "svc")) as r:
                    assert r.status == 200
                a.release.set()

    run(scenario())


def test_overload_waits_then_503_with_retry_after(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with upstreams("a") as (a,):
            eps = [
                endpoint(
                    "svc",
                    [version("va", a, default=True)],
                    replica_max_concurrent_requests=2,
                    max_request_wait_time=100,
                )
            ]
            async with router(tmp_path, eps) as server, aiohttp.ClientSession() as session:
                url, headers = scoring_url(server, "svc", "slow"), key_header(server, "svc")

                async def call() -> int:
                    async with session.post(url, headers=headers) as r:
                        await r.read()
                        if r.status == 503:
                            assert int(r.headers["retry-after"]) >= 1
                            assert (await r.json())["error"] == "overloaded"
                        return r.status

                holders = [asyncio.create_task(call()) for _ in range(2)]
                await until(lambda: a.inflight == 2)
                assert await call() == 503
                assert a.max_inflight == 2
                rset = server.runtime.table.endpoints["svc"].versions["va"].replicas
                assert rset.utilization() == 1.0
                # A waiter gets the first slot that frees up within its wait.
                a.release.set()
                assert await asyncio.gather(*holders) == [200, 200]

    run(scenario())


def test_waiting_request_gets_a_freed_slot(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with upstreams("a") as (a,):
            eps = [endpoint("svc", [version("va", a, default=True)], replica_max_concurrent_requests=1, max_request_wait_time=30000)]
            async with router(tmp_path, eps) as server, aiohttp.ClientSession() as session:
                url, headers = scoring_url(server, "svc", "slow"), key_header(server, "svc")

                async def call() -> int:
                    async with session.post(url, headers=headers) as r:
                        await r.read()
                        return r.status

                first = asyncio.create_task(call())
                await until(lambda: a.inflight == 1)
                second = asyncio.create_task(call())
                rset = server.runtime.table.endpoints["svc"].versions["va"].replicas
                await until(lambda: rset.waiting == 1)
                assert rset.utilization() == 2.0
                a.release.set()
                assert await asyncio.gather(first, second) == [200, 200]
                assert a.max_inflight == 1

    run(scenario())


def test_least_outstanding_balancing(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with upstreams("a", "b") as (a, b):
            eps = [endpoint("svc", [version("va", a, b, default=True)])]
            async with router(tmp_path, eps) as server, aiohttp.ClientSession() as session:
                url, headers = scoring_url(server, "svc", "slow"), key_header(server, "svc")

                async def call() -> int:
                    async with session.post(url, headers=headers) as r:
                        return r.status

                calls = [asyncio.create_task(call()) for _ in range(6)]
                await until(lambda: a.inflight + b.inflight == 6)
                assert (a.inflight, b.inflight) == (3, 3)
                a.release.set()
                b.release.set()
                assert await asyncio.gather(*calls) == [200] * 6

    run(scenario())


def test_dns_name_resolving_to_several_replicas(tmp_path: Path) -> None:
    async def scenario() -> None:
        first = Upstream("first", host="127.0.0.1")
        second = Upstream("second", host="127.0.0.2", port=first.port)
        await first.start()
        await second.start()

        async def resolver(host: str, port: int) -> list[str]:
            assert host == "scoring.test"
            return ["127.0.0.1", "127.0.0.2"]

        try:
            eps = [endpoint("svc", [version("va", f"http://scoring.test:{first.port}", default=True)])]
            async with router(tmp_path, eps, resolver=resolver) as server, aiohttp.ClientSession() as session:
                for _ in range(20):
                    async with session.post(scoring_url(server, "svc"), headers=key_header(server, "svc")) as r:
                        assert r.status == 200
                assert first.hits >= 5 and second.hits >= 5 and first.hits + second.hits == 20
                assert first.headers[-1]["host"] == f"scoring.test:{first.port}"
        finally:
            await first.stop()
            await second.stop()

    run(scenario())


def test_readiness_checks_do_not_queue_behind_a_full_connection_pool(tmp_path: Path) -> None:
    """A replica busy with as many requests as the pooled client has connections is still
    checked (and kept): its readiness checks have connections of their own. Sharing the pool,
    they waited for a connection until their timeout and ejected the busy, healthy replica."""

    async def scenario() -> None:
        limits = dataclasses.replace(FAST_LIMITS, max_connections=2, health_check_interval_s=0.02, health_check_timeout_s=0.5)
        async with upstreams("a") as (a,):
            eps = [endpoint("svc", [version("va", a, default=True)], replica_max_concurrent_requests=4)]
            async with router(tmp_path, eps, limits=limits) as server, aiohttp.ClientSession() as session:
                url, headers = scoring_url(server, "svc", "slow"), key_header(server, "svc")
                ejected: list[str] = []
                pool = server.runtime.pool
                count = pool.on_eject
                assert count is not None

                def record(replica: Replica) -> None:
                    ejected.append(replica.url)
                    count(replica)

                pool.on_eject = record

                async def call() -> int:
                    async with session.post(url, headers=headers) as r:
                        await r.read()
                        return r.status

                holders = [asyncio.create_task(call()) for _ in range(2)]
                await until(lambda: a.inflight == 2)  # every pooled connection is busy
                checked = a.health_checks
                await until(lambda: a.health_checks >= checked + 3)  # and the checks go on
                assert ejected == []
                a.release.set()
                assert await asyncio.gather(*holders) == [200, 200]

    run(scenario())
