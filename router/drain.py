"""The router's drain phase: after SIGTERM it keeps serving for a while, but every answer
carries ``Connection: close``, so clients leave their keep-alive connections once their
request is answered instead of having an idle one closed under them as they send on it
(HTTP/1.1 gives a server no clean way to refuse a request on a connection it closes).

``with_drain`` wraps uvicorn's httptools protocol class like ``http_limits.with_head_limits``;
the cost while not draining is one attribute read per request head.

When the drain delay ends, two more races would still reset a request, and both are closed
here: a connection still in the kernel's accept queue when the listening socket closes is
reset (``refuse_new_connections`` makes the kernel drop new SYNs first, so those clients retry
and are refused cleanly, then lets the loop accept what is queued), and a connection accepted
but whose request has not been read yet would be closed by uvicorn's shutdown (a drained
protocol gives it ``FRESH_GRACE_S`` to send its request, answered with ``Connection: close``).
"""

from __future__ import annotations

import asyncio
import ctypes
import socket
import struct
import sys

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

FRESH_GRACE_S = 1.0  # a connection accepted during the drain: time for its request to arrive
BACKLOG_WAIT_S = 1.0  # at most this long for the loop to accept what the kernel has queued

_SO_ATTACH_FILTER = 26
_DROP_ALL = ctypes.create_string_buffer(struct.pack("HBBI", 0x06, 0, 0, 0))  # BPF: ret #0
_TCPI_UNACKED = 24  # offset of tcpi_unacked: the accept-queue length of a listening socket


class DrainState:
    """Shared by the protocol class and ``RouterServer``: whether the router is draining."""

    def __init__(self) -> None:
        self.draining = False


class DrainingProtocol(HttpToolsProtocol):
    """Answers with ``Connection: close`` once ``drain_state.draining`` is set."""

    drain_state: DrainState

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self.drain_state.draining:
            # uvicorn writes ``connection: close`` and closes after the response.
            self.cycle.keep_alive = False

    def shutdown(self) -> None:
        if self.drain_state.draining and self.cycle is None and not self.transport.is_closing():
            # Accepted, but no request read yet: it is most likely on its way (the client
            # connected during the drain); closing now would reset it.
            self.loop.call_later(FRESH_GRACE_S, self._shutdown_after_grace)
            return
        super().shutdown()

    def _shutdown_after_grace(self) -> None:
        if not self.transport.is_closing():
            super().shutdown()

    def start_drain(self) -> None:
        """A request already in flight when the drain starts: its answer closes too. An idle
        connection is left alone: its client's next request gets ``Connection: close``."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.keep_alive = False


def with_drain(protocol_class: type[HttpToolsProtocol], state: DrainState) -> type[HttpToolsProtocol]:
    """``protocol_class`` answering ``Connection: close`` while ``state.draining``."""
    if not issubclass(protocol_class, HttpToolsProtocol):
        raise TypeError(f"the drain needs uvicorn's httptools protocol, got {protocol_class.__name__}")
    return type(f"Draining{protocol_class.__name__}", (DrainingProtocol, protocol_class), {"drain_state": state})


def refuse_new_connections(sock: socket.socket) -> bool:
    """Make the kernel drop new connection attempts on the listening ``sock`` (Linux: a
    drop-all socket filter) while the connections already queued stay acceptable; False where
    that is not available (closing the socket then resets what is queued)."""
    if not sys.platform.startswith("linux"):
        return False
    program = struct.pack("HP", 1, ctypes.addressof(_DROP_ALL))
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, program)
    except OSError:
        return False
    return True


def accept_queue_length(sock: socket.socket) -> int:
    """Connections the kernel holds for ``sock`` that the loop has not accepted yet (Linux)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCPI_UNACKED + 4)
    return int(struct.unpack_from("I", info, _TCPI_UNACKED)[0])


async def drain_accept_queue(sockets: list[socket.socket], timeout_s: float = BACKLOG_WAIT_S) -> None:
    """Stop new connections on ``sockets`` and wait (at most ``timeout_s``) until the loop has
    accepted every queued one, so closing the sockets resets nothing."""
    refusing = [sock for sock in sockets if refuse_new_connections(sock)]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while any(accept_queue_length(sock) for sock in refusing) and loop.time() < deadline:
        await asyncio.sleep(0.005)
    for _ in range(3):  # accepted connections get their protocol's connection_made
        await asyncio.sleep(0)
