"""The router's drain phase: after SIGTERM it keeps serving for a while, but every answer
carries ``Connection: close``, so clients leave their keep-alive connections once their
request is answered instead of having an idle one closed under them as they send on it
(HTTP/1.1 gives a server no clean way to refuse a request on a connection it closes).

``with_drain`` wraps uvicorn's httptools protocol class like ``http_limits.with_head_limits``;
the cost while not draining is one attribute read per request head.

When the drain delay ends, three more races would still reset a request, and all are closed
here:

- a connection still in the kernel's accept queue when the listening socket closes is reset:
  ``refuse_new_connections`` makes the kernel drop new SYNs first (those clients retry their
  SYN and are refused cleanly, or reach the next router on the port), then the loop accepts
  what is queued;
- a connection whose handshake is under way (SYN_RECV: the client got the SYN-ACK, so it
  believes it is connected and sends its request) when the socket closes is forgotten, and
  the client's next segment is answered with a reset. The filter lets the handshake's last
  ACK through (it drops SYN segments only), and ``drain_accept_queue`` waits until no
  handshake is in progress (``handshakes_in_progress``, sock_diag) before the queue is
  deemed empty. An earlier filter dropped every segment: a SYN that arrived just before it
  was attached left its connection half-open until the close reset it (60 router restarts
  under load reset one request, in the one restart with a SYN_RECV connection at the close);
- a connection accepted but whose request has not been read yet would be closed by uvicorn's
  shutdown (a drained protocol gives it ``FRESH_GRACE_S`` to send its request, answered with
  ``Connection: close``).
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
# Classic BPF run on each segment reaching the listening socket, which sees it from the TCP
# header on (byte 13: the flags). Only a SYN, a new connection attempt, is dropped; the last
# ACK of a handshake already under way, and any data after it, must get through.
_DROP_SYN_PROGRAM = (
    (0x30, 0, 0, 13),  # ldb [13]
    (0x45, 0, 1, 0x02),  # jset #SYN: next, else skip one
    (0x06, 0, 0, 0),  # ret #0: drop
    (0x06, 0, 0, 0xFFFFFFFF),  # ret #-1: keep the whole segment
)
_TCPI_UNACKED = 24  # offset of tcpi_unacked: the accept-queue length of a listening socket

# sock_diag (linux/inet_diag.h): the sockets of one family in the states asked for.
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST_DUMP = 0x1 | 0x300
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_TCPF_SYN_RECV = 1 << 3
_NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, seq, pid
_DIAG_SPORT_OFFSET = _NLMSG_HEADER.size + 4  # inet_diag_msg: family, state, timer, retrans, then id.sport


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


def attach_socket_filter(sock: socket.socket, program: tuple[tuple[int, int, int, int], ...]) -> None:
    """Attach a classic BPF ``program`` ((code, jt, jf, k) per instruction) to ``sock``
    (Linux's SO_ATTACH_FILTER; the kernel copies it). Raises OSError where refused."""
    code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *insn) for insn in program))
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, struct.pack("HP", len(program), ctypes.addressof(code)))


def refuse_new_connections(sock: socket.socket) -> bool:
    """Make the kernel drop new connection attempts on the listening ``sock`` (Linux: a socket
    filter dropping SYN segments) while the connections already queued, and those whose
    handshake is under way, stay acceptable; False where that is not available (closing the
    socket then resets what is queued)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        attach_socket_filter(sock, _DROP_SYN_PROGRAM)
    except OSError:
        return False
    return True


def accept_queue_length(sock: socket.socket) -> int:
    """Connections the kernel holds for ``sock`` that the loop has not accepted yet (Linux)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCPI_UNACKED + 4)
    return int(struct.unpack_from("I", info, _TCPI_UNACKED)[0])


def handshakes_in_progress(sock: socket.socket) -> int | None:
    """Connections to the listening ``sock``'s port whose handshake is not complete
    (SYN_RECV), from the kernel's sock_diag (Linux); None where it cannot be asked.

    Matched by port only: another listener on the same port and another address can only
    make the count larger, and so the caller's bounded wait longer.
    """
    port = sock.getsockname()[1]
    request = struct.pack("=BBBBI", sock.family, socket.IPPROTO_TCP, 0, 0, _TCPF_SYN_RECV) + bytes(48)
    header = _NLMSG_HEADER.pack(_NLMSG_HEADER.size + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST_DUMP, 1, 0)
    count = 0
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as diag:
            diag.settimeout(1.0)
            diag.sendall(header + request)
            while True:
                data = diag.recv(65536)
                offset = 0
                while offset + _NLMSG_HEADER.size <= len(data):
                    length, kind = struct.unpack_from("=IH", data, offset)
                    if kind == _NLMSG_DONE:
                        return count
                    if kind == _NLMSG_ERROR or length < _NLMSG_HEADER.size:
                        return None
                    count += struct.unpack_from("!H", data, offset + _DIAG_SPORT_OFFSET)[0] == port
                    offset += (length + 3) & ~3
                if not data:
                    return None
    except (OSError, AttributeError, struct.error):  # no AF_NETLINK (not Linux), no sock_diag
        return None


def _queues_empty(sockets: list[socket.socket]) -> bool:
    # Handshakes first: with SYNs dropped no new one starts, and one that completes moves to
    # the accept queue, which is read after it.
    for sock in sockets:
        if handshakes_in_progress(sock):
            return False
    return not any(accept_queue_length(sock) for sock in sockets)


async def drain_accept_queue(sockets: list[socket.socket], timeout_s: float = BACKLOG_WAIT_S) -> None:
    """Stop new connections on ``sockets`` and wait (at most ``timeout_s``) until every
    handshake under way has completed and the loop has accepted every queued connection, so
    closing the sockets resets nothing."""
    refusing = [sock for sock in sockets if refuse_new_connections(sock)]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while refusing and loop.time() < deadline:
        # The accept queues are one getsockopt each; sock_diag (a kernel query of a few
        # milliseconds, run on the loop only here, at stop) once they look empty.
        if not any(accept_queue_length(sock) for sock in refusing) and _queues_empty(refusing):
            break
        await asyncio.sleep(0.005)
    for _ in range(3):  # accepted connections get their protocol's connection_made
        await asyncio.sleep(0)
