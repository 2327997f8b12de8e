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
            _fire_after(protocol, 5.0)
            assert transport.closed and b"".join(transport.writes).startswith(b"HTTP/1.1 408 ")
            protocol.connection_lost(None)

    asyncio.run(scenario())


def _fire_after(protocol: Any, seconds: float) -> None:
    """Fire the armed head timer as if ``seconds`` had passed since the pending head began."""
    assert protocol._head_timer is not None
    protocol._head_timer.cancel()
    protocol._head_started -= seconds
    protocol._head_timer_fired()


async def _served(protocol: Any, transport: RecordingTransport, count: int) -> None:
    for _ in range(10):  # let the ASGI cycle run
        await asyncio.sleep(0)
    assert b"".join(transport.writes).count(b"HTTP/1.1 200 ") == count


def test_a_complete_head_is_served_and_the_timer_then_lapses() -> None:
    async def scenario() -> None:
        protocol, transport = _protocol()
        protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await _served(protocol, transport, 1)
        _fire_after(protocol, 5.0)  # idle keep-alive: uvicorn's timeout, not ours
        assert not transport.closed and protocol._head_timer is None
        protocol.connection_lost(None)

    asyncio.run(scenario())


def test_one_timer_serves_a_keep_alive_connection_and_each_head_gets_its_full_time() -> None:
    async def scenario() -> None:
        protocol, transport = _protocol()
        timer = protocol._head_timer
        for n in range(1, 4):
            protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await _served(protocol, transport, n)
        assert protocol._head_timer is timer  # armed once, not per request
        protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n")  # a head begins now
        _fire_after(protocol, 4.0)  # the timer was due, this head has 1 s left: re-armed
        assert not transport.closed and protocol._head_timer is not None
        _fire_after(protocol, 1.0)
        assert transport.closed and b"".join(transport.writes).endswith(b"within 5 s\"}")
        assert b"HTTP/1.1 408 " in b"".join(transport.writes)
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
