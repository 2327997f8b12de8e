"""What the router costs: direct vs through ``infergate route`` vs through nginx, one run.

    python benchmarks/router_bench.py [--duration-s 3] [--rounds 2] [--nginx-workers 1]

One upstream (``infergate serve`` with the ``identity`` null model, so the upstream is as
fast as infergate gets) is loaded over loopback with wrk three ways, on the same request
(v2 JSON, 1 row):

- direct:  ``POST /v2/models/identity/infer`` on the upstream;
- router:  ``POST /api/v1/service/bench/v2/models/identity/infer`` through ``infergate
  route`` (an open endpoint: no key check, one version, keep-alive pool to the upstream);
- nginx:   the same URL through nginx ``proxy_pass`` to the same upstream (keep-alive
  upstream pool, ``worker_processes`` = --nginx-workers; 1 matches the router's one
  process). nginx comes from Debian's packages, installed with apt-get when missing.

Moderate load is concurrency 1 and 8 (closed loop); saturation is concurrency 64. Each
(target, concurrency) runs --duration-s, the targets interleaved, --rounds times; the table
keeps per cell the median over rounds. Added latency = proxy p50/p99 minus direct p50/p99.
Whole run: about 3 targets x 3 concurrencies x rounds x duration, plus start-up (~1 min).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from http_bench import ensure_wrk, lua_script, request_for, run_wrk, start_server  # noqa: E402

from scoring import model_zoo  # noqa: E402

ENDPOINT = "bench"
MODEL_PATH = "/v2/models/identity/infer"
CONCURRENCY_MODERATE = (1, 8)
CONCURRENCY_SATURATED = 64


def ensure_nginx() -> str:
    found = shutil.which("nginx") or (Path("/usr/sbin/nginx").exists() and "/usr/sbin/nginx")
    if found:
        return str(found)
    install = ["apt-get", "install", "-y", "-q", "nginx-light"]
    if subprocess.run(install, timeout=600).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], check=True, timeout=600)
        subprocess.run(install, check=True, timeout=600)
    found = shutil.which("nginx") or (Path("/usr/sbin/nginx").exists() and "/usr/sbin/nginx")
    if not found:
        raise SystemExit("nginx is not installed and apt-get could not install it")
    return str(found)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, deadline_s: float = 60.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status < 500:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"{url} did not answer:\n" + log.read_text()[-2000:])


def start_router(workdir: Path, upstream_port: int) -> tuple[subprocess.Popen[bytes], int]:
    config = {
        "endpoints": [
            {
                "name": ENDPOINT,
                "auth_enabled": False,
                "token_auth_enabled": False,
                "replica_max_concurrent_requests": 1024,
                "versions": [
                    {"name": "blue", "upstreams": [f"http://127.0.0.1:{upstream_port}"], "is_default": True}
                ],
            }
        ]
    }
    path = workdir / "router.json"
    path.write_text(json.dumps(config))
    port, admin = free_port(), free_port()
    log = workdir / "router.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "route", "--config", str(path), "--port", str(port),
             "--admin-port", str(admin), "--state-dir", str(workdir / "router-state"), "--log-level", "warning"],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    wait_http(f"http://127.0.0.1:{port}/healthz", proc, log)
    return proc, port


def start_nginx(nginx: str, workdir: Path, upstream_port: int, workers: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    prefix = workdir / "nginx"
    prefix.mkdir()
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"""daemon off;
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    upstream scoring {{
        server 127.0.0.1:{upstream_port};
        keepalive 256;
    }}
    server {{
        listen 127.0.0.1:{port};
        location /api/v1/service/{ENDPOINT}/ {{
            proxy_pass http://scoring/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering on;
        }}
        location = /healthz {{ return 200 "ok"; }}
    }}
}}
"""
    )
    log = prefix / "stdout.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([nginx, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
                                stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    wait_http(f"http://127.0.0.1:{port}/healthz", proc, log)
    return proc, port


def check(url: str, body: bytes, headers: dict[str, str]) -> None:
    req = urllib.request.Request(url, data=body, headers=headers)
    with urllib.request.urlopen(req, timeout=30) as r:
        if r.status != 200 or b'"outputs"' not in r.read():
            raise SystemExit(f"{url}: unexpected answer {r.status}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-s", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--nginx-workers", type=int, default=1)
    args = parser.parse_args(argv)
    wrk = ensure_wrk()
    nginx = ensure_nginx()
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="infergate-router-bench-") as tmp:
        workdir = Path(tmp)
        model_zoo.write(workdir / "models", ["identity"])
        try:
            upstream, up_port = start_server(workdir / "models", workdir / "server.log")
            procs.append(upstream)
            router, router_port = start_router(workdir, up_port)
            procs.append(router)
            nginx_proc, nginx_port = start_nginx(nginx, workdir, up_port, args.nginx_workers)
            procs.append(nginx_proc)
            _, body_file, headers = request_for("v2-json", "identity", 1, workdir)
            script = lua_script(body_file, headers, workdir)
            proxied = f"/api/v1/service/{ENDPOINT}{MODEL_PATH}"
            targets = {
                "direct": f"http://127.0.0.1:{up_port}{MODEL_PATH}",
                "router": f"http://127.0.0.1:{router_port}{proxied}",
                "nginx": f"http://127.0.0.1:{nginx_port}{proxied}",
            }
            for url in targets.values():
                check(url, body_file.read_bytes(), headers)
            concurrencies = (*CONCURRENCY_MODERATE, CONCURRENCY_SATURATED)
            results: dict[tuple[str, int], list[dict[str, float]]] = {}
            for name, url in targets.items():  # warm up pools and caches
                run_wrk(wrk, url, script, 8, 1)
            for _ in range(args.rounds):
                for c in concurrencies:
                    for name, url in targets.items():
                        results.setdefault((name, c), []).append(run_wrk(wrk, url, script, c, args.duration_s))
        finally:
            for proc in reversed(procs):
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()

    def med(name: str, c: int, key: str) -> float:
        return statistics.median(r[key] for r in results[(name, c)])

    print(f"\ncpus: {os.cpu_count()}; upstream: infergate serve, identity model, v2 JSON 1 row; "
          f"median of {args.rounds} interleaved rounds of {args.duration_s} s; nginx workers: {args.nginx_workers}\n")  # fmt: skip
    print("| target | concurrency | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for c in concurrencies:
        for name in targets:
            added = ("", "") if name == "direct" else (
                f"{med(name, c, 'p50') - med('direct', c, 'p50'):+.3f}",
                f"{med(name, c, 'p99') - med('direct', c, 'p99'):+.3f}",
            )  # fmt: skip
            errors = sum(r["errors"] for r in results[(name, c)])
            print(f"| {name} | {c} | {med(name, c, 'rps'):,.0f} | {med(name, c, 'p50'):.3f} | {med(name, c, 'p99'):.3f} "
                  f"| {added[0]} | {added[1]} | {errors:.0f} |")  # fmt: skip
    def verdict(added: float, target: float) -> str:
        if added < 0:  # the proxy cannot be faster than direct: the rounds disagree
            return "inconclusive: direct was slower, noise"
        return "met" if added <= target else "not met"

    sat = CONCURRENCY_SATURATED
    ratio = med("router", sat, "rps") / med("nginx", sat, "rps")
    print()
    for c in CONCURRENCY_MODERATE:
        a50 = med("router", c, "p50") - med("direct", c, "p50")
        a99 = med("router", c, "p99") - med("direct", c, "p99")
        print(f"router added latency at concurrency {c}: p50 {a50:+.3f} ms (target <= 0.3: "
              f"{verdict(a50, 0.3)}), p99 {a99:+.3f} ms (target <= 1.5: {verdict(a99, 1.5)})")  # fmt: skip
    print(f"saturated (c={sat}) throughput: router / nginx = {ratio:.2f} (target >= 0.5: "
          f"{'met' if ratio >= 0.5 else 'not met'}); router / direct = "
          f"{med('router', sat, 'rps') / med('direct', sat, 'rps'):.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
