"""uvicorn's HTTP/1.1 protocol with a header-read deadline.

uvicorn closes idle kept-alive connections, but a client that opens a connection and sends its
request line and headers a byte at a time (a "slow-header" attack) holds the connection for as
long as it likes. Here every connection must complete a request's headers within
``header_timeout_s`` seconds of connecting, or of the previous response on a kept-alive
connection; otherwise it is closed. ``serve`` sets the value from its ``read_timeout_s`` setting
(the body has its own deadline, in :func:`offramp.serving.schemas.read_body`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol


class TimedH11Protocol(H11Protocol):
    header_timeout_s: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._timed_cycle: Any = None
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._timed_cycle = self.cycle
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if getattr(self, "_header_timer", None) is not None:
            self._header_timer.cancel()  # type: ignore[union-attr]
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if self.cycle is self._timed_cycle and not self.transport.is_closing():
            self.transport.close()  # no request began in time: nobody to answer

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._header_timer is not None and self.cycle is not self._timed_cycle:
            self._disarm()  # a new request's headers are complete

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
