"""server/http_limits.py: request-head timeout (408) and head size limit (431), driven through
a recording transport (no sockets); the timer is fired by hand, no sleeps."""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.server import ServerState

from server.http_limits import with_head_limits
from server.http_protocol import CoalescingHttpToolsProtocol


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8001), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def set_write_buffer_limits(self, *args: Any, **kwargs: Any) -> None: ...


async def _app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def _protocol(max_head_bytes: int = 1024) -> tuple[Any, RecordingTransport]:
    config = uvicorn.Config(_app, lifespan="off", log_config=None)
    config.load()
    cls = with_head_limits(CoalescingHttpToolsProtocol, head_timeout_s=5.0, max_head_bytes=max_head_bytes)
    protocol = cls(config=config, server_state=ServerState(), app_state={}, _loop=asyncio.get_running_loop())
    transport = RecordingTransport()
    protocol.connection_made(transport)
    return protocol, transport


def test_idle_and_partial_heads_time_out_with_408() -> None:
    async def scenario() -> None:
        for data in (b"", b"GET / HTTP/1.1\r\nHost: x\r\n"):
            protocol, transport = _protocol()
            assert protocol._head_timer is not None  # armed at connection_made
            if data:
                protocol.data_received(data)
            protocol._head_timer.cancel()
            protocol._head_timed_out()
            assert transport.closed and b"".join(transport.writes).startswith(b"HTTP/1.1 408 ")
            protocol.connection_lost(None)

    asyncio.run(scenario())


def test_complete_head_disarms_the_timer_and_is_served() -> None:
    async def scenario() -> None:
        protocol, transport = _protocol()
        protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert protocol._head_timer is None
        for _ in range(10):  # let the ASGI cycle run
            await asyncio.sleep(0)
        assert b"".join(transport.writes).startswith(b"HTTP/1.1 200 ")
        assert protocol._head_timer is None  # idle keep-alive: uvicorn's timeout, not ours
        protocol.connection_lost(None)

    asyncio.run(scenario())


def test_oversized_head_is_431() -> None:
    async def scenario() -> None:
        protocol, transport = _protocol(max_head_bytes=1024)
        protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n")
        for _ in range(20):
            if transport.closed:
                break
            protocol.data_received(b"X-Big: " + b"a" * 100 + b"\r\n")
        assert transport.closed and b"".join(transport.writes).startswith(b"HTTP/1.1 431 ")
        protocol.connection_lost(None)

    asyncio.run(scenario())
