"""server/http_protocol.py: response head and body leave in one write, nothing is held."""

from __future__ import annotations

from typing import Any

from server.http_protocol import CoalescingTransport


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


HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


def test_head_and_body_go_out_in_one_write() -> None:
    real = RecordingTransport()
    t = CoalescingTransport(real)  # type: ignore[arg-type]
    t.write(HEAD)
    assert real.writes == []
    t.write(b"{}")
    assert real.writes == [HEAD + b"{}"]


def test_head_without_body_is_flushed_on_completion_or_close() -> None:
    real = RecordingTransport()
    t = CoalescingTransport(real)  # type: ignore[arg-type]
    t.write(HEAD)
    t.flush()  # the protocol calls this when the response completes (HEAD requests)
    assert real.writes == [HEAD]
    assert t.is_closing() is False
    t.write(HEAD)
    t.close()
    assert real.writes == [HEAD, HEAD] and real.closed
    assert t.is_closing() is True  # the real transport's answer


def test_100_continue_and_large_bodies_are_not_delayed_or_copied() -> None:
    real = RecordingTransport()
    t = CoalescingTransport(real)  # type: ignore[arg-type]
    t.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert real.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    big = b"x" * (1 << 20)
    t.write(HEAD)
    t.write(big)
    assert real.writes[1:] == [HEAD, big]
    assert t.is_closing() is False  # everything else is the real transport's
