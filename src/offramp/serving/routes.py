"""The HTTP routes: they parse, call the :class:`~offramp.serving.service.ClassificationService`, render.

``classify`` (one text or a batch), ``chat/completions`` (an OpenAI-compatible drop-in that
answers with the label) and ``admin/reload`` are on the protected router, which checks the API key
(when keys are configured) and the rate limit before any of its routes runs; health, readiness and
metrics are not.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.routing import APIRoute

from offramp.costs.calculator import CHARS_PER_TOKEN
from offramp.serving import proxy
from offramp.serving.classify import classify_body
from offramp.serving.errors import ApiError
from offramp.serving.schemas import (
    ChatRequest,
    ClassifyRequest,
    FeedbackRequest,
    body_schema,
    read_body,
    require_json,
)
from offramp.serving.service import ClassificationService
from offramp.types import JSONDict


def service_of(request: Request) -> ClassificationService:
    service: ClassificationService = request.app.state.service
    return service


def authorize(request: Request) -> str:
    """The API key (when keys are configured) and the per-client rate limit; the client's identity."""
    return service_of(request).authorize(
        request.headers.get("authorization", ""), request.client.host if request.client else None
    )


def principal_of(request: Request) -> str | None:
    """Who is asking, as the key check found it (the key's hash; None without API keys)."""
    if not service_of(request).key_hashes:
        return None
    return getattr(request.state, "principal", None)


class AuthorizedRoute(APIRoute):
    """The route class of the protected router: :func:`authorize` runs before any route on it.

    The check is declared once, for the router, like a router dependency; it is a route class
    rather than ``dependencies=[Depends(authorize)]`` because FastAPI's per-request dependency
    solving cost about 7% of the service's requests/s under wrk (the numbers are on the serving
    benchmark page of the docs).
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            request.state.principal = authorize(request)
            return await handler(request)

        return checked


protected = APIRouter(route_class=AuthorizedRoute)
log = logging.getLogger("offramp.serving")
open_routes = APIRouter()


@protected.post("/v1/classify", openapi_extra=body_schema(ClassifyRequest))
async def classify(request: Request) -> Response:
    """Classify one text (``text``) or a batch (``texts``).

    The gateway answers this path itself, before the framework runs (see
    :mod:`offramp.serving.classify`); this route documents it and answers alike."""
    raw = await _raw_body(request)
    status, body, headers = await classify_body(
        service_of(request),
        raw,
        request.headers.get("content-type", ""),
        "",
        None,
        authorized=getattr(request.state, "principal", None),
    )
    return Response(body, status, headers={k.decode(): v.decode() for k, v in headers}, media_type="application/json")


@protected.post("/v1/chat/completions", openapi_extra=body_schema(ChatRequest))
async def chat(request: Request) -> Response:
    """OpenAI-compatible: the last user message is classified; the label is the assistant's reply.

    In proxy mode (an upstream, or task files in the pipeline) a request that is the task is
    answered in the shape the app asks for and anything else goes to the upstream (see
    :mod:`offramp.serving.proxy`)."""
    service = service_of(request)
    if service.upstream is not None or service.built.tasks:
        return await proxy.chat(request, service, await _raw_body(request))
    body = await read_body(request, ChatRequest)
    text = body.last_user_text()
    rid, (r,) = await service.classify([text], body.user, True, principal_of(request))
    # a multi-label model answers every label it (or the LLM it asked) predicts, joined by its separator
    label = r["label_sep"].join(r["labels"]) if "labels" in r else r["label"]
    # token counts are estimates (characters / 4): no LLM tokenizer runs here
    prompt = sum(len(str(m.content or "")) for m in body.messages)
    usage = {
        "prompt_tokens": max(1, round(prompt / CHARS_PER_TOKEN)),
        "completion_tokens": max(1, round(len(label) / CHARS_PER_TOKEN)),
    }
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    head = {"id": f"chatcmpl-{rid}", "created": int(time.time()), "model": model_name(service)}
    if not body.stream:
        return JSONResponse(
            {
                **head,
                "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": label}, "finish_reason": "stop"}],
                "usage": usage,
                "offramp": r,
            }
        )
    chunk = {**head, "object": "chat.completion.chunk"}
    events = [
        {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
        {**chunk, "choices": [{"index": 0, "delta": {"content": label}, "finish_reason": None}], "offramp": r},
        {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ]
    if (body.stream_options or {}).get("include_usage"):
        events.append({**chunk, "choices": [], "usage": usage})
    payload = "".join(f"data: {json.dumps(e, ensure_ascii=False)}\n\n" for e in events) + "data: [DONE]\n\n"
    return StreamingResponse(iter([payload]), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def model_name(service: ClassificationService) -> str:
    return f"offramp:{service.info.get('model')}"


@protected.post("/v1/feedback", status_code=202, openapi_extra=body_schema(FeedbackRequest))
async def feedback(request: Request) -> JSONResponse:
    """A correction: the right label for a recent answer (its ``request_id``), kept in the capture pool.

    202 when kept (a later correction of the same request replaces it); 404 for a request id not seen
    in the last ``capture.ttl_s`` seconds; 403 when API keys are on and the request was made with
    another key (an admin key may correct any); 422 for a label the model lacks (unless
    ``capture.allow_new_labels``) or an empty label (a multi-label model: ``""`` is the empty set, an
    empty part is refused); 409 when the pipeline keeps no feedback.
    """
    service = service_of(request)
    body = await read_body(request, FeedbackRequest)
    caller = principal_of(request)
    admin = caller is not None and service.admin_hashes is not None and caller in service.admin_hashes
    service.feedback(body.request_id, body.label.strip(), caller, admin)
    return JSONResponse({"status": "accepted", "request_id": body.request_id}, status_code=202)


async def _raw_body(request: Request) -> bytes:
    """The request's body, which must arrive within the read timeout (408 otherwise)."""
    timeout = getattr(request.app.state, "read_timeout_s", None)
    try:
        return await asyncio.wait_for(request.body(), timeout)
    except asyncio.TimeoutError:
        raise ApiError(408, "request_timeout", f"the request body did not arrive within {timeout:g} s") from None


@protected.get("/v1/models", response_model=None)
async def models(request: Request) -> JSONDict | Response:
    """OpenAI-compatible model list: the one model this service answers with (in proxy mode, the
    upstream's list)."""
    service = service_of(request)
    if service.upstream is not None:
        return await proxy.forward(request, service, b"", "not_chat")
    created = service.info.get("created") or ""
    try:
        stamp = int(datetime.fromisoformat(str(created)).timestamp())
    except ValueError:
        stamp = 0
    return {
        "object": "list",
        "data": [{"id": model_name(service), "object": "model", "created": stamp, "owned_by": "offramp"}],
    }


@protected.post("/v1/admin/reload")
def reload(request: Request) -> JSONDict:
    """Build the cascade again (e.g. after `offramp train --out` wrote a new version); requests
    already running finish on the old one."""
    service = service_of(request)
    require_json(request)
    try:
        info = service.reload_all()
    except Exception as e:  # the old model keeps serving
        service.metrics.inc("offramp_model_reloads_total", outcome="failed")
        log.warning("reload failed: %s", getattr(e, "message", e))  # the details (paths) stay in the server's log
        raise ApiError(
            409,
            "reload_failed",
            f"the new model was not loaded ({type(e).__name__}; the server's log says why); the previous one keeps serving",
        ) from None
    service.metrics.inc("offramp_model_reloads_total", outcome="ok")
    return {"status": "reloaded", **info}


@protected.api_route("/v1/{path:path}", methods=["GET", "POST", "DELETE"], include_in_schema=False)
async def upstream_only(request: Request, path: str) -> Response:
    """Proxy mode: every other OpenAI-compatible endpoint (embeddings, completions, files, ...)
    goes to the upstream unchanged; without an upstream, 404 (405 for an endpoint of ours asked
    with another method)."""
    service = service_of(request)
    if service.upstream is None:
        known = {r.path for r in protected.routes if isinstance(r, APIRoute) and r.path != "/v1/{path:path}"}
        if f"/v1/{path}" in known:  # an endpoint of ours, asked with another method
            raise ApiError(405, "method_not_allowed", f"{request.method} is not allowed on /v1/{path[:100]}")
        raise ApiError(404, "not_found", f"no endpoint /v1/{path[:100]}")
    return await proxy.forward(request, service, await _raw_body(request), "not_chat")


@open_routes.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def authorize_operational(request: Request) -> None:
    """With API keys, readiness, metrics (and the docs) need a key too, unless the settings open them."""
    service = service_of(request)
    if service.key_hashes and not service.settings.public_endpoints:
        authorize(request)


@open_routes.get("/readyz")
def readyz(request: Request) -> JSONDict:
    authorize_operational(request)
    service = service_of(request)
    worker = {"worker": service.workers.me} if service.workers is not None else {}  # which process answered
    return {"status": "ready", **service.info, **worker}


@open_routes.get("/metrics", response_class=PlainTextResponse)
def prometheus(request: Request) -> PlainTextResponse:
    authorize_operational(request)
    return PlainTextResponse(service_of(request).render_metrics(), media_type="text/plain; version=0.0.4")
