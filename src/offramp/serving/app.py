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

import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Callable

import anyio.to_thread
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from offramp.errors import UsageError
from offramp.runtime.config import Settings
from offramp.serving.classify import ClassifyEndpoint
from offramp.serving.console.routes import console, one_worker_console
from offramp.serving.errors import install_error_handlers
from offramp.serving.gateway import Gateway
from offramp.serving.proxy import ChatEndpoint
from offramp.serving.routes import open_routes, protected
from offramp.serving.service import ClassificationService
from offramp.serving.workers import SERVE_SPEC_ENV, WORKER_DIR_ENV
from offramp.version import __version__


def create_app(
    settings: Settings | str | os.PathLike[str],
    flags: Mapping[str, object] | None = None,
    env: Mapping[str, str] | None = None,
    worker_dir: str | None = None,
    workers: int = 1,
) -> FastAPI:
    """The service for ``settings`` (the model is loaded now: a bad model directory fails here).

    ``settings`` may be resolved :class:`~offramp.runtime.config.Settings` or what to serve (a
    model directory, a registry or a pipeline file), resolved here with ``flags`` (the settings
    given explicitly, as ``offramp serve``'s options) and ``env``; a reload resolves them again
    against the pipeline file as it is then. ``worker_dir`` makes this one of ``workers`` worker
    processes sharing metrics and reloads through that directory (see :mod:`offramp.serving.workers`);
    each then allows a key ``rate_limit / workers`` requests a minute.

    The app can be mounted in an existing FastAPI application::

        from fastapi import FastAPI
        from offramp import create_app

        app = FastAPI()
        app.mount("/offramp", create_app("pipeline.yaml"))   # POST /offramp/v1/classify ...
    """
    if not isinstance(settings, Settings):
        settings = Settings.resolve(settings, flags, env)
    service = ClassificationService(settings, flags, env, worker_dir, workers)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        # shutting down: release the model's resources (a chain on Ray Serve leaves the cluster clean)
        await anyio.to_thread.run_sync(service.close)

    # with API keys the schema and docs are not served to anyone who asks (unless the settings open them)
    locked = settings.api_keys is not None and not settings.public_endpoints
    app = ServiceApp(
        docs_url=None if locked else "/docs",
        redoc_url=None if locked else "/redoc",
        openapi_url=None if locked else "/openapi.json",
        title="offramp",
        lifespan=lifespan,
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
        telemetry=service.telemetry,
        read_timeout_s=settings.read_timeout_s,
    )
    # the one hot endpoint is answered before the framework's middleware stack (see serving.classify)
    app.fast = ClassifyEndpoint(service, settings.max_body_bytes, settings.read_timeout_s)
    app.fast_chat = ChatEndpoint(service, settings.max_body_bytes, settings.read_timeout_s)
    app.state.service = service
    app.state.read_timeout_s = settings.read_timeout_s
    return app


class ServiceApp(FastAPI):
    """The service's FastAPI app: ``POST /v1/classify`` goes straight to its handler; every other
    request through the framework as usual."""

    fast: ClassifyEndpoint | None = None
    fast_chat: ChatEndpoint | None = None  # proxy mode: every forwarded request comes this way

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            fast, chat = self.fast, self.fast_chat
            if fast is not None and fast.matches(scope):
                await fast(scope, receive, send)
                return
            if chat is not None and chat.matches(scope):
                await chat(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def worker_app() -> FastAPI:
    """What each ``serve --workers N`` process runs: the service ``serve`` described in the environment."""
    import gc

    spec = json.loads(os.environ[SERVE_SPEC_ENV])
    flags = {k: Path(v) if k in PATH_FLAGS and v is not None else v for k, v in spec["flags"].items()}
    settings = Settings.resolve(Path(spec["target"]), flags)
    app = create_app(settings, flags, worker_dir=os.environ[WORKER_DIR_ENV], workers=int(spec.get("workers", 1)))
    from offramp.serving.protocol import fastest_protocol

    protocol = fastest_protocol()
    protocol.header_timeout_s = settings.read_timeout_s  # this worker's connections
    protocol.max_per_client = settings.max_connections_per_client
    gc.collect()
    gc.freeze()  # see 'serve': loaded state kept out of the collector's full passes
    return app


PATH_FLAGS = ("audit", "api_keys", "admin_keys")


class JsonLogFormatter(logging.Formatter):
    """One JSON object per log record: time, level, logger, message."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info).splitlines()[-1]
        return json.dumps(doc, ensure_ascii=False)


def configure_logging(json_logs: bool = False) -> None:
    """Warnings and errors of offramp and uvicorn on stderr, or as JSON lines on stdout."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stdout if json_logs else sys.stderr)
    handler.setFormatter(
        JsonLogFormatter() if json_logs else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers, lg.propagate = [], True


def serve(
    target: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    flags: Mapping[str, object] | None = None,
    json_logs: bool = False,
    announce: Callable[[str], None] | None = None,
) -> None:
    """Serve ``target`` (a model directory, a registry or a pipeline file) over HTTP until
    interrupted: what ``offramp serve`` runs. ``flags`` are the settings given explicitly; with
    ``workers`` above 1, that many processes answer on the port, sharing metrics and reloads."""
    import gc

    import uvicorn

    flags = dict(flags or {})
    settings = Settings.resolve(target, flags)
    configure_logging(json_logs)
    say = announce or (lambda _m: None)
    if workers > 1:
        _serve_workers(Path(target), flags, host, port, workers, say)
        return
    application = create_app(settings, flags)
    say(f"serving {target} on http://{host}:{port} (console at /ui, docs at /docs)")
    # everything loaded so far lives as long as the server: keep it out of the garbage collector's
    # full passes, which otherwise walk it every few thousand requests (a 20-40 ms pause measured
    # as the p99 latency with benchmarks/serving.py)
    gc.collect()
    gc.freeze()
    from offramp.serving.protocol import fastest_protocol

    protocol = fastest_protocol()
    protocol.header_timeout_s = settings.read_timeout_s
    protocol.max_per_client = settings.max_connections_per_client
    # X-Forwarded-For is not trusted (uvicorn would from 127.0.0.1): a client could reset its own rate limit
    uvicorn.run(
        application,
        host=host,
        port=port,
        log_level="warning",
        log_config=None,
        access_log=False,
        proxy_headers=False,
        http=protocol,
    )


def _serve_workers(
    target: Path, flags: Mapping[str, object], host: str, port: int, workers: int, say: Callable[[str], None]
) -> None:
    """uvicorn's worker processes, each building the service from the environment (see serving.workers)."""
    import shutil
    import tempfile

    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from offramp.serving.protocol import fastest_protocol
    from offramp.serving.workers import listening_socket

    settings = Settings.resolve(target, flags)
    run_dir = tempfile.mkdtemp(prefix="offramp-serve-")
    try:
        # built once here so that a bad model, pipeline or audit log is one line now, not N crashing workers
        check = ClassificationService(settings, flags, worker_dir=run_dir)
        check.close()
        if check.audit is not None:
            check.audit.close()
        del check
        for leftover in Path(run_dir).iterdir():
            leftover.unlink()
        spec = {
            "target": str(target),
            "flags": {k: str(v) if isinstance(v, Path) else v for k, v in flags.items()},
            "workers": workers,
        }
        os.environ[SERVE_SPEC_ENV] = json.dumps(spec)
        os.environ[WORKER_DIR_ENV] = run_dir
        config = uvicorn.Config(
            "offramp.serving.app:worker_app",
            factory=True,
            workers=workers,
            host=host,
            port=port,
            log_level="warning",
            log_config=None,
            access_log=False,
            proxy_headers=False,
            http=f"offramp.serving.protocol:{fastest_protocol().__name__}",
            # a worker busy loading a model for a few seconds is not hung: uvicorn restarts one
            # that misses its supervisor's ping for this long (default 5 s)
            timeout_worker_healthcheck=30,
        )
        try:  # made here, marked TCP (see listening_socket: uvicorn's would cost ~40 ms a request)
            sock = listening_socket(host, port)
        except OSError as e:
            raise UsageError(f"cannot listen on {host}:{port}: {e.strerror}", "choose another port") from None
        say(f"serving {target} on http://{host}:{port} with {workers} worker processes (docs at /docs)")
        try:
            Multiprocess(config, sockets=[sock]).run()
        except KeyboardInterrupt:
            pass
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
