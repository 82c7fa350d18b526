"""The ASGI layer in front of the app: the body-size limit and request counting."""

from __future__ import annotations

import asyncio
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from offramp.serving.errors import error_response
from offramp.serving.telemetry import Telemetry


class Gateway:
    """Pure ASGI middleware: refuses bodies over the limit with 413 before the app reads them, and
    counts every response by endpoint and status (and its latency, for the classify endpoints)."""

    def __init__(
        self,
        app: ASGIApp,
        limit: int,
        telemetry: Telemetry,
        read_timeout_s: float | None = None,
    ):
        self.app, self.limit, self.telemetry = app, limit, telemetry
        self.read_timeout_s = read_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        t0 = time.perf_counter()
        status = {"code": 500}

        async def send_counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            declared = dict(scope.get("headers") or []).get(b"content-length")
            too_big = declared is not None and declared.isdigit() and int(declared) > self.limit
            chunks: list[Message] = []
            # a declared length is what the server reads (HTTP framing), so only a body without
            # one is counted as it arrives
            counted = declared is None or not declared.isdigit()
            if not too_big and counted and scope.get("method") in ("POST", "PUT", "PATCH"):

                async def read_counted() -> bool:
                    size = 0
                    while True:
                        msg = await receive()
                        chunks.append(msg)
                        if msg["type"] != "http.request":
                            return False
                        size += len(msg.get("body", b""))
                        if size > self.limit:
                            return True
                        if not msg.get("more_body"):
                            return False

                try:
                    too_big = await asyncio.wait_for(read_counted(), self.read_timeout_s)
                except asyncio.TimeoutError:
                    resp = error_response(
                        408, "request_timeout", f"the request body did not arrive within {self.read_timeout_s:g} s"
                    )
                    return await resp(scope, receive, send_counted)
            if too_big:
                resp = error_response(
                    413, "body_too_large", f"request body is over the {self.limit:,}-byte limit; send less per request"
                )
                return await resp(scope, receive, send_counted)

            async def replay() -> Message:
                return chunks.pop(0) if chunks else await receive()

            await self.app(scope, replay if chunks else receive, send_counted)
        finally:
            route = scope.get("route")
            self.telemetry.request(getattr(route, "path", "other"), status["code"], time.perf_counter() - t0)
