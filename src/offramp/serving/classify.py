"""``POST /v1/classify`` as plain ASGI: the one endpoint on the request path's budget.

The route is declared on the FastAPI app (so it is in the OpenAPI document and works when the app
is mounted elsewhere), but the gateway answers it before the framework's middleware, routing and
request objects run: it reads the body, checks the key and the rate, parses the body once
(``model_validate_json``), asks the service and writes the JSON answer. Both ways run
:func:`classify_body`, so they answer alike.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from contextlib import AbstractAsyncContextManager

from pydantic import ValidationError
from starlette.types import Receive, Scope, Send

from offramp.serving.errors import ApiError
from offramp.serving.schemas import ClassifyRequest, load_json_body
from offramp.serving.service import ClassificationService

log = logging.getLogger("offramp.serving")
Headers = list[tuple[bytes, bytes]]
JSON_HEADERS: Headers = [(b"content-type", b"application/json")]


def _dumps(doc: object) -> bytes:
    # as Starlette's JSONResponse renders it
    return json.dumps(doc, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode()


def error_body(e: ApiError) -> tuple[int, bytes, Headers]:
    headers = [(k.lower().encode(), v.encode()) for k, v in e.headers.items()]
    return e.status, _dumps({"error": {"type": e.kind, "message": e.message}}), headers


def _parse(raw: bytes) -> ClassifyRequest:
    """The body, parsed once. The standard JSON parser reads what pydantic's refuses (lone
    surrogates, which JSON escapes allow and the service cleans)."""
    try:
        return ClassifyRequest.model_validate_json(raw)
    except ValidationError as e:
        if e.errors(include_url=False)[0]["type"] != "json_invalid":
            raise _invalid(e) from None
    try:
        return ClassifyRequest.model_validate(load_json_body(raw))
    except ValidationError as e:
        raise _invalid(e) from None


def _invalid(e: ValidationError) -> ApiError:
    """The first thing wrong with a body, and where."""
    first = e.errors(include_url=False)[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "body"
    return ApiError(422, "invalid_request", f"{where}: {first.get('msg', 'invalid value')}")


async def classify_body(
    service: ClassificationService,
    raw: bytes,
    content_type: str,
    authorization: str,
    client_host: str | None,
    authorized: str | None = None,
) -> tuple[int, bytes, Headers]:
    """(status, JSON body, extra headers) of a classify request: the key and rate checks (unless
    ``authorized`` says they ran), the body parsed once, the service's answer."""
    try:
        kind = content_type.split(";", 1)[0].strip().lower()
        if kind != "application/json":
            raise ApiError(
                415,
                "unsupported_media_type",
                f"send the request with Content-Type: application/json (got {kind or 'none'})",
            )
        ident = authorized if authorized is not None else service.authorize(authorization, client_host)
        body = _parse(raw)
        if (body.text is None) == (body.texts is None):
            raise ApiError(422, "invalid_request", "send exactly one of 'text' or 'texts'")
        single = body.text is not None
        texts = [body.text] if body.text is not None else list(body.texts or [])
        principal = ident if service.key_hashes else None
        rid, results = await service.classify(texts, body.conversation_id, single, principal)
        return 200, _dumps(results[0] if single else {"results": results, "request_id": rid}), []
    except ApiError as e:
        return error_body(e)


if sys.version_info >= (3, 11):

    def deadline(seconds: float | None) -> AbstractAsyncContextManager[object]:
        return asyncio.timeout(seconds)

else:  # pragma: no cover - Python 3.10

    class deadline:
        def __init__(self, seconds: float | None) -> None:
            self.seconds = seconds

        async def __aenter__(self) -> None:
            loop = asyncio.get_running_loop()
            task = asyncio.current_task()
            self._handle = loop.call_later(self.seconds, task.cancel) if self.seconds and task else None

        async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
            if self._handle is not None:
                self._handle.cancel()
            if kind is asyncio.CancelledError:
                raise TimeoutError from None
            return False


async def read_all(receive: Receive, limit: int, timeout_s: float | None) -> bytes | None:
    """The whole request body, or None when it is over ``limit`` bytes; TimeoutError when it does
    not arrive within ``timeout_s`` seconds; ConnectionError when the client left."""
    msg = await receive()  # the whole body, when it came with the headers (the usual case)
    if msg["type"] != "http.request":
        raise ConnectionError("the client left")
    body = msg.get("body", b"")
    if not msg.get("more_body"):
        return body if len(body) <= limit else None
    parts, size = [body], len(body)
    async with deadline(timeout_s):
        while True:
            msg = await receive()
            if msg["type"] != "http.request":
                raise ConnectionError("the client left")
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            parts.append(chunk)
            if not msg.get("more_body"):
                break
    return b"".join(parts)


class ClassifyEndpoint:
    """``POST /v1/classify`` as an ASGI handler the app calls before its framework runs: the body
    limit and deadline, :func:`classify_body`, the answer, the request counted."""

    PATH = "/v1/classify"

    def __init__(self, service: ClassificationService, limit: int, read_timeout_s: float | None):
        self.service, self.limit, self.read_timeout_s = service, limit, read_timeout_s
        self.telemetry = service.telemetry

    def matches(self, scope: Scope) -> bool:
        path, root = str(scope["path"]), str(scope.get("root_path", ""))
        return (path[len(root) :] if root and path.startswith(root) else path) == self.PATH

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /v1/classify`` without the framework in between (the same answers as its route)."""
        t0 = time.perf_counter()
        service = self.service
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
            self.telemetry.request(self.PATH, 499, time.perf_counter() - t0)
            return
        except Exception:  # a bug: logged and counted, never a traceback to the client
            log.exception("unhandled error on POST %s", self.PATH)
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
        self.telemetry.request(self.PATH, status, time.perf_counter() - t0)
