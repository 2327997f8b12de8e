"""Which HTTP client should the router proxy with, and what does one cost per request?

Starts a tiny upstream (uvicorn + httptools, a 200-byte JSON answer to a 1 KiB POST) in a
child process, then drives it from this process with each client: sequential latency (p50,
p99) and this process's CPU per request, then throughput and CPU per request at 32
concurrent requests, on one pooled keep-alive client each, as the router uses it.

    .venv/bin/python benchmarks/router_http_client.py [--rounds 2] [CLIENT ...]

Clients: aiohttp (the router's), httpx, and aiosonic, curl_cffi and pyreqwest where they are
installed (they are not project dependencies; ``pip install`` them into a scratch venv with
this project to compare), and ``raw``: a bare httptools protocol with no client features,
the floor a library could approach. CPU time is the whole process's (pyreqwest computes in
threads of its own runtime, which that counts too).
"""

from __future__ import annotations

import asyncio
import importlib.util
import multiprocessing
import socket
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

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


async def _client(name: str, url: str, conc: int) -> tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]:
    """(one request, close) for client ``name``, pooled and keep-alive as the router uses it."""
    if name == "httpx":
        import httpx

        hx = httpx.AsyncClient(limits=httpx.Limits(max_connections=conc, max_keepalive_connections=conc))

        async def one() -> None:
            r = await hx.post(url, content=BODY)
            r.read()
            assert r.status_code == 200

        return one, hx.aclose
    if name == "aiohttp":
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conc))

        async def one() -> None:
            async with session.post(url, data=BODY) as r:
                await r.read()
                assert r.status == 200

        return one, session.close
    if name == "aiosonic":
        import aiosonic  # type: ignore[import-not-found]

        sonic = aiosonic.HTTPClient()

        async def one() -> None:
            r = await sonic.post(url, data=BODY)
            await r.content()
            assert r.status_code == 200

        return one, sonic.aclose
    if name == "curl_cffi":
        from curl_cffi.requests import AsyncSession  # type: ignore[import-not-found]

        curl = AsyncSession(max_clients=conc)

        async def one() -> None:
            r = await curl.post(url, data=BODY)
            assert r.status_code == 200

        return one, curl.close
    if name == "pyreqwest":
        from pyreqwest.client import ClientBuilder  # type: ignore[import-not-found]

        rq = ClientBuilder().build()

        async def one() -> None:
            r = await rq.post(url).body_bytes(BODY).build().send()
            await r.bytes()
            assert r.status == 200

        async def close() -> None:
            await rq.close()

        return one, close
    return _raw_client(url)


def _raw_client(url: str) -> tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]:
    """The floor, not a client to use: keep-alive HTTP/1.1 on asyncio protocols with
    httptools' parser and no features at all (no timeouts, redirects, chunked requests,
    error handling), to show what the libraries above cost beyond the bytes."""
    import httptools

    host, port = url.split("//")[1].split("/")[0].split(":")
    path = "/" + url.split("//")[1].split("/", 1)[1]
    head = (f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-length: {len(BODY)}\r\n\r\n").encode()

    class Conn(asyncio.Protocol):
        def __init__(self) -> None:
            self.parser = httptools.HttpResponseParser(self)
            self.done: asyncio.Future[int] | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_message_complete(self) -> None:
            done, self.done = self.done, None
            if done is not None:
                done.set_result(self.parser.get_status_code())

    idle: list[Conn] = []

    async def one() -> None:
        loop = asyncio.get_running_loop()
        conn = idle.pop() if idle else (await loop.create_connection(Conn, host, int(port)))[1]
        conn.done = loop.create_future()
        conn.transport.write(head + BODY)  # type: ignore[attr-defined]
        assert await conn.done == 200
        idle.append(conn)

    async def close() -> None:
        for conn in idle:
            conn.transport.close()

    return one, close


async def drive(name: str, url: str, n_seq: int, n_conc: int, conc: int) -> None:
    one, close = await _client(name, url, conc)
    for _ in range(200):  # warm the pool
        await one()
    lat = []
    cpu = time.process_time()
    for _ in range(n_seq):
        t = time.perf_counter()
        await one()
        lat.append(time.perf_counter() - t)
    cpu_seq = (time.process_time() - cpu) / n_seq
    lat.sort()
    sem = asyncio.Semaphore(conc)

    async def bounded() -> None:
        async with sem:
            await one()

    t, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(bounded() for _ in range(n_conc)))
    rps = n_conc / (time.perf_counter() - t)
    cpu_conc = (time.process_time() - cpu) / n_conc
    await close()
    print(f"| {name} | {statistics.median(lat) * 1e6:.0f} | {lat[int(len(lat) * 0.99)] * 1e6:.0f} | "
          f"{cpu_seq * 1e6:.0f} | {rps:,.0f} | {cpu_conc * 1e6:.0f} |", flush=True)


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
    args = sys.argv[1:]
    rounds = 2
    if args[:1] == ["--rounds"]:
        rounds, args = int(args[1]), args[2:]
    optional = ("httpx", "aiosonic", "curl_cffi", "pyreqwest")
    names = args or ["aiohttp", *(n for n in optional if importlib.util.find_spec(n)), "raw"]
    print("| client | c=1 p50 us | c=1 p99 us | c=1 CPU us/req | c=32 req/s | c=32 CPU us/req |")
    print("|---|---:|---:|---:|---:|---:|")
    try:
        for _ in range(rounds):
            for name in names:
                uvloop.run(drive(name, url, 2000, 5000, 32))
    finally:
        proc.terminate()
        proc.join()


if __name__ == "__main__":
    main()
