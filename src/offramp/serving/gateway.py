"""The ASGI layer in front of the app: body-size limit and request counting."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from offramp.serving.errors import error_response
from offramp.serving.metrics import Metrics
from offramp.serving.stats import TrafficStats


class Gateway:
    """Pure ASGI middleware: refuses bodies over the limit with 413 before the app reads them, and
    counts every response by endpoint and status (and its latency, for the classify endpoints)."""

    TIMED = ("/v1/classify", "/v1/chat/completions")

    def __init__(
        self,
        app: Any,
        limit: int,
        metrics: Metrics,
        stats: TrafficStats | None = None,
        read_timeout_s: float | None = None,
    ):
        self.app, self.limit, self.metrics, self.stats = app, limit, metrics, stats
        self.read_timeout_s = read_timeout_s

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = {"code": 500}

        async def send_counted(message: Any) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            declared = dict(scope.get("headers") or []).get(b"content-length")
            too_big = declared is not None and declared.isdigit() and int(declared) > self.limit
            chunks: list[Any] = []
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

            async def replay() -> Any:
                return chunks.pop(0) if chunks else await receive()

            await self.app(scope, replay if chunks else receive, send_counted)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "other")
            self.metrics.inc("offramp_requests_total", endpoint=path, status=status["code"])
            if path in self.TIMED:
                took = time.perf_counter() - t0
                self.metrics.observe(took)
                if self.stats is not None and status["code"] < 400:
                    self.stats.request(took)
