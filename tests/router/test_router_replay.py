"""A replica that drops the connection before answering: the request is replayed once, on
another replica when there is one; never more than once; and readiness checks eject a
replica whose readiness answers 503."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from router_testkit import endpoint, key_header, router, run, scoring_url, until, upstreams, version


class Dropper:
    """Reads each request head, then closes the connection without a byte of answer."""

    def __init__(self) -> None:
        self.requests = 0
        self.server: asyncio.base_events.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"GET /v2/health/ready"):
            self.requests += 1
        writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


def test_dropped_request_is_replayed_on_another_replica(tmp_path: Path) -> None:
    async def scenario() -> None:
        dropper = Dropper()
        dropped_url = await dropper.start()
        try:
            async with upstreams("b") as (b,):
                eps = [endpoint("svc", [version("va", dropped_url, b, default=True)])]
                async with router(tmp_path, eps) as server, aiohttp.ClientSession() as session:
                    for _ in range(10):
                        async with session.post(scoring_url(server, "svc"), headers=key_header(server, "svc"), data=b"{}") as r:
                            assert r.status == 200
                    assert b.hits == 10
                    assert dropper.requests >= 1  # it was tried, and each time replayed elsewhere
        finally:
            await dropper.stop()

    run(scenario())


def test_replay_happens_once_then_502(tmp_path: Path) -> None:
    async def scenario() -> None:
        dropper = Dropper()
        dropped_url = await dropper.start()
        try:
            eps = [endpoint("svc", [version("va", dropped_url, default=True)])]
            async with router(tmp_path, eps) as server, aiohttp.ClientSession() as session:
                async with session.post(scoring_url(server, "svc"), headers=key_header(server, "svc"), data=b"{}") as r:
                    assert r.status == 502
                    assert (await r.json())["error"] == "upstream_unavailable"
                assert dropper.requests == 2  # the first try and one replay on a fresh connection
        finally:
            await dropper.stop()

    run(scenario())


def test_readiness_503_ejects_until_ready_again(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with upstreams("a", "b") as (a, b):
            eps = [endpoint("svc", [version("va", a, b, default=True)])]
            async with router(tmp_path, eps) as server, aiohttp.ClientSession() as session:
                replica_a = next(r for r in server.runtime.table.endpoints["svc"].versions["va"].replicas.replicas if r.url == a.url)
                a.ready = False  # draining: still serves, readiness 503
                await until(lambda: not replica_a.healthy)
                hits = a.hits
                for _ in range(10):
                    async with session.post(scoring_url(server, "svc"), headers=key_header(server, "svc")) as r:
                        assert r.status == 200
                assert a.hits == hits and b.hits >= 10
                a.ready = True
                await until(lambda: replica_a.healthy)

    run(scenario())
