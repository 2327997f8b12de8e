"""The router's drain phase: after SIGTERM it keeps serving for a while, but every answer
carries ``Connection: close``, so clients leave their keep-alive connections once their
request is answered instead of having an idle one closed under them as they send on it
(HTTP/1.1 gives a server no clean way to refuse a request on a connection it closes).

``with_drain`` wraps uvicorn's httptools protocol class like ``http_limits.with_head_limits``;
the cost while not draining is one attribute read per request head.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


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
