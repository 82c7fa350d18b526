"""Proxy mode over HTTP: a chat request that is one of the pipeline's tasks is answered by the
cascade in the shape the app expects; anything else goes to the upstream unchanged.

It only parses, calls and renders: matching is :mod:`offramp.proxy.match`, the answer's shape
:mod:`offramp.proxy.shapes`, the forwarding :mod:`offramp.proxy.upstream`. Counted in
``offramp_proxy_requests_total{outcome}``: ``local`` (answered by the small model, or by the
pipeline's own fallback) or ``forwarded``, and ``offramp_proxy_forwarded_total{reason}``:
``no_task``, ``template_changed``, ``schema_changed``, ``unfillable_field``, ``unsure`` (the small
model said "don't know", or named a label the request's schema or the task does not allow),
``not_chat`` (another endpoint), ``shadow`` (``shadow: {mode: llm_first}``: the task's requests
go to the upstream, the small model answers beside it). With an audit log, a forwarded request gets
its record (route ``forwarded``, the upstream's host, an HMAC of its messages, the reason) before it
is sent.

The upstream's answer to a task request it was sent (in shadow mode, or because the small model
was unsure) is read in the task's shape as the bytes go back to the app: in shadow mode it is
compared with the small model's answer (shadow agreement, review queue, capture pool ``shadow``);
an unsure answer's LLM label goes to the capture pool as ``llm``. The app's answer is not touched.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from offramp.costs.calculator import CHARS_PER_TOKEN
from offramp.proxy.match import Match, match
from offramp.proxy.shapes import StreamTap, chunks, completion, label_of
from offramp.proxy.task import ProxyTask
from offramp.serving.classify import read_all
from offramp.serving.errors import ApiError, error_response
from offramp.serving.service import ClassificationService

log = logging.getLogger("offramp.serving")
BARE = ProxyTask(template="{text}", name="bare")  # no task file: the whole user turn is the text, a bare label back


Learn = Callable[[str, dict[str, Any]], None]  # (request id, the upstream's assistant message)


_DOWN = (b'"upstream_unavailable"', b'"upstream_timeout"')


async def forward(
    request: Request,
    service: ClassificationService,
    body: bytes,
    reason: str,
    learn: Learn | None = None,
    down: Callable[[], Awaitable[Response]] | None = None,
) -> Response:
    """The upstream's answer to ``request`` (``body`` already read), counted under ``reason``;
    ``learn`` is given the upstream's answer (a successful one) once it is whole; ``down`` answers
    instead when the upstream cannot be reached or does not answer in time."""
    upstream = service.upstream
    if upstream is None:
        raise ApiError(
            422,
            "not_a_task_request",
            f"this request is not the pipeline's task ({reason}) and no upstream is configured to forward it to",
        )
    service.metrics.inc("offramp_proxy_requests_total", outcome="forwarded")
    service.metrics.inc("offramp_proxy_forwarded_total", reason=reason)
    service.prompt_changed(reason)
    stream, text = False, ""
    if body:
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            stream = doc.get("stream") is True
            messages = doc.get("messages")
            if isinstance(messages, list):
                text = "\n".join(str(m.get("content")) for m in messages if isinstance(m, dict))
    rid = await service.record_forwarded(
        reason, upstream.url(request.url.path), text or body.decode("utf-8", "replace")
    )
    status, headers, content = await upstream.send(
        request.method,
        request.url.path,
        request.url.query,
        dict(request.headers),
        body,
        stream,
        service.built.policy,
    )
    if isinstance(content, bytes):
        if down is not None and status in (502, 504) and any(k in content for k in _DOWN):
            service.metrics.inc("offramp_proxy_upstream_down_total")
            return await down()
        if learn is not None and status == 200:
            _learn_from(content, rid, learn)
        return Response(content, status, headers=headers)
    media = headers.pop("content-type", "text/event-stream")
    if learn is not None and status == 200:
        content = _tapped(content, rid, learn)
    return StreamingResponse(content, status, headers=headers, media_type=media)


def _learn_from(content: bytes, rid: str, learn: Learn) -> None:
    try:
        doc = json.loads(content)
        msg = doc["choices"][0]["message"]
    except (ValueError, KeyError, IndexError, TypeError):
        return
    if isinstance(msg, dict):
        learn(rid, msg)


async def _tapped(content: AsyncIterator[bytes], rid: str, learn: Learn) -> AsyncIterator[bytes]:
    """The stream, unchanged, read on the way by a :class:`StreamTap`; learned from when it ended well."""
    tap = StreamTap()
    async for chunk in content:
        tap.feed(chunk)
        yield chunk
    if tap.done:
        learn(rid, tap.message())


async def chat(request: Request, service: ClassificationService, raw: bytes) -> Response:
    """``POST /v1/chat/completions`` in proxy mode (or with task files)."""
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        if service.upstream is not None:
            return await forward(request, service, raw, "no_task")
        raise ApiError(422, "invalid_request", "the body is not a JSON object")
    found = match(body, service.built.tasks or (BARE,))
    if not isinstance(found, Match):
        return await forward(request, service, raw, found)
    service.prompt_changed(None)
    if service.upstream is not None and service.built.info.get("shadow") == "llm_first":
        # day one: the app keeps getting its LLM's answers; the small model answers beside it
        local, confidence = await service.local_answer(found.text)
        task, text = found.task, found.text

        def compare(rid: str, msg: dict[str, Any]) -> None:
            llm = label_of(task, msg)
            if llm is not None:
                service.proxied(rid, text, local, confidence, llm, shadow=True)

        # the upstream down: the small model answers, as it would after the switch
        return await forward(
            request, service, raw, "shadow", compare, lambda: _local(request, service, raw, body, found)
        )
    return await _local(request, service, raw, body, found, unsure_to_upstream=True)


async def _local(
    request: Request,
    service: ClassificationService,
    raw: bytes,
    body: dict[str, Any],
    found: Match,
    unsure_to_upstream: bool = False,
) -> Response:
    """The cascade's answer to a task request, in the task's shape (an unsure one goes to the
    upstream when ``unsure_to_upstream``)."""
    principal = getattr(request.state, "principal", None) if service.key_hashes else None
    conversation = body.get("user") if isinstance(body.get("user"), str) else None
    rid, (r,) = await service.classify([found.text], conversation, True, principal)
    label = r["label"]
    allowed = set(found.enum or ()) | set(found.task.labels)
    unsure = label == str(getattr(service.built.cascade.model, "reject_label_", None)) or (
        allowed and label not in allowed
    )
    if unsure and unsure_to_upstream and service.upstream is not None:
        task, text, confidence = found.task, found.text, float(r.get("confidence") or 0.0)

        def keep(rid: str, msg: dict[str, Any]) -> None:
            llm = label_of(task, msg)
            if llm is not None:
                service.proxied(rid, text, label, confidence, llm, shadow=False)

        return await forward(request, service, raw, "unsure", keep)
    service.metrics.inc("offramp_proxy_requests_total", outcome="local")
    prompt = sum(len(str(m.get("content") or "")) for m in body.get("messages", []) if isinstance(m, dict))
    usage = {
        "prompt_tokens": max(1, round(prompt / CHARS_PER_TOKEN)),
        "completion_tokens": max(1, round(len(label) / CHARS_PER_TOKEN)),
    }
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    model = body.get("model") if isinstance(body.get("model"), str) else f"offramp:{service.info.get('model')}"
    head = {"id": f"chatcmpl-{rid}", "created": int(time.time()), "model": model}
    confidence = float(r.get("confidence") or 0.0)
    if body.get("stream") is not True:
        return JSONResponse({**completion(found.task, label, confidence, body, head, usage), "offramp": r})
    events = chunks(found.task, label, confidence, body, head, usage)

    async def sse() -> AsyncIterator[bytes]:
        for e in events:
            yield f"data: {json.dumps(e, ensure_ascii=False)}\n\n".encode()
        yield b"data: [DONE]\n\n"

    return StreamingResponse(sse(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


class ChatEndpoint:
    """``POST /v1/chat/completions`` in proxy mode as an ASGI handler the app calls before its
    framework runs (as :class:`~offramp.serving.classify.ClassifyEndpoint` does for classify):
    every forwarded request takes this path, so it carries no more than the key and rate check,
    the body limit and deadline, :func:`chat`, and the request counted. The answers are the
    route's."""

    PATH = "/v1/chat/completions"

    def __init__(self, service: ClassificationService, limit: int, read_timeout_s: float | None):
        self.service, self.limit, self.read_timeout_s = service, limit, read_timeout_s
        self.telemetry = service.telemetry

    def matches(self, scope: Scope) -> bool:
        service = self.service
        if service.upstream is None and not service.built.tasks:
            return False
        path, root = str(scope["path"]), str(scope.get("root_path", ""))
        return (path[len(root) :] if root and path.startswith(root) else path) == self.PATH

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        t0 = time.perf_counter()
        status = 500

        async def counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        service = self.service
        authorization = ""
        declared = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"content-length":
                declared = value
        response: Response
        try:
            client = scope.get("client")
            principal = service.authorize(authorization, client[0] if client else None)
            too_big = ApiError(
                413, "body_too_large", f"request body is over the {self.limit:,}-byte limit; send less per request"
            )
            if declared is not None and declared.isdigit() and int(declared) > self.limit:
                raise too_big
            raw = await read_all(receive, self.limit, self.read_timeout_s)
            if raw is None:
                raise too_big
            request = Request(scope, receive)
            request.state.principal = principal
            response = await chat(request, service, raw)
        except ApiError as e:
            response = error_response(e.status, e.kind, e.message, e.headers)
        except TimeoutError:
            response = error_response(
                408, "request_timeout", f"the request body did not arrive within {self.read_timeout_s:g} s"
            )
        except ConnectionError:  # the client left before its body arrived: nobody to answer
            self.telemetry.request(self.PATH, 499, time.perf_counter() - t0)
            return
        except Exception:  # a bug: logged and counted, never a traceback to the client
            log.exception("unhandled error on POST %s", self.PATH)
            response = error_response(
                500, "internal_error", "the server failed to answer this request; it has been counted"
            )
        try:
            await response(scope, receive, counted)
        finally:
            self.telemetry.request(self.PATH, status, time.perf_counter() - t0)
