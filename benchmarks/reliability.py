"""Reliability figures: faults injected into real processes on 127.0.0.1 under load, counted
from the clients' side.

    python benchmarks/reliability.py [--duration-s 5] [--concurrency 8] [--only router ...]
    INFERGATE_SOAK=1 python benchmarks/reliability.py          # what `make soak` runs (longer)

Prints one table row per scenario: the load held, the faults injected, requests sent, failed
(any answer but 200), lost (failed without a clear answer: a cut connection, a 502 or 500;
not a 503 + Retry-After, a 504 at scoring_timeout_ms, or a refused connection, which all tell
the client it may retry; must be 0) and recovery time (fault to the last failed answer; 0 when
nothing failed). Uses the reliability test kit (tests/reliability/rel_testkit.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "reliability"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rel_testkit import SOAK, Load, LoadResult, OpenLoad, Replica, Router, router_config, until, write_models  # noqa: E402

Row = dict[str, object]


def _row(name: str, load: str, faults: str, result: LoadResult, fault_at: float | None) -> Row:
    recovery = max(result.fail_times) - fault_at if result.fail_times and fault_at is not None else 0.0
    return {"scenario": name, "load": load, "faults": faults, "sent": result.sent, "failed": result.failed,
            "lost": result.lost, "recovery_s": round(max(recovery, 0.0), 2), "statuses": dict(result.statuses),
            "errors": ", ".join(f"{k} {v}" for k, v in sorted(result.errors.items()))}


async def _hold(load: Load, seconds: float) -> None:
    await asyncio.sleep(seconds)  # a benchmark holds load for a duration; tests count answers instead


async def replica_faults(repo: Path, tmp: Path, duration_s: float, concurrency: int) -> list[Row]:
    rows: list[Row] = []
    for name, fault in (("replica SIGKILL", "kill"), ("replica SIGSTOP (hang)", "stop")):
        replicas = [Replica(repo) for _ in range(2)]
        for r in replicas:
            r.wait_ready()
        router = Router(router_config(tmp / f"{fault}.yaml", "svc", [r.url for r in replicas], scoring_timeout_ms=1000),
                        tmp / f"state-{fault}")
        primary, _ = router.keys("svc")
        try:
            async with Load(router.scoring_url("svc"), {"Authorization": f"Bearer {primary}"}, concurrency=concurrency) as load:
                await _hold(load, duration_s / 3)
                fault_at = time.monotonic()
                if fault == "kill":
                    replicas[0].kill()
                else:
                    replicas[0].signal(signal.SIGSTOP)
                await _hold(load, duration_s)
            rows.append(_row(name, f"{concurrency} clients via router, 2 replicas", "1 of 2 replicas", load.result, fault_at))
        finally:
            replicas[0].signal(signal.SIGCONT)
            router.stop()
            for r in replicas:
                r.stop()
    return rows


async def rolling_restart(repo: Path, tmp: Path, duration_s: float, concurrency: int) -> Row:
    replicas = [Replica(repo, drain_delay_s=2.0) for _ in range(2)]
    for r in replicas:
        r.wait_ready()
    router = Router(router_config(tmp / "rolling.yaml", "svc", [r.url for r in replicas]), tmp / "state-rolling")
    primary, _ = router.keys("svc")
    restarts = 0
    try:
        async with Load(router.scoring_url("svc"), {"Authorization": f"Bearer {primary}"}, concurrency=concurrency) as load:
            await _hold(load, duration_s / 3)
            fault_at = time.monotonic()
            for i, old in enumerate(list(replicas)):
                old.signal(signal.SIGTERM)
                await asyncio.to_thread(old.stop, 30.0)
                replicas[i] = await asyncio.to_thread(Replica, repo, port=old.port, drain_delay_s=2.0)
                await asyncio.to_thread(replicas[i].wait_ready)
                restarts += 1
                await until(lambda: router.log().count("replica back") >= restarts, 30)
            await _hold(load, duration_s / 3)
        return _row("rolling restart (SIGTERM, drain 2 s)", f"{concurrency} clients via router, 2 replicas",
                    "2 SIGTERM + restart", load.result, fault_at)
    finally:
        router.stop()
        for r in replicas:
            r.stop()


async def router_faults(repo: Path, tmp: Path, duration_s: float, concurrency: int) -> list[Row]:
    replicas = [Replica(repo) for _ in range(2)]
    for r in replicas:
        r.wait_ready()
    config = router_config(tmp / "router.yaml", "svc", [r.url for r in replicas])
    router = Router(config, tmp / "state-router")
    primary, _ = router.keys("svc")
    rows: list[Row] = []
    try:
        reloads = max(5, int(duration_s * 2))
        async with Load(router.scoring_url("svc"), {"Authorization": f"Bearer {primary}"}, concurrency=concurrency) as load:
            fault_at = time.monotonic()
            for i in range(reloads):
                router.signal(signal.SIGHUP)
                await until(lambda: router.log().count("config reloaded from") > i, 10)
                await _hold(load, duration_s / reloads)
        rows.append(_row("router SIGHUP reload", f"{concurrency} clients via router", f"{reloads} reloads", load.result, fault_at))
        async with Load(router.scoring_url("svc"), {"Authorization": f"Bearer {primary}"}, concurrency=concurrency) as load:
            await _hold(load, duration_s / 3)
            fault_at = time.monotonic()
            port, admin_port = router.port, router.admin_port
            # One SIGTERM (stop sends it): a second one would skip the drain delay.
            await asyncio.to_thread(router.stop, 30.0)
            router = await asyncio.to_thread(Router, config, tmp / "state-router", port, admin_port)
            await _hold(load, duration_s / 3)
        rows.append(_row("router restart (SIGTERM, start again)", f"{concurrency} clients via router",
                         "1 graceful restart (drain 2 s)", load.result, fault_at))
    finally:
        router.stop()
        for r in replicas:
            r.stop()
    return rows


async def overload(repo: Path, tmp: Path, duration_s: float) -> Row:
    scoring = tmp / "scoring.json"
    scoring.write_text(json.dumps({"executor_threads": 1, "model_defaults": {
        "instance_count": 1, "session": {"intra_op_threads": 1},
        "batching": {"max_batch_size": 32, "max_queue_size": 4, "max_queue_delay_ms": 1}}}))
    server = Replica(repo, "--scoring-config", str(scoring))
    server.wait_ready()
    rows = np.random.default_rng(0).standard_normal((16, 256)).astype("float32").tolist()
    body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [16, 256], "data": rows}]}).encode()
    url = server.url + "/v2/models/mlp/infer"
    try:
        async with Load(url, body=body, concurrency=4) as warm:
            await _hold(warm, 1.0)
        async with Load(url, body=body, concurrency=4) as nominal:
            t0 = time.monotonic()
            await _hold(nominal, duration_s / 3)
            capacity = nominal.result.sent / (time.monotonic() - t0)
        rss_before = server.rss_kib()
        async with OpenLoad(url, 3 * capacity, body=body) as load:
            await _hold(load, duration_s)
        rss_after = server.rss_kib()
        ended = time.monotonic()
        async with Load(url, body=body, concurrency=1) as after:
            await after.until_sent(1)
            first_ok = ended if after.result.statuses[200] else time.monotonic()
        row = _row("overload 3x (queue 4)", f"{3 * capacity:.0f} req/s open loop ({capacity:.0f}/s capacity)",
                   "3x capacity", load.result, None)
        row["recovery_s"] = round(first_ok - ended, 2)
        row["note"] = (f"shed {load.result.statuses[503]} with Retry-After, p99 accepted {load.result.p99_s() * 1000:.0f} ms, "
                       f"RSS {rss_before // 1024} -> {rss_after // 1024} MiB")
        return row
    finally:
        server.stop()


SCENARIOS = ("replica", "rolling", "router", "overload")


async def main_async(duration_s: float, concurrency: int, only: tuple[str, ...] = SCENARIOS) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="infergate-rel-") as name:
        tmp = Path(name)
        repo = write_models(tmp / "models", ["identity"])
        rows: list[Row] = []
        if "replica" in only:
            rows += await replica_faults(repo, tmp, duration_s, concurrency)
        if "rolling" in only:
            rows.append(await rolling_restart(repo, tmp, duration_s, concurrency))
        if "router" in only:
            rows += await router_faults(repo, tmp, duration_s, concurrency)
        if "overload" in only:
            rows.append(await overload(write_models(tmp / "mlp", ["mlp"]), tmp, duration_s))
        return rows


def print_table(rows: list[Row]) -> None:
    print("| scenario | load held | faults injected | sent | failed | lost | recovery (s) | notes |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        note = r.get("note") or ", ".join(f"{k or 'no answer'}: {v}" for k, v in sorted(r["statuses"].items()))  # type: ignore[union-attr]
        if r.get("errors"):
            note += f" ({r['errors']})"
        print(f"| {r['scenario']} | {r['load']} | {r['faults']} | {r['sent']} | {r['failed']} | {r['lost']} | "
              f"{r['recovery_s']} | {note} |")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=30.0 if SOAK else 5.0, help="load held per phase")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--only", nargs="+", choices=SCENARIOS, default=list(SCENARIOS),
        help="scenarios to run (router: the SIGHUP reloads and the restart; default all)",
    )
    args = parser.parse_args(argv)
    rows = asyncio.run(main_async(args.duration_s, args.concurrency, tuple(args.only)))
    print_table(rows)
    return 1 if any(r["lost"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
