"""The HTTP service: the cascade behind a small, strict API. This module only assembles it.

Endpoints: ``POST /v1/classify`` (one text or a batch), ``POST /v1/chat/completions`` (an
OpenAI-compatible drop-in that answers with the label), ``GET /healthz``, ``GET /readyz``,
``GET /metrics`` (Prometheus), ``POST /v1/admin/reload`` (build the cascade again; requests already
running finish on the old one), and the OpenAPI docs at ``/docs``.

Every error is JSON ``{"error": {"type", "message"}}`` naming the problem; no stack trace reaches
a client. Limits on body size (413), text length and batch size (422) name the limit. With an API
key file, requests need ``Authorization: Bearer KEY`` and each key has its own rate limit (429 with
``Retry-After``). CORS is off.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI

from offramp.runtime.config import Settings
from offramp.serving.console.routes import console, one_worker_console
from offramp.serving.errors import install_error_handlers
from offramp.serving.gateway import Gateway
from offramp.serving.routes import open_routes, protected
from offramp.serving.service import ClassificationService
from offramp.serving.workers import SERVE_SPEC_ENV, WORKER_DIR_ENV
from offramp.version import __version__


def create_app(
    settings: Settings,
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    worker_dir: str | None = None,
) -> FastAPI:
    """The service for ``settings`` (the model is loaded now: a bad model directory fails here).

    ``flags`` and ``env`` are what ``settings`` were resolved from; a reload resolves them again
    against the pipeline file as it is then. ``worker_dir`` makes this one of several worker
    processes sharing metrics and reloads through that directory (see :mod:`offramp.serving.workers`).
    """
    service = ClassificationService(settings, flags, env, worker_dir)
    # with API keys the schema and docs are not served to anyone who asks (unless the settings open them)
    locked = settings.api_keys is not None and not settings.public_endpoints
    app = FastAPI(
        docs_url=None if locked else "/docs",
        redoc_url=None if locked else "/redoc",
        openapi_url=None if locked else "/openapi.json",
        title="offramp",
        version=__version__,
        description="A small local model in place of an LLM, for one text-classification task.",
    )
    install_error_handlers(app)
    app.include_router(protected)
    app.include_router(open_routes)
    if worker_dir is None:
        app.include_router(console)
    else:  # its sessions, review queue and traffic figures live in one process
        app.include_router(one_worker_console)
    app.add_middleware(
        Gateway,
        limit=settings.max_body_bytes,
        metrics=service.metrics,
        stats=service.stats,
        read_timeout_s=settings.read_timeout_s,
    )
    app.state.service = service
    app.state.read_timeout_s = settings.read_timeout_s
    return app


def worker_app() -> FastAPI:
    """What each ``serve --workers N`` process runs: the service ``serve`` described in the environment."""
    import gc
    import json
    import os
    from pathlib import Path

    spec = json.loads(os.environ[SERVE_SPEC_ENV])
    flags = {k: Path(v) if k in PATH_FLAGS and v is not None else v for k, v in spec["flags"].items()}
    settings = Settings.resolve(Path(spec["target"]), flags)
    app = create_app(settings, flags, worker_dir=os.environ[WORKER_DIR_ENV])
    from offramp.serving.protocol import TimedH11Protocol

    TimedH11Protocol.header_timeout_s = settings.read_timeout_s  # this worker's connections
    TimedH11Protocol.max_per_client = settings.max_connections_per_client
    gc.collect()
    gc.freeze()  # see 'serve': loaded state kept out of the collector's full passes
    return app


PATH_FLAGS = ("audit", "api_keys", "admin_keys")
