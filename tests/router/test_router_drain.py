"""router/drain.py through a real RouterServer: once draining, every answer says
``Connection: close`` and the router closes the connection after it, cleanly (no reset),
including for a request sent on a keep-alive connection at the moment the drain starts."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import select
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from router_testkit import endpoint, key_header, router, run, until, upstreams, version

from router.__main__ import main
from router.drain import (
    accept_queue_length,
    attach_socket_filter,
    drain_accept_queue,
    handshakes_in_progress,
    refuse_new_connections,
)

REQUEST = (
    "POST /api/v1/service/svc/{path} HTTP/1.1\r\nHost: router\r\nAuthorization: {auth}\r\n"
    "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
)


@contextlib.asynccontextmanager
async def connection(
    port: int, sock: socket.socket | None = None
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    if sock is not None:
        reader, writer = await asyncio.open_connection(sock=sock)
    else:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 10)
    return int(status_line.split()[1]), headers, body


def test_keep_alive_request_sent_as_the_drain_starts_gets_a_whole_answer_then_a_clean_close(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with upstreams("a") as (a,), router(tmp_path, [endpoint("svc", [version("va", a, default=True)])]) as server:
            request = REQUEST.format(path="score", auth=key_header(server, "svc")["Authorization"]).encode()
            async with connection(server.port) as (reader, writer):
                writer.write(request)
                status, headers, _ = await read_response(reader)
                assert status == 200 and "connection" not in headers  # kept alive
                # The next request leaves in the same tick the drain starts: the router has
                # not read it yet, so its connection is idle and must not be closed under it.
                writer.write(request)
                server.start_drain()
                status, headers, body = await read_response(reader)
                assert status == 200 and b'"replica":"a"' in body
                assert headers["connection"] == "close"
                assert await asyncio.wait_for(reader.read(), 10) == b""  # EOF, not ECONNRESET
            assert a.hits == 2

    run(scenario())


def test_request_in_flight_when_the_drain_starts_is_answered_with_connection_close(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with upstreams("a") as (a,), router(tmp_path, [endpoint("svc", [version("va", a, default=True)])]) as server:
            auth = key_header(server, "svc")["Authorization"]
            async with connection(server.port) as (reader, writer):
                writer.write(REQUEST.format(path="slow", auth=auth).encode())
                await until(lambda: a.inflight == 1)
                server.start_drain()
                assert server.draining
                a.release.set()
                status, headers, _ = await read_response(reader)
                assert status == 200 and headers["connection"] == "close"
                assert await asyncio.wait_for(reader.read(), 10) == b""
            # A new connection during the drain is still served, and closed after its answer.
            async with connection(server.port) as (reader, writer):
                writer.write(REQUEST.format(path="score", auth=auth).encode())
                status, headers, _ = await read_response(reader)
                assert status == 200 and headers["connection"] == "close"
                assert await asyncio.wait_for(reader.read(), 10) == b""

    run(scenario())


@pytest.mark.parametrize("value", ["-1", "601", "nan"])
def test_drain_delay_out_of_range_exits_2_naming_the_flag(tmp_path: Path, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "router.yaml"
    config.write_text("endpoints: []\n")
    assert main(["--config", str(config), "--drain-delay-s", value]) == 2
    assert f"--drain-delay-s: must be between 0 and 600, got {value}" in capsys.readouterr().err


def test_stop_after_the_drain_resets_neither_queued_nor_fresh_connections(tmp_path: Path) -> None:
    """Connections the kernel queued but the loop had not accepted, and one accepted whose
    request had not arrived, when the ports close: every one gets its whole answer."""

    async def scenario() -> None:
        async with upstreams("a") as (a,), router(tmp_path, [endpoint("svc", [version("va", a, default=True)])]) as server:
            request = REQUEST.format(path="score", auth=key_header(server, "svc")["Authorization"]).encode()
            server.start_drain()
            async with connection(server.port) as (fresh_reader, fresh_writer):
                proxy = server._servers[0]
                await until(lambda: len(proxy.server_state.connections) == 1)
                # Blocking connects from the loop's own thread: the kernel completes them
                # and queues them; the loop cannot accept them until we await.
                queued = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(3)]
                try:
                    for sock in queued:
                        sock.sendall(request)
                    await server.stop_after_drain()
                    await until(lambda: not proxy.servers[0].is_serving())
                    fresh_writer.write(request)  # after uvicorn's shutdown began
                    status, headers, _ = await read_response(fresh_reader)
                    assert status == 200 and headers["connection"] == "close"
                    assert await asyncio.wait_for(fresh_reader.read(), 10) == b""
                    for sock in queued:
                        sock.setblocking(False)
                        async with connection(0, sock) as (reader, _):
                            status, headers, _ = await read_response(reader)
                            assert status == 200 and headers["connection"] == "close"
                            assert await asyncio.wait_for(reader.read(), 10) == b""
                finally:
                    for sock in queued:
                        sock.close()
            assert a.hits == 4

    run(scenario())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="socket filters and TCP_INFO are Linux's")
def test_refused_listener_keeps_its_queue_and_takes_no_new_connection() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        address = listener.getsockname()
        queued = [socket.create_connection(address, timeout=10) for _ in range(2)]
        late = socket.socket()
        try:
            assert accept_queue_length(listener) == 2
            assert refuse_new_connections(listener)
            late.setblocking(False)
            assert late.connect_ex(address) == errno.EINPROGRESS
            # Its SYN is dropped: the handshake never completes (bounded wait, not a sleep).
            _, writable, _ = select.select([], [late], [], 0.2)
            assert writable == [] and accept_queue_length(listener) == 2
            for sock in queued:  # the queued ones are still whole connections
                peer, _ = listener.accept()
                with peer:
                    sock.sendall(b"ping")
                    assert peer.recv(4) == b"ping"
            assert accept_queue_length(listener) == 0
        finally:
            late.close()
            for sock in queued:
                sock.close()


# A test-only filter that lets SYNs through and drops every other segment: the client gets
# its SYN-ACK (so it is connected and may send) while the listener never sees the last ACK.
# It freezes a connection in SYN_RECV, the state a handshake is in for one round trip when
# the drain's own filter goes on.
_ONLY_SYN = ((0x30, 0, 0, 13), (0x45, 0, 1, 0x02), (0x06, 0, 0, 0xFFFFFFFF), (0x06, 0, 0, 0))


def _needs_sock_diag(listener: socket.socket) -> None:
    # The drain falls back to the accept queue alone where the kernel's sock_diag cannot be
    # asked (not Linux, or a sandbox without netlink): nothing of this test applies there.
    if handshakes_in_progress(listener) is None:
        pytest.skip("sock_diag (netlink) is not available here")


@contextlib.contextmanager
def half_open_connection(listener: socket.socket) -> Iterator[socket.socket]:
    """A client connected to ``listener`` whose handshake the listener has not completed."""
    _needs_sock_diag(listener)
    attach_socket_filter(listener, _ONLY_SYN)
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        client.setblocking(False)
        assert client.connect_ex(listener.getsockname()) == errno.EINPROGRESS
        _, writable, _ = select.select([], [client], [], 10)
        assert writable == [client] and client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        assert accept_queue_length(listener) == 0 and handshakes_in_progress(listener) == 1
        yield client
    finally:
        client.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="socket filters and sock_diag are Linux's")
def test_drain_waits_for_a_handshake_under_way_and_the_loop_accepts_it() -> None:
    """A client whose SYN the listener took just before the filter went on has its request
    answered: the filter lets its handshake complete, and the drain waits for that (the
    listener closing before would reset it)."""

    async def scenario() -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.setblocking(False)
        served: list[bytes] = []

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            served.append(await reader.readexactly(4))
            writer.write(b"pong")
            writer.close()

        server = await asyncio.start_server(answer, sock=listener)
        try:
            with half_open_connection(listener) as client:
                client.send(b"ping")  # the client believes it is connected
                await drain_accept_queue([listener], timeout_s=30)
                assert handshakes_in_progress(listener) == 0 and accept_queue_length(listener) == 0
                server.close()  # the listening socket closes: nothing left to reset
                reply = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(client, 4), 10)
                assert reply == b"pong" and served == [b"ping"]
        finally:
            server.close()
            await server.wait_closed()

    run(scenario())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="socket filters and sock_diag are Linux's")
def test_handshakes_in_progress_counts_only_its_own_port() -> None:
    with contextlib.ExitStack() as stack:
        listeners = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(2)]
        for listener in listeners:
            listener.bind(("127.0.0.1", 0))
            listener.listen(16)
        _needs_sock_diag(listeners[0])
        assert handshakes_in_progress(listeners[0]) == 0
        with half_open_connection(listeners[0]):
            assert handshakes_in_progress(listeners[0]) == 1
            assert handshakes_in_progress(listeners[1]) == 0
