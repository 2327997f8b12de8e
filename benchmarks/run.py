"""One command, side by side: ``python -m benchmarks.run [--quick]`` (``make bench``,
``make bench-quick``).

On this machine, with the same model files and the same load generator (wrk), in one run:
the in-process ONNX Runtime limit, a bare Starlette null reference, infergate (v2 JSON, v2
binary, /score; batching on and off; through the router with key auth) and the peers
(AzureML inference server, MLServer, Triton via pytriton), each in its own venv. Every
server is checked for correct answers before it is measured, and one server runs at a
time. Writes benchmarks/results/<date>.md and .png and appends a summary to
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks import payloads
from benchmarks.inprocess import LimitResult, measure_limit
from benchmarks.loadgen import LoadSpec, ensure_wrk, run_load
from benchmarks.payloads import ModelInfo, Protocol, ResponseMismatch
from benchmarks.procs import http_post
from benchmarks.report import Measurement, comparison_table, plot, scenario_table, target_checks, targets_table
from benchmarks.setups import MAX_BATCH_DELAY_MS, MAX_BATCH_SIZE, Setup, default_setups, serve, versions

HERE = Path(__file__).resolve().parent
MODELS = ("mlp", "tiny")
#: Rows per request for each model: mlp with 1 and 32 rows, the overhead-bound tiny with 1.
ROWS: dict[str, tuple[int, ...]] = {"mlp": (1, 32), "tiny": (1,)}


@dataclass(frozen=True)
class Plan:
    """What one run measures and for how long."""

    quick: bool
    concurrency: tuple[int, ...]
    duration_s: float
    warmup_s: float
    limit_seconds: float
    setups: tuple[Setup, ...]
    wrk_threads: int = 1
    #: Once per started server and request size, before its first point (discarded).
    server_warmup_s: float = 3.0


def make_plan(quick: bool, only: Sequence[str] = (), concurrency: Sequence[int] = (), duration_s: float | None = None) -> Plan:
    setups = default_setups(quick)
    if only:
        setups = [s for s in setups if any(word in s.name for word in only)]
    if quick:
        # About 2.5 minutes: the targets' concurrency only, 24 points of 1 s warm-up + 2 s, and a
        # 1 s warm-up per started server (most of the rest is starting the peers).
        plan = Plan(True, (64,), 2.0, 1.0, 0.5, tuple(setups), server_warmup_s=1.0)
    else:
        # About 35 minutes: 260 points of 1 s warm-up + 5 s measured, plus server start-ups.
        plan = Plan(False, (1, 8, 32, 64, 128), 5.0, 1.0, 2.0, tuple(setups), server_warmup_s=5.0)
    if concurrency:
        plan = dataclasses.replace(plan, concurrency=tuple(concurrency))
    if duration_s:
        plan = dataclasses.replace(plan, duration_s=duration_s)
    return plan


def rows_for(setup: Setup, model: str, quick: bool) -> tuple[int, ...]:
    rows = ROWS.get(model, (1,))
    if quick and setup.name != "infergate":
        # Quick runs keep 32-row requests for infergate's own v2 rows (its rows/s targets).
        rows = rows[:1]
    return rows


def protocols_for(setup: Setup, rows: int, quick: bool) -> tuple[Protocol, ...]:
    if quick and rows > 1:
        return tuple(p for p in setup.protocols if p != "score")
    return setup.protocols


def build_models(target: Path) -> dict[str, ModelInfo]:
    """Build mlp and tiny with infergate's own generator, through its command line."""
    done = subprocess.run(
        [sys.executable, "-m", "scoring.model_zoo", str(target), *MODELS],
        capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"benchmarks: `python -m scoring.model_zoo` failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return load_models(target)


def load_models(root: Path) -> dict[str, ModelInfo]:
    found = {}
    for name in MODELS:
        path = root / name / "1" / "model.onnx"
        if not path.exists():
            raise SystemExit(f"benchmarks: {path} is missing")
        found[name] = payloads.read_model_info(name, path)
    return found


def reference_outputs(model: ModelInfo, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model.path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, inputs)))


def verify(url: str, protocol: Protocol, request: payloads.Request, extra: tuple[tuple[str, str], ...],
           model: ModelInfo, expected: dict[str, np.ndarray] | None) -> None:
    """One request by hand: 2xx and (unless ``expected`` is None) the right outputs."""
    status, headers, body = http_post(url, request.body, request.headers + extra)
    if not 200 <= status < 300:
        raise ResponseMismatch(f"HTTP {status}: {body[:300]!r}")
    if expected is None:
        return
    header_length = headers.get("inference-header-content-length")
    got = payloads.parse_response(protocol, model, body, int(header_length) if header_length else None)
    payloads.check_outputs(got, expected)


def measure_setup(setup: Setup, models: dict[str, ModelInfo], plan: Plan, workdir: Path, log_dir: Path,
                  commands: list[str]) -> list[Measurement]:
    """Start ``setup`` once per model, verify each protocol, then load it at each concurrency."""
    out: list[Measurement] = []
    for model in models.values():
        if setup.models and model.name not in setup.models:
            continue
        rows_list = rows_for(setup, model.name, plan.quick)

        print(f"== {setup.name} / {model.name}: starting", flush=True)
        try:
            with serve(setup, model, workdir / f"{setup.name}-{model.name}", log_dir) as served:
                commands.extend(served.commands)
                for rows in rows_list:
                    inputs = payloads.make_inputs(model, rows)
                    expected = reference_outputs(model, inputs) if served.checks_outputs else None
                    verified: list[tuple[Protocol, payloads.Request]] = []
                    for protocol in protocols_for(setup, rows, plan.quick):
                        request = payloads.build_request(protocol, model, inputs)
                        try:
                            verify(served.urls[protocol], protocol, request, served.headers, model, expected)
                        except (ResponseMismatch, OSError) as exc:
                            print(f"   {protocol} rows={rows}: wrong answer, not measured: {exc}", flush=True)
                            out += [Measurement(setup.name, setup.group, protocol, model.name, rows, c, None,
                                                f"wrong answer: {exc}") for c in plan.concurrency]
                            continue
                        verified.append((protocol, request))
                    if verified and plan.server_warmup_s > 0:
                        # A fresh server is slower for its first seconds (ONNX Runtime allocates
                        # per new batch shape, pools fill): warm it once at the highest load so the
                        # first protocol measured is not penalised against the later ones.
                        protocol, request = verified[0]
                        run_load(LoadSpec(url=served.urls[protocol], body=request.body,
                                          headers=request.headers + served.headers, connections=max(plan.concurrency),
                                          duration_s=plan.server_warmup_s, threads=plan.wrk_threads))
                    for protocol, request in verified:
                        for c in plan.concurrency:
                            spec = LoadSpec(url=served.urls[protocol], body=request.body,
                                            headers=request.headers + served.headers,
                                            connections=c, duration_s=plan.duration_s, threads=plan.wrk_threads)
                            result = run_load(spec, warmup_s=plan.warmup_s)
                            m = Measurement(setup.name, setup.group, protocol, model.name, rows, c, result)
                            out.append(m)
                            print(f"   {protocol:9} rows={rows:<3} c={c:<4} {result.rps:9.0f} req/s  "
                                  f"p50 {result.p50_ms:7.2f}  p99 {result.p99_ms:7.2f} ms  errors {result.errors}", flush=True)
        except Exception as exc:  # a peer that cannot start is reported, and the run goes on
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            print(f"   FAILED: {type(exc).__name__}: {exc}"[:3000], flush=True)
            traceback.print_exc(limit=3)
            done = {(m.protocol, m.rows) for m in out if m.setup == setup.name and m.model == model.name}
            for rows in rows_list:
                for protocol in protocols_for(setup, rows, plan.quick):
                    if (protocol, rows) not in done:
                        for c in plan.concurrency:
                            out.append(Measurement(setup.name, setup.group, protocol, model.name, rows, c, None, reason))
    return out


def machine_description() -> list[str]:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return [f"{platform.node()}: {os.cpu_count()} CPUs ({cpu}){mem}, {platform.platform()}"]


def wrk_version(wrk: str) -> str:
    done = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    return (done.stdout or done.stderr).splitlines()[0].strip() if (done.stdout or done.stderr) else "wrk"


def headline_concurrency(plan: Plan) -> int:
    return 64 if 64 in plan.concurrency else max(plan.concurrency)


def render_markdown(plan: Plan, stamp: str, limits: dict[str, LimitResult], measurements: list[Measurement],
                    commands: list[str], wrk: str, load_before: str, load_after: str, plot_name: str | None) -> str:
    c = headline_concurrency(plan)
    lines = [
        f"# Benchmark {stamp} ({'quick' if plan.quick else 'full'})",
        "",
        "Same machine, same ONNX files, same load generator, one server at a time, in one run.",
        "Absolute numbers drift on shared machines; compare the ratios within this run.",
        "",
        "## Machine and versions",
        "",
        *[f"- {line}" for line in machine_description()],
        f"- load average before / after: {load_before} / {load_after}",
        *[f"- {name}: {version}" for name, version in versions().items()],
        f"- load generator: {wrk_version(wrk)}, {plan.wrk_threads} thread(s), closed loop, "
        f"{plan.server_warmup_s:.0f}s warm-up per started server and request size, then per point "
        f"{plan.warmup_s:.0f}s warm-up (discarded) and {plan.duration_s:.0f}s measured; every response's status checked",
        f"- batching (infergate, MLServer, Triton alike): max_batch_size {MAX_BATCH_SIZE}, max delay {MAX_BATCH_DELAY_MS} ms",
        "",
        "## In-process ONNX Runtime limit (no server)",
        "",
        "| model | best batch | callers | rows/s | rows/s by batch size |",
        "|---|---:|---:|---:|---|",
    ]
    for name, limit in limits.items():
        by_batch = ", ".join(f"{b}: {v:,.0f}" for b, v in limit.rows_per_s.items())
        callers = (limit.callers or {}).get(limit.best_batch, 1)
        lines.append(f"| {name} | {limit.best_batch} | {callers} | {limit.best_rows_per_s:,.0f} | {by_batch} |")
    scenarios = sorted({m.scenario for m in measurements})
    best = {name: limit.best_rows_per_s for name, limit in limits.items()}
    lines += ["", f"## Targets at concurrency {c}", "", targets_table(target_checks(measurements, best, c))]
    lines += ["", f"## infergate against the others at concurrency {c}", "",
              "Cells: throughput ratio (requests/s), then in brackets p99 ours / p99 theirs (below 1 is better).", ""]
    for model, rows in scenarios:
        subset = [m for m in measurements if m.scenario == (model, rows)]
        lines += [f"### {model}, {rows}-row requests", "", comparison_table(subset, c, best.get(model)), ""]
    lines += ["## All points", ""]
    for model, rows in scenarios:
        subset = [m for m in measurements if m.scenario == (model, rows)]
        lines += [f"### {model}, {rows}-row requests", "", scenario_table(subset, best.get(model)), ""]
    if plot_name:
        lines += ["## Plot", "", f"![throughput and p99 against concurrency]({plot_name})", ""]
    lines += ["## Commands", "", "```", f"{sys.executable} -m benchmarks.run {' '.join(sys.argv[1:])}".rstrip(),
              f"{wrk} -t{plan.wrk_threads} -c<c> -d{plan.duration_s:.0f}s --timeout=10s -s request.lua <url>", *commands, "```", ""]
    return "\n".join(lines)


def summary_section(plan: Plan, stamp: str, limits: dict[str, LimitResult], measurements: list[Measurement], results_name: str) -> str:
    c = headline_concurrency(plan)
    lines = [f"## {stamp}: python -m benchmarks.run {' '.join(sys.argv[1:])}".rstrip(), "",
             f"Full tables and plot: [results/{results_name}](results/{results_name}). "
             f"Machine: {machine_description()[0]}. Ratios at concurrency {c} within that one run.", "",
             targets_table(target_checks(measurements, {n: lim.best_rows_per_s for n, lim in limits.items()}, c)), ""]
    for model, rows in sorted({m.scenario for m in measurements}):
        subset = [m for m in measurements if m.scenario == (model, rows)]
        limit = limits[model].best_rows_per_s if model in limits else None
        lines += [f"**{model}, {rows}-row requests** (in-process limit {limit or 0:,.0f} rows/s)", "",
                  comparison_table(subset, c, limit), ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="about 4 minutes: concurrency 8 and 64, 2 s per point")
    parser.add_argument("--only", action="append", default=[], help="only setups whose name contains this (repeatable)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[], help="override the concurrency levels")
    parser.add_argument("--duration-s", type=float, default=None, help="seconds measured per point")
    parser.add_argument("--models-dir", type=Path, default=None,
                        help="use <dir>/{mlp,tiny}/1/model.onnx instead of building them with scoring.model_zoo")
    parser.add_argument("--out-dir", type=Path, default=HERE / "results")
    parser.add_argument("--no-summary", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = parser.parse_args(argv)

    plan = make_plan(args.quick, args.only, args.concurrency, args.duration_s)
    wrk = ensure_wrk()
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d-%H%M")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="infergate-bench-") as tmp:
        work = Path(tmp)
        models = load_models(args.models_dir) if args.models_dir else build_models(work / "models")
        limits: dict[str, LimitResult] = {}
        for name, model in models.items():
            limits[name] = measure_limit(model, plan.limit_seconds)
            print(f"== in-process limit {name}: {limits[name].best_rows_per_s:,.0f} rows/s at batch {limits[name].best_batch}", flush=True)
        measurements: list[Measurement] = []
        commands: list[str] = []
        log_dir = HERE / ".cache" / "logs" / stamp
        for setup in plan.setups:
            started = time.monotonic()
            measurements += measure_setup(setup, models, plan, work / "servers", log_dir, commands)
            print(f"   ({time.monotonic() - started:.0f}s)", flush=True)
    load_after = " ".join(f"{x:.2f}" for x in os.getloadavg())
    plot_path = args.out_dir / f"{stamp}.png"
    drawn = plot(measurements, plot_path, f"infergate benchmark {stamp}")
    if not drawn:
        print("benchmarks: matplotlib not installed (pip install -e '.[bench]'); no plot", flush=True)
    raw = {
        "limits": {n: {"best_batch": lim.best_batch, "rows_per_s": lim.rows_per_s} for n, lim in limits.items()},
        "points": [
            {"setup": m.setup, "group": m.group, "protocol": m.protocol, "model": m.model, "rows": m.rows,
             "concurrency": m.concurrency, "error": m.error,
             "result": None if m.result is None else {k: v for k, v in vars(m.result).items() if k != "raw"}}
            for m in measurements
        ],
    }
    (args.out_dir / f"{stamp}.json").write_text(json.dumps(raw, indent=1))
    md_path = args.out_dir / f"{stamp}.md"
    md_path.write_text(render_markdown(plan, stamp, limits, measurements, commands, wrk, load_before, load_after,
                                       plot_path.name if drawn else None))
    print(f"benchmarks: wrote {md_path}" + (f" and {plot_path}" if drawn else ""), flush=True)
    if not args.no_summary:
        summary = HERE / "RESULTS.md"
        existing = summary.read_text() if summary.exists() else "# Benchmark results\n"
        summary.write_text(existing.rstrip("\n") + "\n\n" + summary_section(plan, stamp, limits, measurements, md_path.name))
        print(f"benchmarks: appended a summary to {summary}", flush=True)
    failed = [m for m in measurements if not m.ok]
    if failed:
        print(f"benchmarks: {len(failed)} of {len(measurements)} points failed or had errors (see the tables)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
