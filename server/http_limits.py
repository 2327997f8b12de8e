"""A request-head timeout and size limit for uvicorn's httptools protocol.

uvicorn has neither: a client may trickle a request head one byte at a time forever
(slow-loris), open a connection and send nothing, or send megabytes of headers, each
holding a connection and its buffers. ``with_head_limits(protocol_class)`` returns a
subclass that closes a connection whose head is not complete ``head_timeout_s`` after the
connection opened or the request's first byte (408), and answers 431 to a head larger
than ``max_head_bytes``. Idle keep-alive connections stay uvicorn's (``timeout_keep_alive``).

The router keeps its own copy (router/http_limits.py): neither package imports the other.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

DEFAULT_HEAD_TIMEOUT_S = 10.0
DEFAULT_MAX_HEAD_BYTES = 64 * 1024


def _response(status: int, reason: str, message: str) -> bytes:
    body = b'{"error":"' + message.encode() + b'"}'
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


class HeadLimits(HttpToolsProtocol):
    """The limits, layered over an ``HttpToolsProtocol`` subclass by ``with_head_limits``.

    One timer per connection, not one per request: a request's first byte records when its
    head started, and arms the timer only when none is armed. When the timer fires it
    answers 408 if the head pending now started ``head_timeout_s`` ago, re-arms for the
    rest of the time if a later head is pending, and otherwise lapses. A keep-alive
    connection thus costs a clock read per request instead of arming and cancelling a
    timer (about 3% of the server's time per one-row request, py-spy).
    """

    head_timeout_s: float = DEFAULT_HEAD_TIMEOUT_S
    max_head_bytes: int = DEFAULT_MAX_HEAD_BYTES

    def connection_made(self, transport: Any) -> None:
        self._head_pending = True
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._head_started = self.loop.time()
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timer_fired)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_pending = True
        self._head_bytes = 0
        self._head_started = self.loop.time()
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timer_fired)

    def on_headers_complete(self) -> None:
        self._head_pending = False  # an armed timer finds nothing due and lapses
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Idle until the next request's first byte: uvicorn's keep-alive timeout applies.
        self._head_pending = False

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._head_pending and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._reject(431, "Request Header Fields Too Large", f"request head larger than {self.max_head_bytes} bytes")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def _head_timer_fired(self) -> None:
        self._head_timer = None
        if not self._head_pending or self.transport.is_closing():
            return
        left = self._head_started + self.head_timeout_s - self.loop.time()
        if left > 0:  # the head of a later request: its own time is not up yet
            self._head_timer = self.loop.call_later(left, self._head_timer_fired)
            return
        self._reject(408, "Request Timeout", f"request head not received within {self.head_timeout_s:g} s")

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _reject(self, status: int, reason: str, message: str) -> None:
        self._disarm_head_timer()
        self.transport.write(_response(status, reason, message))
        self.transport.close()


def with_head_limits(
    protocol_class: type[HttpToolsProtocol],
    head_timeout_s: float = DEFAULT_HEAD_TIMEOUT_S,
    max_head_bytes: int = DEFAULT_MAX_HEAD_BYTES,
) -> type[HttpToolsProtocol]:
    """``protocol_class`` with the head limits (it must be uvicorn's httptools protocol)."""
    if not issubclass(protocol_class, HttpToolsProtocol):
        raise TypeError(f"head limits need uvicorn's httptools protocol, got {protocol_class.__name__}")
    return type(
        f"HeadLimited{protocol_class.__name__}",
        (HeadLimits, protocol_class),
        {"head_timeout_s": head_timeout_s, "max_head_bytes": max_head_bytes},
    )
