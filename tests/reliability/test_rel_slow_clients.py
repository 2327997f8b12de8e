"""Slow-loris, idle and oversized request heads against the scoring server and the router:
bounded by the request-head timeout and size limit, and 200 slow connections do not starve
normal requests."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from rel_testkit import Process, Replica, Router, router_config, run, scaled, write_models

pytestmark = pytest.mark.e2e

HEAD_TIMEOUT_S = 1.0
SLOW = int(scaled(200, 1000))


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> object:
    tmp = tmp_path_factory.mktemp("slow")
    repo = write_models(tmp / "models", ["identity"])
    replica = Replica(repo, "--request-head-timeout-s", str(HEAD_TIMEOUT_S))
    replica.wait_ready()
    config = router_config(tmp / "router.yaml", "svc", [replica.url], auth_enabled=False)
    router = Router(config, tmp / "state", head_timeout_s=HEAD_TIMEOUT_S)
    yield {"server": (replica, replica.url + "/v2/health/live"), "router": (router, router.url + "/healthz")}
    router.stop()
    replica.stop()


@pytest.mark.parametrize("which", ["server", "router"])
def test_slow_heads_are_closed_and_do_not_starve(targets: dict[str, tuple[Process, str]], which: str) -> None:
    proc, url = targets[which]
    port = int(url.split(":")[2].split("/")[0])

    async def slow_client(i: int) -> tuple[str, float]:
        """Trickle a head one byte every 100 ms (or send nothing at all, for a third of them)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        head = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
        reading = asyncio.create_task(reader.read(200))
        try:
            for j in range(len(head) if i % 3 else 0):
                if reading.done():
                    break
                writer.write(head[j : j + 1])
                await writer.drain()
                await asyncio.sleep(0.1)
            answer = await asyncio.wait_for(reading, 30)
        except (ConnectionError, TimeoutError) as exc:
            answer = type(exc).__name__.encode()
        finally:
            writer.close()
        return answer.decode(errors="replace"), time.monotonic() - started

    async def normal_clients(stop: asyncio.Event) -> list[int]:
        statuses: list[int] = []
        async with httpx.AsyncClient(timeout=10) as client:
            while not stop.is_set() or len(statuses) < 50:
                statuses.append((await client.get(url)).status_code)
        return statuses

    async def scenario() -> tuple[list[tuple[str, float]], list[int]]:
        stop = asyncio.Event()
        normal = asyncio.create_task(normal_clients(stop))
        slow = await asyncio.gather(*(slow_client(i) for i in range(SLOW)))
        stop.set()
        return slow, await normal

    slow, normal = run(scenario())
    # normal requests all served while the slow ones held their connections
    assert normal and set(normal) == {200}, normal
    # every slow connection was closed by the server (408 or just closed), none hung
    for answer, _ in slow:
        assert answer.startswith("HTTP/1.1 408"), answer
    # the process is fine after
    assert httpx.get(url).status_code == 200


@pytest.mark.parametrize("which", ["server", "router"])
def test_oversized_head_is_431(targets: dict[str, tuple[Process, str]], which: str) -> None:
    _, url = targets[which]
    for headers in ({"X-Big": "a" * (1024 * 1024)}, {f"X-H{i}": "b" * 100 for i in range(2000)}):
        try:
            r = httpx.get(url, headers=headers, timeout=10)
        except httpx.RemoteProtocolError:
            continue  # closed while we were still sending: also bounded
        assert r.status_code == 431, r.status_code
        assert r.json()["error"]
    assert httpx.get(url).status_code == 200
