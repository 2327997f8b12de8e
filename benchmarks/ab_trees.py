"""Before/after over HTTP: two source trees serve the same repository side by side, wrk
alternates between them, and each round's ratio (after / before) is printed.

    git worktree add --detach /tmp/before HEAD~1
    python benchmarks/ab_trees.py --before /tmp/before [--rounds 3] [--cells v2-binary:32:64,v2-json:1:8]
        [--model mlp|identity] [--before-flags "..."] [--after-flags "..."]

A cell is protocol:rows:concurrency on ``--model`` (``mlp``, or ``identity``, the null
model where the server's own cost per request is all there is; no config, so each tree's
defaults apply). The trees run one after the other, in alternating order per round, so a
neighbour's burst of load hits both alike; the per-round ratios and their median are the
result (absolute figures drift on shared machines). The server's CPU per request comes
from /proc over each run. To compare two settings of one tree, pass the same tree twice
with different flags: ``--before . --before-flags "--gil-switch-interval-ms 5"``.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from http_bench import ROOT, ensure_wrk, lua_script, request_for, run_wrk, start_server  # noqa: E402

from benchmarks.procs import cpu_seconds  # noqa: E402
from scoring import model_zoo  # noqa: E402

DEFAULT_CELLS = "v2-binary:32:64,v2-json:32:64,v2-json:1:64,v2-binary:1:64,v2-json:1:8"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="source tree of the baseline")
    parser.add_argument("--after", type=Path, default=ROOT, help="source tree to compare (default: this one)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration-s", type=int, default=3)
    parser.add_argument("--cells", default=DEFAULT_CELLS)
    parser.add_argument("--model", choices=("mlp", "identity"), default="mlp")
    parser.add_argument("--before-flags", default="", help="added to the baseline's `infergate serve` command line")
    parser.add_argument("--after-flags", default="", help="added to the compared server's command line")
    args = parser.parse_args(argv)
    cells = [(p, int(r), int(c)) for p, r, c in (cell.split(":") for cell in args.cells.split(","))]
    wrk = ensure_wrk()
    ratios: dict[tuple[str, int, int], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="infergate-ab-") as tmp:
        workdir = Path(tmp)
        model_zoo.write(workdir / "models", [args.model])
        servers = {
            "before": start_server(workdir / "models", workdir / "before.log", args.before.resolve(),
                                   shlex.split(args.before_flags)),
            "after": start_server(workdir / "models", workdir / "after.log", args.after.resolve(),
                                  shlex.split(args.after_flags)),
        }
        try:
            for rnd in range(args.rounds):
                for protocol, rows, c in cells:
                    path, body, headers = request_for(protocol, args.model, rows, workdir)
                    script = lua_script(body, headers, workdir)
                    rps: dict[str, float] = {}
                    for name in ("before", "after") if rnd % 2 == 0 else ("after", "before"):
                        proc, port = servers[name]
                        t0 = cpu_seconds(proc.pid)
                        r = run_wrk(wrk, f"http://127.0.0.1:{port}{path}", script, c, args.duration_s)
                        cpu_us = (cpu_seconds(proc.pid) - t0) * 1e6 / max(1.0, r["rps"] * args.duration_s)
                        rps[name] = r["rps"]
                        print(f"round {rnd} {protocol:9} rows={rows:<3} c={c:<4} {name:6} {r['rps']:8.0f} req/s "
                              f"p99 {r['p99']:7.1f} ms  server CPU {cpu_us:6.0f} us/req  errors {r['errors']:.0f}",
                              flush=True)  # fmt: skip
                    ratios.setdefault((protocol, rows, c), []).append(rps["after"] / rps["before"])
        finally:
            for proc, _ in servers.values():
                proc.terminate()
            for proc, _ in servers.values():
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
    print("\n| cell | after / before req/s, per round | median |\n|---|---|---:|")
    for (protocol, rows, c), values in ratios.items():
        print(f"| {protocol} {rows}-row c={c} | {', '.join(f'{v:.2f}' for v in values)} | {statistics.median(values):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
