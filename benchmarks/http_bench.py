"""HTTP throughput of ``infergate serve`` alone, over loopback, with wrk.

    python benchmarks/http_bench.py [--quick] [--duration-s 3] [--concurrency 1,8,32,64]

Starts one server on a temporary repository (``identity``: the null model, the HTTP
ceiling; ``mlp`` batched; ``mlp_nobatch`` with batching off), checks one answer per
scenario, then runs wrk for each (protocol, model, rows, concurrency): v2 JSON, v2 binary
and AzureML /score with 1- and 32-row requests. Prints requests/s, rows/s, p50 and p99 as
a Markdown table. wrk comes from Debian's packages (installed with apt-get when missing).
Every run is bounded by --duration-s; the whole script by the number of runs. It first
measures the in-process ONNX Runtime limit of ``mlp`` (about 12 s) and, with concurrency 64
in the plan, ends with issue 3's ratios from this one run: batched / null model, batched /
batching off, and 32-row v2 binary rows/s / the limit.
The cross-server comparison (peers, router, in-process limit) is ``python -m benchmarks.run``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.inprocess import measure_limit  # noqa: E402
from benchmarks.payloads import read_model_info  # noqa: E402
from scoring import model_zoo  # noqa: E402

# name -> input width; the null model gets the same payload as mlp, so that the comparison
# "mlp with batching vs the null model" measures inference, not a smaller JSON body.
MODELS = {"identity": 256, "mlp": 256, "mlp_nobatch": 256}


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, timeout=300)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is not installed and apt-get could not install it")
    return found


def write_repository(root: Path) -> None:
    model_zoo.write(root, ["identity", "mlp"])
    nobatch = root / "mlp_nobatch" / "1"
    nobatch.mkdir(parents=True)
    shutil.copy(root / "mlp" / "1" / "model.onnx", nobatch / "model.onnx")
    (root / "mlp_nobatch" / "config.yaml").write_text("batching: {enabled: false}\n")


def start_server(
    root: Path, log: Path, tree: Path = ROOT, flags: Sequence[str] = ()
) -> tuple[subprocess.Popen[bytes], int]:
    """``infergate serve`` from the source ``tree`` on a free port (read back from its
    "listening" log line), with ``flags`` added to its command line."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "serve", "--model-repository", str(root),
             "--port", "0", "--drain-delay-s", "0", *flags],
            cwd=tree, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + 120
    port = None
    while port is None and time.monotonic() < deadline and proc.poll() is None:
        for line in log.read_text().splitlines():
            if '"event":"listening"' in line:
                port = int(json.loads(line)["port"])
        time.sleep(0.05)
    while port is not None and time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not become ready:\n" + log.read_text()[-2000:])


def request_for(protocol: str, model: str, rows: int, workdir: Path) -> tuple[str, Path, dict[str, str]]:
    """(path, body file, headers) for one scenario."""
    x = np.random.default_rng(0).random((rows, MODELS[model]), dtype=np.float32)
    headers: dict[str, str] = {}
    if protocol == "v2-json":
        body = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                       "data": x.round(4).reshape(-1).tolist()}]}).encode()  # fmt: skip
        headers["Content-Type"] = "application/json"
        path = f"/v2/models/{model}/infer"
    elif protocol == "v2-binary":
        header = json.dumps({
            "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                        "parameters": {"binary_data_size": x.nbytes}}],
            "outputs": [{"name": "output", "parameters": {"binary_data": True}}],
        }).encode()  # fmt: skip
        body = header + x.tobytes()
        headers["Inference-Header-Content-Length"] = str(len(header))
        headers["Content-Type"] = "application/octet-stream"
        path = f"/v2/models/{model}/infer"
    else:
        body = json.dumps({"data": x.round(4).tolist()}).encode()
        headers["Content-Type"] = "application/json"
        path = "/score"
    file = workdir / f"{protocol}-{model}-{rows}.body"
    file.write_bytes(body)
    return path, file, headers


def lua_script(body_file: Path, headers: dict[str, str], workdir: Path) -> Path:
    lines = ['wrk.method = "POST"', f'local f = io.open("{body_file}", "rb")', "wrk.body = f:read(\"*a\")", "f:close()"]
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    script = workdir / (body_file.stem + ".lua")
    script.write_text("\n".join(lines) + "\n")
    return script


def check(port: int, path: str, body_file: Path, headers: dict[str, str]) -> None:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body_file.read_bytes(), headers=headers)
    with urllib.request.urlopen(req, timeout=30) as r:
        if r.status != 200:
            raise SystemExit(f"{path}: answered {r.status}")


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(wrk: str, url: str, script: Path, concurrency: int, duration_s: int) -> dict[str, float]:
    threads = max(1, min(2, concurrency))
    out = subprocess.run(
        [wrk, f"-t{threads}", f"-c{concurrency}", f"-d{duration_s}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, timeout=duration_s + 60, check=True,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50": p50, "p99": p99, "errors": float(errors.group(1)) if errors else 0.0}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-s", type=int, default=3)
    parser.add_argument("--concurrency", default="1,8,32,64")
    parser.add_argument("--quick", action="store_true", help="concurrency 64, 1-row requests only")
    args = parser.parse_args(argv)
    concurrency = [64] if args.quick else [int(c) for c in args.concurrency.split(",")]
    rows_list = [1] if args.quick else [1, 32]
    wrk = ensure_wrk()
    rps: dict[tuple[str, str, int, int], float] = {}  # (protocol, model, rows, c) -> req/s
    with tempfile.TemporaryDirectory(prefix="infergate-bench-") as tmp:
        workdir = Path(tmp)
        write_repository(workdir / "models")
        limit = measure_limit(read_model_info("mlp", workdir / "models" / "mlp" / "1" / "model.onnx"))
        print(f"in-process limit mlp: {limit.best_rows_per_s:,.0f} rows/s at batch {limit.best_batch}\n")
        proc, port = start_server(workdir / "models", workdir / "server.log")
        print("| protocol | model | rows | concurrency | req/s | rows/s | p50 ms | p99 ms | errors |")
        print("|---|---|---|---|---|---|---|---|---|")
        try:
            for protocol in ("v2-json", "v2-binary"):
                for model in MODELS:
                    for rows in rows_list:
                        path, body, headers = request_for(protocol, model, rows, workdir)
                        check(port, path, body, headers)
                        script = lua_script(body, headers, workdir)
                        for c in concurrency:
                            r = run_wrk(wrk, f"http://127.0.0.1:{port}{path}", script, c, args.duration_s)
                            rps[(protocol, model, rows, c)] = r["rps"] if not r["errors"] else 0.0
                            print(f"| {protocol} | {model} | {rows} | {c} | {r['rps']:.0f} | {r['rps'] * rows:.0f} "
                                  f"| {r['p50']:.2f} | {r['p99']:.2f} | {r['errors']:.0f} |", flush=True)  # fmt: skip
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        # /score serves one model: a server whose only model is mlp.
        score_root = workdir / "score_models"
        model_zoo.write(score_root, ["mlp"])
        proc, port = start_server(score_root, workdir / "score-server.log")
        try:
            for rows in rows_list:
                path, body, headers = request_for("score", "mlp", rows, workdir)
                check(port, path, body, headers)
                script = lua_script(body, headers, workdir)
                for c in concurrency:
                    r = run_wrk(wrk, f"http://127.0.0.1:{port}{path}", script, c, args.duration_s)
                    print(f"| score | mlp | {rows} | {c} | {r['rps']:.0f} | {r['rps'] * rows:.0f} "
                          f"| {r['p50']:.2f} | {r['p99']:.2f} | {r['errors']:.0f} |", flush=True)  # fmt: skip
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    if 64 in concurrency:
        print()
        for line in issue3_ratios(rps, limit.best_rows_per_s, 64):
            print(line)
    return 0


def issue3_ratios(rps: dict[tuple[str, str, int, int], float], limit: float, c: int) -> list[str]:
    """Issue 3's targets, from one run's req/s (0 for a run with errors)."""

    def ratio(a: float, b: float) -> float:
        return a / b if b else 0.0

    lines = [f"issue 3 at c={c} (this run):"]
    for protocol in ("v2-json", "v2-binary"):
        batched = rps.get((protocol, "mlp", 1, c), 0.0)
        null = ratio(batched, rps.get((protocol, "identity", 1, c), 0.0))
        off = ratio(batched, rps.get((protocol, "mlp_nobatch", 1, c), 0.0))
        lines.append(f"  {protocol} 1-row: batched / null model {null:.2f}x (>= 0.9), batched / batching off {off:.2f}x (>= 2)")
    rows32 = rps.get(("v2-binary", "mlp", 32, c), 0.0) * 32
    if rows32:
        lines.append(f"  v2-binary 32-row: {rows32:,.0f} rows/s = {ratio(rows32, limit):.2f}x the in-process limit (>= 0.7)")
    return lines


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
