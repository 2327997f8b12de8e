"""uvicorn's httptools protocol, writing each response head together with the first body write.

uvicorn writes the status line and headers on ``http.response.start`` and the body on
``http.response.body``: two ``send()`` syscalls per response, and on loopback each one runs
the receiver's TCP path too. Profiled on the proxy path, the head's write alone was a fifth
of the router's CPU per request; holding the head until the body's first write halves the
writes.

The server has the same trick (``server/http_protocol.py``); this is the router's own small
version because the router never imports ``server`` (and ``scoring``, the shared package, has
no HTTP). It also tracks when a head is due instead of sniffing every write: only the first
write after a response began is held, so a streamed body chunk is never delayed. A held
head is flushed by the next write, when the response completes, and on close; ``100
Continue`` is written at once (the client waits for it).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_COALESCE_MAX = 64 * 1024  # larger bodies: two writes rather than one more copy
_CONTINUE = b"HTTP/1.1 100 "


class CoalescingTransport:
    """A transport proxy that delays a response head until the next write."""

    __slots__ = ("_transport", "_head", "head_due")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._head: bytes | None = None
        self.head_due = True  # the next write (not 100 Continue) is a response head

    def write(self, data: bytes | bytearray | memoryview) -> None:
        head = self._head
        if head is not None:
            self._head = None
            if len(data) <= _COALESCE_MAX:
                self._transport.write(head + bytes(data))
            else:
                self._transport.write(head)
                self._transport.write(data)
        elif self.head_due and not bytes(data[:13]) == _CONTINUE:
            self.head_due = False
            self._head = bytes(data)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        # Asked on every response and every read: spelled out, because the __getattr__
        # fallback below first fails the normal lookup (1.4 us against 0.3 us here).
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol on a CoalescingTransport (``uvicorn.Config(http=...)``)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport))  # type: ignore[arg-type]

    def on_response_complete(self) -> None:
        transport: CoalescingTransport = self.transport  # type: ignore[assignment]
        transport.flush()
        transport.head_due = True  # responses on a connection are written one after another
        super().on_response_complete()
