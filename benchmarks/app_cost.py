"""CPU per request of the scoring server's ASGI app alone, in process, without HTTP.

    python benchmarks/app_cost.py [--requests 20000] [--rounds 3] [--concurrency 64] [--no-null]
                                  [--model tiny|identity]

Builds the ``tiny`` model (4 values per request; ``--model identity``: the null model on
256 values, the shape of a one-row ``mlp`` request without its compute), starts
``server.app.build_app`` through its lifespan, and drives it with ``--concurrency``
concurrent 1-row v2 JSON requests through a fake ``receive`` / ``send`` (no sockets, no
uvicorn); then does the same with the null reference of ``benchmarks/peers/null_app.py`` (a
bare Starlette app that reads the body and answers a fixed JSON). Prints process CPU
microseconds per request for each, best and all rounds. CPU time, not wall clock, so that
it is steadier on a shared machine; compare two trees by running it in each, alternating.
Bounded by --requests x --rounds.

Instructions per request, which this machine's noise does not move (valgrind from Debian's
packages; each run makes 2 x --requests requests, a warm-up and the measured ones):

    ir() { valgrind --tool=callgrind --callgrind-out-file=/dev/null \
             python benchmarks/app_cost.py --no-null --rounds 1 --requests $1 2>&1 |
           awk '/Collected/ {print $4}'; }
    echo $(( ($(ir 1200) - $(ir 200)) / 2000 ))
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.peers import null_app  # noqa: E402
from scoring import model_zoo  # noqa: E402
from server.app import build_app  # noqa: E402
from server.config import ServerConfig  # noqa: E402


def _body(model: str) -> bytes:
    """One 1-row v2 JSON request for ``model``; identity's 256 values are written with four
    decimals, as http_bench.py writes the ``mlp`` request."""
    if model == "tiny":
        return b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}'
    values = ",".join(f"{v:.4f}" for v in np.random.default_rng(0).random(256))
    return b'{"inputs":[{"name":"input","shape":[1,256],"datatype":"FP32","data":[%s]}]}' % values.encode()


def _headers(body: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"host", b"127.0.0.1:8001"), (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode())]  # fmt: skip


def _null_reference() -> Any:
    """The very app ``benchmarks/peers/null_app.py`` serves under uvicorn."""
    namespace: dict[str, Any] = {}
    exec(null_app.APP, namespace)  # noqa: S102 -- our own source text
    return namespace["app"]


async def cpu_per_request(
    app: Any, path: str, state: dict[str, Any], body: bytes, requests: int, concurrency: int
) -> float:
    """Process CPU microseconds per request over ``requests`` requests (after a warm-up)."""
    done = 0
    headers = _headers(body)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and message["status"] != 200:
            raise SystemExit(f"{path}: status {message['status']}")

    async def client() -> None:
        nonlocal done
        while done < requests:
            scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                     "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
                     "root_path": "", "headers": headers, "client": ("127.0.0.1", 5555),
                     "server": ("127.0.0.1", 8001), "state": dict(state)}  # fmt: skip
            await app(scope, receive, send)
            done += 1

    await asyncio.gather(*(client() for _ in range(concurrency)))  # warm-up
    done = 0
    cpu = time.process_time()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return (time.process_time() - cpu) / done * 1e6


async def measure(args: argparse.Namespace) -> None:
    body = _body(args.model)
    with tempfile.TemporaryDirectory(prefix="infergate-app-cost-") as tmp:
        model_zoo.write(Path(tmp), [args.model])
        app = build_app(ServerConfig(model_repository=Path(tmp), log_level="warning"))
        router = app.app  # type: ignore[attr-defined]
        null_reference = _null_reference()
        async with router.lifespan_context(router) as state:
            ours: list[float] = []
            null: list[float] = []
            for _ in range(args.rounds):
                path = f"/v2/models/{args.model}/infer"
                ours.append(await cpu_per_request(app, path, state, body, args.requests, args.concurrency))
                if not args.no_null:
                    null.append(await cpu_per_request(null_reference, "/infer", {}, body, args.requests, args.concurrency))
    print(f"{args.concurrency} concurrent 1-row {args.model} v2 JSON requests, {args.requests} per round, process CPU per request:")
    print(f"  infergate app:         best {min(ours):6.1f} us   rounds {', '.join(f'{v:.1f}' for v in ours)}")
    if null:
        print(f"  bare Starlette (null): best {min(null):6.1f} us   rounds {', '.join(f'{v:.1f}' for v in null)}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--no-null", action="store_true", help="measure infergate's app only")
    parser.add_argument("--model", choices=("tiny", "identity"), default="tiny")
    args = parser.parse_args(argv)
    uvloop.run(measure(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
