"""The HTTP service: the cascade behind a small, strict API.

Endpoints: ``POST /v1/classify`` (one text or a batch), ``POST /v1/chat/completions`` (an
OpenAI-compatible drop-in that answers with the label), ``GET /healthz``, ``GET /readyz``,
``GET /metrics`` (Prometheus), ``POST /v1/admin/reload`` (swap in the model directory's current
version; requests already running finish on the old one), and the OpenAPI docs at ``/docs``.

Every error is JSON ``{"error": {"type", "message"}}`` naming the problem; no stack trace reaches
a client. Limits on body size (413), text length and batch size (422) name the limit. With an API
key file, requests need ``Authorization: Bearer KEY`` and each key has its own rate limit (429 with
``Retry-After``). CORS is off.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from offramp.data.io import clean_text
from offramp.costs.calculator import DEFAULT_PROMPT_TOKENS, api_usd_per_message, load_prices
from offramp.pipeline.cascade import Cascade
from offramp.serving.metrics import Metrics
from offramp.serving.security import RateLimiter, key_matches


@dataclass
class ServeSettings:
    model_dir: Path
    max_body_bytes: int = 1_000_000
    max_text_chars: int = 20_000
    max_batch: int = 256
    api_key_hashes: Optional[set] = None
    rate_limit_per_minute: float = 600.0
    llm_price_model: str = "gpt-4o-mini"
    route_threshold: Optional[float] = None
    pipeline_path: Optional[Path] = None  # a pipeline YAML: model, routing and actions come from it
    audit_path: Optional[Path] = None  # else the pipeline's 'audit:', else no audit log


class ApiError(Exception):
    def __init__(self, status: int, kind: str, message: str, headers: dict | None = None):
        self.status, self.kind, self.message, self.headers = status, kind, message, headers or {}


def _error(status: int, kind: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message}}, status_code=status, headers=headers)


class Gateway:
    """Pure ASGI middleware: refuses bodies over the limit with 413 before the app reads them, and
    counts every response by endpoint and status (and its latency, for the classify endpoints)."""

    TIMED = ("/v1/classify", "/v1/chat/completions")

    def __init__(self, app, limit: int, metrics: Metrics):
        self.app, self.limit, self.metrics = app, limit, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = {"code": 500}

        async def send_counted(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            declared = dict(scope.get("headers") or []).get(b"content-length")
            too_big = declared is not None and declared.isdigit() and int(declared) > self.limit
            chunks, size = [], 0
            # a declared length is what the server reads (HTTP framing), so only a body without
            # one is counted as it arrives
            counted = declared is None or not declared.isdigit()
            if not too_big and counted and scope.get("method") in ("POST", "PUT", "PATCH"):
                while True:
                    msg = await receive()
                    chunks.append(msg)
                    if msg["type"] != "http.request":
                        break
                    size += len(msg.get("body", b""))
                    if size > self.limit:
                        too_big = True
                        break
                    if not msg.get("more_body"):
                        break
            if too_big:
                resp = _error(413, "body_too_large", f"request body is over the {self.limit:,}-byte limit; send less per request")
                return await resp(scope, receive, send_counted)

            async def replay():
                return chunks.pop(0) if chunks else await receive()

            await self.app(scope, replay if chunks else receive, send_counted)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "other")
            self.metrics.inc("offramp_requests_total", endpoint=path, status=status["code"])
            if path in self.TIMED:
                self.metrics.observe(time.perf_counter() - t0)


class ClassifyRequest(BaseModel):
    text: Optional[str] = Field(None, description="One message to classify.")
    texts: Optional[list[str]] = Field(None, description="A batch of messages (instead of text).")
    conversation_id: Optional[str] = Field(None, max_length=200, description=(
        "Groups messages of one conversation: the same personal data gets the same pseudonym across turns."))


class ChatMessage(BaseModel):
    role: str
    content: Union[str, list[dict[str, Any]], None] = None


class ChatRequest(BaseModel):
    model: Optional[str] = None
    messages: list[ChatMessage]
    user: Optional[str] = Field(None, max_length=200, description="Taken as the conversation id.")


class _State:
    """The cascade in use; replaced whole on reload, so a running request keeps its own."""

    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.lock = threading.Lock()
        self.cascade: Cascade | None = None
        self.info: dict = {}
        self.audit_path: Path | None = settings.audit_path

    def load(self) -> None:
        from offramp.models.store import load_model, model_version, read_model_json

        if self.settings.pipeline_path is not None:
            from offramp.pipeline.config import build_cascade

            built = build_cascade(self.settings.pipeline_path)
            cascade, model_dir, routing = built.cascade, built.model_dir, built.routing
            if self.settings.audit_path is None:
                self.audit_path = built.audit_path
        else:
            model_dir = self.settings.model_dir
            model = load_model(model_dir)
            from offramp.privacy.guard import PrivacyGuard

            thresholds = {"*": self.settings.route_threshold} if self.settings.route_threshold else {}
            cascade, routing = Cascade(model, thresholds=thresholds, guard=PrivacyGuard()), None
        doc = read_model_json(model_dir)
        with self.lock:
            self.cascade = cascade
            self.info = {"model": doc.get("info", {}).get("winner", doc.get("family")), "created": doc.get("created"),
                         "family": doc.get("family"), "version": model_version(model_dir),
                         "labels": [str(c) for c in cascade.model.classes_], "routing": routing}


def create_app(settings: ServeSettings) -> FastAPI:
    """The service for ``settings`` (the model is loaded now: a bad model directory fails here)."""
    state = _State(settings)
    state.load()
    audit = None
    if state.audit_path is not None:
        from offramp.audit.log import AuditLog, AuditWriter

        audit = AuditWriter(AuditLog(state.audit_path))
    metrics = Metrics()
    limiter = RateLimiter(settings.rate_limit_per_minute)
    price = load_prices()["models"].get(settings.llm_price_model)
    app = FastAPI(title="offramp", version=_version(),
                  description="A small local model in place of an LLM, for one text-classification task.")

    # ------------------------------------------------------------------ errors
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return _error(exc.status, exc.kind, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", []) if p != "body") or "body"
        return _error(422, "invalid_request", f"{where}: {first.get('msg', 'invalid value')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, "http_error", str(exc.detail))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        return _error(500, "internal_error", "the server failed to answer this request; it has been counted")

    # ------------------------------------------------------------------ auth
    def identify(request: Request) -> str:
        """The client's identity (its key's hash, else its address), after the key and rate checks."""
        ident = request.client.host if request.client else "unknown"
        if settings.api_key_hashes:
            auth = request.headers.get("authorization", "")
            key = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
            match = key_matches(key, settings.api_key_hashes) if key else None
            if match is None:
                raise ApiError(401, "unauthorized", "missing or unknown API key; send Authorization: Bearer KEY",
                               {"WWW-Authenticate": "Bearer"})
            ident = match
        wait = limiter.take(ident)
        if wait > 0:
            raise ApiError(429, "rate_limited", f"over {settings.rate_limit_per_minute:g} requests a minute; "
                           f"retry in {max(wait, 0.1):.1f} s", {"Retry-After": str(max(1, round(wait)))})
        return ident

    # ------------------------------------------------------------------ work
    def check_texts(texts: list[str]) -> None:
        if not texts:
            raise ApiError(422, "invalid_request", "no text to classify: send 'text' or a non-empty 'texts'")
        if len(texts) > settings.max_batch:
            raise ApiError(422, "batch_too_large", f"{len(texts)} texts in one request; the limit is {settings.max_batch}")
        for i, t in enumerate(texts):
            if len(t) > settings.max_text_chars:
                raise ApiError(422, "text_too_long", f"text {i} has {len(t):,} characters; "
                               f"the limit is {settings.max_text_chars:,}")
            if not t.strip():
                raise ApiError(422, "invalid_request", f"text {i} is empty")

    def decide_many(items: list[tuple[str, str, str | None]]) -> list[tuple[dict, dict | None]]:
        """The answers for (text, request id, conversation) items, with their audit records (None
        without an audit log); the small model is called once for all of them."""
        texts = [clean_text(t) for t, _, _ in items]  # JSON may carry lone surrogates
        cascade, info = state.cascade, state.info  # one reference per batch: a reload cannot mix models
        decisions = cascade.run_many(texts, [conv or rid for _, rid, conv in items])
        metrics.inc("offramp_model_calls_total")
        return [answer(d, text, rid, info) for d, text, (_, rid, _) in zip(decisions, texts, items)]

    def answer(d, text: str, request_id: str, info: dict) -> tuple[dict, dict | None]:
        metrics.inc("offramp_decisions_total", route=d.route)
        metrics.inc("offramp_labels_total", label=d.label)
        if d.route == "local" and price is not None:
            tokens_in = DEFAULT_PROMPT_TOKENS + len(text) / 4
            metrics.inc("offramp_estimated_usd_saved_total", api_usd_per_message(price, tokens_in, 5))
        for kind, n in d.pii.items():
            metrics.inc("offramp_pii_found_total", n, entity=kind)
        if d.endpoints:
            metrics.inc("offramp_egress_total")
        record = None
        if audit is not None:
            record = audit.log.record(
                request_id=request_id, model=info.get("model"), model_version=info.get("version"),
                decision=d.label, confidence=round(d.confidence, 6), route=d.route,
                endpoint=" ".join(dict.fromkeys(_host(u) for u in d.endpoints)) or None,
                text_hmac=audit.log.text_hmac(text), pii=d.pii, flags=d.flags,
                action=(d.action or {}).get("type") if isinstance(d.action, dict) else None)
        return ({"label": d.label, "confidence": round(d.confidence, 6), "route": d.route, "flags": d.flags,
                 "action": d.action, "top": d.top, "request_id": request_id}, record)

    batcher = MicroBatcher(decide_many, max_size=64)

    async def decide_all(texts: list[str], ids: list[str], conversation: str | None) -> list[dict]:
        items = [(t, i, conversation) for t, i in zip(texts, ids)]
        if state.cascade.may_block:  # an LLM or a webhook may be waited on: keep the event loop free
            pairs = await run_in_threadpool(decide_many, items)
        else:  # messages of requests that arrive together share one model call
            pairs = [await batcher.submit(items[0])] if len(items) == 1 else \
                await asyncio.gather(*[batcher.submit(item) for item in items])
        if audit is not None:  # answer only once every record is committed
            try:
                await _committed(audit, [r for _, r in pairs])
            except Exception as e:
                metrics.inc("offramp_audit_failures_total")
                raise ApiError(503, "audit_unavailable", f"the audit log could not record this request "
                               f"({type(e).__name__}); no answer is given without its record") from None
        return [a for a, _ in pairs]

    # async: the model's work per message is short and CPU-bound, so a thread-pool hop per request
    # would cost more than it frees (measured with benchmarks/serving.py). The body is parsed and
    # validated here with the request model, so the route has no dependencies for FastAPI to solve
    # per request; /docs shows the same schema.
    @app.post("/v1/classify", openapi_extra=_body_schema(ClassifyRequest))
    async def classify(request: Request):
        """Classify one text (``text``) or a batch (``texts``)."""
        identify(request)
        body = await _read_body(request, ClassifyRequest)
        if (body.text is None) == (body.texts is None):
            raise ApiError(422, "invalid_request", "send exactly one of 'text' or 'texts'")
        texts = [body.text] if body.text is not None else body.texts
        check_texts(texts)
        rid = uuid.uuid4().hex
        ids = [rid] if body.text is not None else [f"{rid}-{i}" for i in range(len(texts))]
        results = await decide_all(texts, ids, body.conversation_id)
        # plain JSON types already: skip FastAPI's generic encoder, which costs more than the model
        return JSONResponse(results[0] if body.text is not None else {"results": results, "request_id": rid})

    @app.post("/v1/chat/completions", openapi_extra=_body_schema(ChatRequest))
    async def chat(request: Request):
        """OpenAI-compatible: the last user message is classified; the label is the assistant's reply."""
        identify(request)
        body = await _read_body(request, ChatRequest)
        users = [m for m in body.messages if m.role == "user"]
        if not users:
            raise ApiError(422, "invalid_request", "messages has no 'user' message to classify")
        content = users[-1].content
        if isinstance(content, list):
            content = "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
        text = content or ""
        check_texts([text])
        rid = uuid.uuid4().hex
        (r,) = await decide_all([text], [rid], body.user)
        return JSONResponse({
            "id": f"chatcmpl-{rid}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": f"offramp:{state.info.get('model')}",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": r["label"]}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            "offramp": r,
        })

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz():
        if state.cascade is None:
            raise ApiError(503, "not_ready", "no model loaded")
        return {"status": "ready", **state.info}

    @app.get("/metrics", response_class=PlainTextResponse)
    def prometheus():
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.post("/v1/admin/reload")
    def reload(request: Request):
        """Load the model directory again (e.g. after `offramp train --out` wrote a new version)."""
        identify(request)
        try:
            state.load()
        except Exception as e:  # the old model keeps serving
            metrics.inc("offramp_model_reloads_total", outcome="failed")
            message = getattr(e, "message", str(e))
            raise ApiError(409, "reload_failed", f"the new model was not loaded ({message}); the previous one keeps serving")
        metrics.inc("offramp_model_reloads_total", outcome="ok")
        return {"status": "reloaded", **state.info}

    app.add_middleware(Gateway, limit=settings.max_body_bytes, metrics=metrics)
    app.state.offramp = state
    app.state.metrics = metrics
    app.state.audit = audit
    app.state.batcher = batcher
    return app


class MicroBatcher:
    """Collects the messages of requests that are ready at the same moment and hands them to
    ``work`` in one call, on the event loop.

    A message waits for no timer: the batch is whatever has arrived by the next turn of the event
    loop, so a lone request is answered at once, and under load the requests parsed while the
    previous batch ran go together. ``work(items) -> results`` must be quick and CPU-bound (it runs
    on the event loop); a failure fails every message of its batch.
    """

    def __init__(self, work, max_size: int = 64):
        self.work, self.max_size = work, max_size
        self._pending: list = []
        self._scheduled = False

    def submit(self, item) -> "asyncio.Future":
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._pending.append((item, fut))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), self.max_size):
            chunk = [(item, fut) for item, fut in pending[start : start + self.max_size] if not fut.done()]
            if not chunk:
                continue
            try:
                results = self.work([item for item, _ in chunk])
            except Exception as e:  # noqa: BLE001 - handed to every waiting request
                for _, fut in chunk:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            for (_, fut), result in zip(chunk, results):
                if not fut.done():
                    fut.set_result(result)


def _body_schema(model: type[BaseModel]) -> dict:
    """The OpenAPI request body of a route that reads its own body with ``_read_body``."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node):  # nested models in place of references the OpenAPI document would not hold
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(defs[ref.rsplit("/", 1)[1]])
            return {k: inline(v) for k, v in node.items()}
        return [inline(v) for v in node] if isinstance(node, list) else node

    return {"requestBody": {"required": True, "content": {"application/json": {"schema": inline(schema)}}}}


async def _read_body(request: Request, model: type[BaseModel]):
    """The request's JSON body as ``model``; anything else is a 422 that says what is wrong."""
    try:  # the standard parser (as FastAPI's): it accepts the lone surrogates JSON escapes allow
        data = json.loads(await request.body())
    except ValueError as e:
        raise ApiError(422, "invalid_request", f"the body is not valid JSON ({e})") from None
    except RecursionError:
        raise ApiError(422, "invalid_request", "the body is nested too deeply to read") from None
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise RequestValidationError(e.errors(include_url=False)) from None


def _host(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.netloc or url


async def _committed(writer, records: list[dict]) -> None:
    """Wait, without blocking the event loop, until the audit writer has committed ``records``."""
    loop = asyncio.get_running_loop()
    futures = []
    for rec in records:
        fut = loop.create_future()
        writer.submit(rec, lambda result, f=fut: loop.call_soon_threadsafe(_settle, f, result))
        futures.append(fut)
    await asyncio.gather(*futures)


def _settle(fut, result) -> None:
    if fut.done():
        return
    if isinstance(result, BaseException):
        fut.set_exception(result)
    else:
        fut.set_result(result)


def _version() -> str:
    from offramp import __version__

    return __version__

