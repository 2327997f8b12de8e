"""Scoring replicas failing under load behind a real ``infergate route``: SIGKILL, SIGSTOP,
rolling SIGTERM restarts. Every scenario counts what the clients saw."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
from rel_testkit import Load, Replica, Router, router_config, run, scaled, until, wait_http, write_models

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_models(tmp_path_factory.mktemp("models"), ["identity"])


def _start(repo: Path, tmp_path: Path, n: int, **endpoint: object) -> tuple[list[Replica], Router]:
    replicas = [Replica(repo) for _ in range(n)]
    for r in replicas:
        r.wait_ready()
    config = router_config(tmp_path / "router.yaml", "svc", [r.url for r in replicas], **endpoint)
    router = Router(config, tmp_path / "state")
    return replicas, router


def _stop(replicas: list[Replica], router: Router) -> None:
    router.stop()
    for r in replicas:
        r.stop()


def test_replica_sigkill_mid_load_loses_nothing(repo: Path, tmp_path: Path) -> None:
    """One of two replicas is SIGKILLed while 8 clients keep sending: the requests in flight on
    it and those racing its pooled connections are retried on the other; no client sees an
    error."""
    replicas, router = _start(repo, tmp_path, 2)
    try:
        primary, _ = router.keys("svc")

        async def scenario() -> tuple[int, int]:
            async with Load(router.scoring_url("svc"), {"Authorization": f"Bearer {primary}"}, concurrency=8) as load:
                await load.until_sent(int(scaled(200, 3000)))
                replicas[0].kill()
                await load.until_sent(int(scaled(400, 10000)))
            return load.result.sent, load.result.failed

        sent, failed = run(scenario())
        assert failed == 0, (sent, failed, router.log()[-3000:])
        assert "replica ejected" in router.log()
    finally:
        _stop(replicas, router)


def test_replica_sigstop_times_out_then_ejected(repo: Path, tmp_path: Path) -> None:
    """A replica that hangs (SIGSTOP): what it holds answers 504 at scoring_timeout_ms, it is
    ejected, and the other replica then serves everything."""
    replicas, router = _start(repo, tmp_path, 2, scoring_timeout_ms=1000)
    try:
        primary, _ = router.keys("svc")

        async def scenario() -> tuple[dict[int, int], dict[int, int]]:
            async with Load(router.scoring_url("svc"), {"Authorization": f"Bearer {primary}"}, concurrency=8) as load:
                await load.until_sent(100)
                replicas[0].signal(signal.SIGSTOP)
                # Ejected: the router log says so once the first request timed out.
                await until(lambda: "replica ejected" in router.log(), 30)
                during = dict(load.result.statuses)
                await load.until_sent(int(scaled(300, 5000)))
                after = {k: v - during.get(k, 0) for k, v in load.result.statuses.items()}
            return during, after

        during, after = run(scenario())
        assert set(during) <= {200, 504}, during  # the hung requests: 504, nothing else
        assert after.get(200, 0) >= int(scaled(300, 5000)) - 8, after  # at most the in-flight 8 stragglers
        assert set(after) <= {200, 504}, after
    finally:
        replicas[0].signal(signal.SIGCONT)
        _stop(replicas, router)


def test_rolling_restart_under_load_loses_nothing(repo: Path, tmp_path: Path) -> None:
    """SIGTERM each replica in turn (drain delay 2 s: readiness 503, still serving), start it
    again on the same port, wait until the router sends to it, next one. Zero failures."""
    replicas = [Replica(repo, drain_delay_s=2.0) for _ in range(2)]
    for r in replicas:
        r.wait_ready()
    router = Router(router_config(tmp_path / "router.yaml", "svc", [r.url for r in replicas]), tmp_path / "state")
    rounds = int(scaled(1, 3))
    try:
        primary, _ = router.keys("svc")

        async def scenario() -> tuple[int, int, dict[str, int]]:
            restarts = 0
            async with Load(router.scoring_url("svc"), {"Authorization": f"Bearer {primary}"}, concurrency=8) as load:
                await load.until_sent(100)
                for _ in range(rounds):
                    for i, old in enumerate(list(replicas)):
                        old.signal(signal.SIGTERM)
                        code = await asyncio.to_thread(old.stop, 30.0)
                        assert code == 0, old.log()
                        fresh = await asyncio.to_thread(Replica, old.repo, port=old.port, drain_delay_s=2.0)
                        replicas[i] = fresh
                        await asyncio.to_thread(fresh.wait_ready)
                        # the router's probe readmits it (readiness 200) before the next one goes
                        restarts += 1
                        await until(lambda: router.log().count("replica back") >= restarts, 30)
                        await load.until_sent(100)
            return load.result.sent, load.result.failed, {**load.result.errors, **{str(k): v for k, v in load.result.statuses.items()}}

        sent, failed, errors = run(scenario())
        events = [line for line in router.log().splitlines() if "replica" in line]
        assert failed == 0, (sent, failed, errors, events)
    finally:
        _stop(replicas, router)


def test_readiness_flip_is_seen_by_router(repo: Path, tmp_path: Path) -> None:
    """After SIGTERM the replica's readiness answers 503 while it still serves; the router's
    health checks take it out before its socket closes."""
    replicas, router = _start(repo, tmp_path, 2)
    try:
        wait_http(router.url + "/healthz", 10)
        replicas[0].signal(signal.SIGTERM)
        wait_http(replicas[0].url + "/v2/health/ready", 10, status=503)

        async def scenario() -> None:
            await until(lambda: "replica ejected" in router.log(), 10)

        run(scenario())
    finally:
        _stop(replicas, router)
