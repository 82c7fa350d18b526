"""The ASGI layer in front of the app: the body-size limit, request counting, and ``POST
/v1/classify`` answered directly (see :mod:`offramp.serving.classify`)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from starlette.types import Receive, Scope, Send

from offramp.serving.classify import JSON_HEADERS, classify_body, error_body, read_all
from offramp.serving.errors import ApiError, error_response
from offramp.serving.service import ClassificationService
from offramp.serving.telemetry import Telemetry

log = logging.getLogger("offramp.serving")


class Gateway:
    """Pure ASGI middleware: refuses bodies over the limit with 413 before the app reads them, and
    counts every response by endpoint and status (and its latency, for the classify endpoints)."""

    CLASSIFY = "/v1/classify"

    def __init__(
        self,
        app: Any,
        limit: int,
        telemetry: Telemetry,
        read_timeout_s: float | None = None,
        service: ClassificationService | None = None,
    ):
        self.app, self.limit, self.telemetry = app, limit, telemetry
        self.read_timeout_s = read_timeout_s
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.service is not None and scope["method"] == "POST" and self.is_classify(scope):
            return await self.classify(scope, receive, send)
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
            self.telemetry.request(getattr(route, "path", "other"), status["code"], time.perf_counter() - t0)

    def is_classify(self, scope: Scope) -> bool:
        path, root = str(scope["path"]), str(scope.get("root_path", ""))
        return (path[len(root) :] if root and path.startswith(root) else path) == self.CLASSIFY

    async def classify(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /v1/classify`` without the framework in between (the same answers as its route)."""
        t0 = time.perf_counter()
        service = self.service
        assert service is not None
        content_type = authorization = ""
        declared = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"content-length":
                declared = value
        status, headers, body = 500, JSON_HEADERS, b""
        try:
            if declared is not None and declared.isdigit() and int(declared) > self.limit:
                raw = None
            else:
                raw = await read_all(receive, self.limit, self.read_timeout_s)
            if raw is None:
                status, body, extra = error_body(
                    ApiError(
                        413,
                        "body_too_large",
                        f"request body is over the {self.limit:,}-byte limit; send less per request",
                    )
                )
            else:
                client = scope.get("client")
                status, body, extra = await classify_body(
                    service, raw, content_type, authorization, client[0] if client else None
                )
            headers = JSON_HEADERS + extra
        except TimeoutError:
            status, body, extra = error_body(
                ApiError(408, "request_timeout", f"the request body did not arrive within {self.read_timeout_s:g} s")
            )
        except ConnectionError:  # the client left before its body arrived: nobody to answer
            self.telemetry.request(self.CLASSIFY, 499, time.perf_counter() - t0)
            return
        except Exception:  # a bug: logged and counted, never a traceback to the client
            log.exception("unhandled error on POST %s", self.CLASSIFY)
            status, body, extra = error_body(
                ApiError(500, "internal_error", "the server failed to answer this request; it has been counted")
            )
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
        self.telemetry.request(self.CLASSIFY, status, time.perf_counter() - t0)
