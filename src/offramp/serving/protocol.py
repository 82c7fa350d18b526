"""uvicorn's HTTP/1.1 protocols with a header-read deadline and a cap on connections per client.

:func:`fastest_protocol` picks the C parser (httptools, from ``uvicorn[standard]``) when it is
installed, else the pure-Python one (h11); both get the same deadlines.

uvicorn closes idle kept-alive connections, but a client that opens a connection and sends its
request line and headers a byte at a time (a "slow-header" attack) holds the connection for as
long as it likes. Here every connection must complete a request's headers within
``header_timeout_s`` seconds of connecting, or of the previous response on a kept-alive
connection; otherwise it is closed. ``serve`` sets the value from its ``read_timeout_s`` setting
(the body has its own deadline, in :func:`offramp.serving.schemas.read_body`).

Each deadline bounds one connection, but a client can open many connections, each just inside
its deadline, and hold the server's sockets. So a client address may hold at most
``max_per_client`` open connections (``limits.max_connections_per_client``, per worker process);
one more is answered ``503`` in JSON (``too_many_connections``) and closed at once.
"""

from __future__ import annotations

import asyncio
import json
from typing import ClassVar, Protocol, cast

from uvicorn.protocols.http.h11_impl import H11Protocol

try:  # uvicorn[standard]: the C parser
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - httptools is a dependency; without it, h11 serves
    HttpToolsProtocol = H11Protocol  # type: ignore[misc,assignment]


def _closing_answer(status: str, kind: str, message: str, extra: str = "") -> bytes:
    """A whole JSON error response, written on the transport before the connection is closed."""
    body = json.dumps({"error": {"type": kind, "message": message}}).encode()
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\nconnection: close\r\n"
        f"{extra}content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _refusal(limit: int) -> bytes:
    message = f"this client already holds {limit} open connections; reuse them or close some"
    return _closing_answer("503 Service Unavailable", "too_many_connections", message, "retry-after: 1\r\n")


def _too_large(limit: int) -> bytes:
    message = f"the request line and headers are over {limit:,} bytes; send less in them"
    return _closing_answer("431 Request Header Fields Too Large", "headers_too_large", message)


class _CompletesResponses(Protocol):
    """What uvicorn's HTTP protocols have beyond asyncio's."""

    def on_response_complete(self) -> None: ...


class Deadlines(asyncio.Protocol):
    """The deadline and the connection cap, mixed into one of uvicorn's HTTP protocols."""

    header_timeout_s: ClassVar[float] = 10.0
    max_per_client: ClassVar[int] = 64
    # bytes a request's line and headers may take (h11 refuses more than 16 KiB by itself; the C
    # parser has no limit of its own)
    max_head_bytes: ClassVar[int] = 16 * 1024
    _open: ClassVar[dict[str, int]] = {}  # open connections per client address (this process)
    # what the uvicorn protocol it is mixed into provides
    client: tuple[str, int] | None
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._timed_cycle: object = None
        self._peer: str | None = self.client[0] if self.client else None
        if self._peer is not None:
            held = self._open.get(self._peer, 0) + 1
            self._open[self._peer] = held
            if held > self.max_per_client:
                cast(asyncio.Transport, transport).write(_refusal(self.max_per_client))
                transport.close()
                return
        self._arm()

    def _cycle(self) -> object:
        """The request/response cycle uvicorn's protocol is on (a new one once a request's headers are in)."""
        return getattr(self, "cycle", None)

    def _arm(self) -> None:
        self._disarm()
        self._head = 0
        self._timed_cycle = self._cycle()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if getattr(self, "_header_timer", None) is not None:
            self._header_timer.cancel()  # type: ignore[union-attr]
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if self._cycle() is self._timed_cycle and not self.transport.is_closing():
            self.transport.close()  # no request began in time: nobody to answer

    def data_received(self, data: bytes) -> None:
        if getattr(self, "_refused", False):  # answered and half-closed: what still comes is dropped
            return
        waiting = self._header_timer is not None  # for a request's headers
        if waiting:
            self._head += len(data)
        super().data_received(data)
        if waiting and self._cycle() is not self._timed_cycle:
            self._disarm()  # a new request's headers are complete
        elif waiting and self._head > self.max_head_bytes and not self.transport.is_closing():
            self._disarm()
            self._refuse(_too_large(self.max_head_bytes))

    def _refuse(self, answer: bytes) -> None:
        """Answer and end the connection so that the client reads the answer: closing a socket with
        unread data would send a reset that can discard it, so the write side is shut first and what
        the client still sends is read and dropped for a second."""
        self._refused = True
        self.transport.write(answer)
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(1.0, self.transport.close)
        else:
            self.transport.close()

    def on_response_complete(self) -> None:
        cast(_CompletesResponses, super()).on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        peer = getattr(self, "_peer", None)
        if peer is not None:
            left = self._open.get(peer, 1) - 1
            if left > 0:
                self._open[peer] = left
            else:
                self._open.pop(peer, None)
            self._peer = None
        super().connection_lost(exc)


class TimedH11Protocol(Deadlines, H11Protocol):
    """uvicorn's pure-Python HTTP/1.1 protocol (h11), with the deadline and the connection cap."""


class TimedHttpToolsProtocol(Deadlines, HttpToolsProtocol):
    """uvicorn's httptools protocol (its C parser), with the deadline and the connection cap; the
    h11 one where httptools is not installed."""


def fastest_protocol() -> type[Deadlines]:
    """The fastest HTTP/1.1 protocol installed, with the deadline and the connection cap."""
    parsers: tuple[type, ...] = (HttpToolsProtocol, H11Protocol)
    return TimedHttpToolsProtocol if parsers[0] is not parsers[1] else TimedH11Protocol
