"""``serve`` and ``hash-key``: the model (or a whole pipeline) over HTTP."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer

from offramp.cli.common import err, positive
from offramp.errors import UsageError


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.command("hash-key")(hash_key_cmd)


def serve(
    model_dir: Path = typer.Argument(
        ..., help="Model directory to serve, or a pipeline YAML (model, routing, actions, limits)."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="Port to listen on."),
    api_keys: Optional[Path] = typer.Option(
        None,
        "--api-keys",
        help="File of SHA-256 hashes of accepted API keys (see 'offramp hash-key'); env OFFRAMP_API_KEYS.",
    ),
    rate_limit: Optional[float] = typer.Option(
        None,
        "--rate-limit",
        help="Requests a minute per API key (or per client address without keys); default 600, env OFFRAMP_RATE_LIMIT.",
    ),
    max_body_bytes: Optional[int] = typer.Option(
        None,
        "--max-body-bytes",
        min=1,
        help="Larger request bodies get 413 (beats the pipeline's limits:; default 1,000,000).",
    ),
    max_text_chars: Optional[int] = typer.Option(
        None, "--max-text-chars", min=1, help="Longer texts get 422 (beats the pipeline's limits:; default 20,000)."
    ),
    max_batch: Optional[int] = typer.Option(
        None, "--max-batch", min=1, help="Larger batches get 422 (beats the pipeline's limits:; default 256)."
    ),
    read_timeout: Optional[float] = typer.Option(
        None,
        "--read-timeout",
        min=0.001,
        help="Seconds a client has to send a request's headers, and then its body (beats the pipeline's "
        "limits:; default 10): slow senders are cut off.",
    ),
    max_connections_per_client: Optional[int] = typer.Option(
        None,
        "--max-connections-per-client",
        min=1,
        help="Open connections one client address may hold (per worker; beats the pipeline's limits:; "
        "default 64): one more gets 503. Raise it behind a reverse proxy, whose address all clients share.",
    ),
    llm_price_model: Optional[str] = typer.Option(
        None, "--llm-price-model", help="Price-table row used for the dollars-saved metric (default gpt-4o-mini)."
    ),
    audit: Optional[Path] = typer.Option(
        None, "--audit", help="Hash-chained audit log (SQLite), one record per message (beats the pipeline's 'audit:')."
    ),
    public_endpoints: Optional[bool] = typer.Option(
        None,
        "--public-endpoints",
        help="With --api-keys, let anyone read /readyz, /metrics and /docs (by default they need a key too).",
    ),
    admin_keys: Optional[Path] = typer.Option(
        None,
        "--admin-keys",
        help="File of SHA-256 hashes of admin keys: the web console's review, promote, rollback and retrain need one.",
    ),
    ui_admin_open: Optional[bool] = typer.Option(
        None,
        "--ui-admin-open",
        help="Without keys, let anyone change things from the web console (a laptop demo; by default it is read-only).",
    ),
    offline: Optional[bool] = typer.Option(
        None,
        "--offline/--online",
        help="Refuse every host that is not loopback (beats the pipeline's 'offline:' and OFFRAMP_OFFLINE).",
    ),
    workers: int = typer.Option(
        1,
        "--workers",
        min=1,
        max=64,
        help="Processes answering on the port; metrics, reloads and the audit log stay one (the console needs 1).",
    ),
) -> None:
    """Serve a model over HTTP: /v1/classify, /v1/chat/completions, /v1/feedback, /healthz, /readyz, /metrics, the console at /ui.

    Each setting comes from, in order: this command's option, the pipeline YAML, the environment
    (OFFRAMP_MAX_BATCH, OFFRAMP_AUDIT, OFFRAMP_OFFLINE, ...), the default.
    """
    import uvicorn

    from offramp.runtime.config import Settings
    from offramp.serving.app import create_app

    positive("--rate-limit", rate_limit)
    flags = {
        "max_body_bytes": max_body_bytes,
        "max_text_chars": max_text_chars,
        "max_batch": max_batch,
        "read_timeout_s": read_timeout,
        "max_connections_per_client": max_connections_per_client,
        "audit": audit,
        "offline": offline,
        "rate_limit": rate_limit,
        "llm_price_model": llm_price_model,
        "api_keys": api_keys,
        "public_endpoints": public_endpoints,
        "admin_keys": admin_keys,
        "ui_admin_open": ui_admin_open,
    }
    settings = Settings.resolve(model_dir, flags)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if workers > 1:
        _serve_workers(model_dir, settings, flags, host, port, workers)
        return
    application = create_app(settings, flags)
    err.print(f"serving {model_dir} on http://{host}:{port} (console at /ui, docs at /docs)", markup=False)
    # everything loaded so far lives as long as the server: keep it out of the garbage collector's
    # full passes, which otherwise walk it every few thousand requests (a 20-40 ms pause measured
    # as the p99 latency with benchmarks/serving.py)
    import gc

    gc.collect()
    gc.freeze()
    from offramp.serving.protocol import TimedH11Protocol

    TimedH11Protocol.header_timeout_s = settings.read_timeout_s
    TimedH11Protocol.max_per_client = settings.max_connections_per_client
    # X-Forwarded-For is not trusted (uvicorn would from 127.0.0.1): a client could reset its own rate limit
    uvicorn.run(
        application,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        http=TimedH11Protocol,
    )


def _serve_workers(model_dir: Path, settings: object, flags: dict, host: str, port: int, workers: int) -> None:
    """uvicorn's worker processes, each building the service from the environment (see serving.workers)."""
    import json
    import os
    import shutil
    import tempfile

    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from offramp.serving.service import ClassificationService
    from offramp.serving.workers import SERVE_SPEC_ENV, WORKER_DIR_ENV, listening_socket

    run_dir = tempfile.mkdtemp(prefix="offramp-serve-")
    try:
        # built once here so that a bad model, pipeline or audit log is one line now, not N crashing workers
        check = ClassificationService(settings, flags, worker_dir=run_dir)  # type: ignore[arg-type]
        check.close()
        if check.audit is not None:
            check.audit.close()
        del check
        for leftover in Path(run_dir).iterdir():
            leftover.unlink()
        spec = {"target": str(model_dir), "flags": {k: str(v) if isinstance(v, Path) else v for k, v in flags.items()}}
        os.environ[SERVE_SPEC_ENV] = json.dumps(spec)
        os.environ[WORKER_DIR_ENV] = run_dir
        config = uvicorn.Config(
            "offramp.serving.app:worker_app",
            factory=True,
            workers=workers,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            proxy_headers=False,
            http="offramp.serving.protocol:TimedH11Protocol",
            # a worker busy loading a model for a few seconds is not hung: uvicorn restarts one
            # that misses its supervisor's ping for this long (default 5 s)
            timeout_worker_healthcheck=30,
        )
        try:  # made here, marked TCP (see listening_socket: uvicorn's would cost ~40 ms a request)
            sock = listening_socket(host, port)
        except OSError as e:
            raise UsageError(f"cannot listen on {host}:{port}: {e.strerror}", "choose another --port") from None
        err.print(f"serving {model_dir} on http://{host}:{port} with {workers} worker processes (docs at /docs)")
        try:
            Multiprocess(config, sockets=[sock]).run()
        except KeyboardInterrupt:
            pass
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def hash_key_cmd(key: str = typer.Argument(..., help="An API key to accept.")) -> None:
    """Print the SHA-256 of an API key, for the file 'offramp serve --api-keys' reads."""
    from offramp.serving.auth import hash_key

    if len(key) < 16:
        raise UsageError("an API key should have at least 16 characters")
    print(hash_key(key))
