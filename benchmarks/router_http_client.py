"""Which HTTP client should the router proxy with? httpx vs aiohttp on loopback.

Starts a tiny upstream (uvicorn + httptools, a 200-byte JSON answer to a 1 KiB POST) in a
child process, then drives it from this process with each client: sequential latency (p50,
p99) and throughput at 32 concurrent requests, on one pooled keep-alive client each, as the
router uses it. Run: ``.venv/bin/python benchmarks/router_http_client.py``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import socket
import statistics
import time

BODY = b'{"data": [' + b"0.5, " * 200 + b"0.5]}"
ANSWER = b'{"result": [' + b"0.25, " * 30 + b"0.25]}"


async def upstream_app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(ANSWER)).encode())]})
    await send({"type": "http.response.body", "body": ANSWER})


def serve(sock: socket.socket) -> None:
    import uvicorn

    config = uvicorn.Config(upstream_app, log_level="warning", http="httptools", loop="uvloop",
                            access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


async def drive(name: str, url: str, n_seq: int, n_conc: int, conc: int) -> None:
    if name == "httpx":
        import httpx

        client = httpx.AsyncClient(limits=httpx.Limits(max_connections=conc, max_keepalive_connections=conc))

        async def one() -> None:
            r = await client.post(url, content=BODY)
            r.read()
            assert r.status_code == 200
    else:
        import aiohttp

        client = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conc))

        async def one() -> None:
            async with client.post(url, data=BODY) as r:
                await r.read()
                assert r.status == 200

    for _ in range(200):  # warm the pool
        await one()
    lat = []
    for _ in range(n_seq):
        t = time.perf_counter()
        await one()
        lat.append(time.perf_counter() - t)
    lat.sort()
    sem = asyncio.Semaphore(conc)

    async def bounded() -> None:
        async with sem:
            await one()

    t = time.perf_counter()
    await asyncio.gather(*(bounded() for _ in range(n_conc)))
    rps = n_conc / (time.perf_counter() - t)
    await client.aclose() if name == "httpx" else await client.close()  # type: ignore[union-attr]
    print(f"{name:8s} p50 {statistics.median(lat) * 1e6:7.0f} us  p99 {lat[int(len(lat) * 0.99)] * 1e6:7.0f} us  "
          f"{rps:8.0f} req/s at {conc} concurrent")


def main() -> None:
    import uvloop

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    port = sock.getsockname()[1]
    proc = multiprocessing.get_context("spawn").Process(target=serve, args=(sock,), daemon=True)
    proc.start()
    url = f"http://127.0.0.1:{port}/score"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    try:
        for name in ("httpx", "aiohttp", "httpx", "aiohttp"):
            uvloop.run(drive(name, url, 2000, 5000, 32))
    finally:
        proc.terminate()
        proc.join()


if __name__ == "__main__":
    main()
