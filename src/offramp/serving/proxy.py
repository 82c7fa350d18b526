"""Proxy mode over HTTP: a chat request that is one of the pipeline's tasks is answered by the
cascade in the shape the app expects; anything else goes to the upstream unchanged.

It only parses, calls and renders: matching is :mod:`offramp.proxy.match`, the answer's shape
:mod:`offramp.proxy.shapes`, the forwarding :mod:`offramp.proxy.upstream`. Counted in
``offramp_proxy_requests_total{outcome}``: ``local`` (answered by the small model, or by the
pipeline's own fallback) or ``forwarded``, and ``offramp_proxy_forwarded_total{reason}``:
``no_task``, ``template_changed``, ``schema_changed``, ``unfillable_field``, ``unsure`` (the small
model said "don't know", or named a label the request's schema or the task does not allow),
``not_chat`` (another endpoint). With an audit log, a forwarded request gets its record (route
``forwarded``, the upstream's host, an HMAC of its messages, the reason) before it is sent.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from offramp.costs.calculator import CHARS_PER_TOKEN
from offramp.proxy.match import Match, match
from offramp.proxy.shapes import chunks, completion
from offramp.proxy.task import ProxyTask
from offramp.serving.errors import ApiError
from offramp.serving.service import ClassificationService

BARE = ProxyTask(template="{text}", name="bare")  # no task file: the whole user turn is the text, a bare label back


async def forward(request: Request, service: ClassificationService, body: bytes, reason: str) -> Response:
    """The upstream's answer to ``request`` (``body`` already read), counted under ``reason``."""
    upstream = service.upstream
    if upstream is None:
        raise ApiError(
            422,
            "not_a_task_request",
            f"this request is not the pipeline's task ({reason}) and no upstream is configured to forward it to",
        )
    service.metrics.inc("offramp_proxy_requests_total", outcome="forwarded")
    service.metrics.inc("offramp_proxy_forwarded_total", reason=reason)
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
    await service.record_forwarded(reason, upstream.url(request.url.path), text or body.decode("utf-8", "replace"))
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
        return Response(content, status, headers=headers)
    media = headers.pop("content-type", "text/event-stream")
    return StreamingResponse(content, status, headers=headers, media_type=media)


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
    principal = getattr(request.state, "principal", None) if service.key_hashes else None
    conversation = body.get("user") if isinstance(body.get("user"), str) else None
    rid, (r,) = await service.classify([found.text], conversation, True, principal)
    label = r["label"]
    allowed = set(found.enum or ()) | set(found.task.labels)
    unsure = label == str(getattr(service.built.cascade.model, "reject_label_", None)) or (
        allowed and label not in allowed
    )
    if unsure and service.upstream is not None:
        return await forward(request, service, raw, "unsure")
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
