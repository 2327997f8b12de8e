"""issue 5's tiny target against its floors: the null app, the two floor references and
``infergate serve`` run side by side on ``tiny``, and wrk loads each in turn, in a rotated
order each round. Each round's req/s and each server's CPU per request are set against the
null app's from the same round (absolute figures drift on shared machines; ratios within a
round much less).

    python -m benchmarks.floors [--rounds 5] [--duration-s 4] [--concurrency 64]

The servers are those of the full benchmark (``benchmarks/setups.py``): ``null-starlette``,
``floor-starlette`` (parse the v2 JSON tensors, echo them), ``floor-inline`` (the same,
running the model per request inside the handler) and ``infergate`` (batching on). Every
one listens on 127.0.0.1; the load is bounded by rounds x 4 x (1 s warm-up + duration).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from benchmarks import payloads
from benchmarks.loadgen import LoadSpec, ensure_wrk, run_load
from benchmarks.procs import cpu_seconds
from benchmarks.setups import Served, Setup, default_setups, serve

# The full run's own setups, so that each server here is configured as it is there.
_FULL = {s.name: s for s in default_setups(quick=False)}
SETUPS: tuple[Setup, ...] = tuple(_FULL[n] for n in ("null-starlette", "floor-starlette", "floor-inline", "infergate"))
REFERENCE = SETUPS[0].name


def rotated(names: Sequence[str], rnd: int) -> list[str]:
    """``names`` starting at index ``rnd`` (mod len): each server is first, last, in between."""
    k = rnd % len(names)
    return [*names[k:], *names[:k]]


def table(rps: dict[str, list[float]], cpu_us: dict[str, list[float]]) -> str:
    """Markdown: per server, its req/s and CPU per request each round against the reference's."""
    lines = [
        f"| server | req/s per round | x {REFERENCE} per round | median | CPU us/request, median | x {REFERENCE} |",
        "|---|---|---|---:|---:|---:|",
    ]
    ref_cpu = statistics.median(cpu_us[REFERENCE])
    for name, values in rps.items():
        ratios = [v / r for v, r in zip(values, rps[REFERENCE], strict=True)]
        cpu = statistics.median(cpu_us[name])
        lines.append(
            f"| {name} | {', '.join(f'{v:,.0f}' for v in values)} | {', '.join(f'{x:.2f}' for x in ratios)} "
            f"| **{statistics.median(ratios):.2f}** | {cpu:.0f} | {cpu / ref_cpu:.2f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.floors", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration-s", type=float, default=4.0)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args(argv)
    wrk = ensure_wrk()
    rps: dict[str, list[float]] = {s.name: [] for s in SETUPS}
    cpu_us: dict[str, list[float]] = {s.name: [] for s in SETUPS}
    with tempfile.TemporaryDirectory(prefix="infergate-floors-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        subprocess.run([sys.executable, "-m", "scoring.model_zoo", str(work / "models"), "tiny"],
                       check=True, capture_output=True)  # fmt: skip
        tiny = payloads.read_model_info("tiny", work / "models" / "tiny" / "1" / "model.onnx")
        request = payloads.build_request("v2-json", tiny, payloads.make_inputs(tiny, 1))
        served: dict[str, Served] = {
            s.name: stack.enter_context(serve(s, tiny, work / s.name, work / "logs")) for s in SETUPS
        }
        for rnd in range(args.rounds):
            for name in rotated(list(served), rnd):
                server = served[name]
                assert server.pid is not None
                spec = LoadSpec(server.urls["v2-json"], request.body, headers=request.headers,
                                connections=args.concurrency, duration_s=args.duration_s,
                                threads=min(2, args.concurrency))  # fmt: skip
                run_load(dataclasses.replace(spec, duration_s=1.0), wrk=wrk)  # warm-up, discarded
                before = cpu_seconds(server.pid)
                result = run_load(spec, wrk=wrk)
                used = cpu_seconds(server.pid) - before
                if result.errors:
                    raise SystemExit(f"{name}: {result.errors} errors in round {rnd}; not a measurement")
                rps[name].append(result.rps)
                cpu_us[name].append(used * 1e6 / max(1, result.ok_requests))
                print(f"round {rnd} {name:16} {result.rps:8,.0f} req/s  p99 {result.p99_ms:6.1f} ms  "
                      f"server CPU {cpu_us[name][-1]:5.0f} us/request", flush=True)  # fmt: skip
    print(f"\ntiny, 1-row v2 JSON, c={args.concurrency}, {args.rounds} rounds of {args.duration_s:g} s:\n")
    print(table(rps, cpu_us))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
