"""``serve`` and ``hash-key``: the model (or a whole pipeline) over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from offramp.cli import options as o
from offramp.cli.render import emit, info


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.command("hash-key")(hash_key_cmd)


def serve(
    ctx: typer.Context,
    model_dir: Path = typer.Argument(
        ..., help="Model directory or registry to serve, or a pipeline YAML (model, routing, actions, limits)."
    ),
    host: str = o.HOST,
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
    max_chars: int = o.MAX_CHARS,
    max_text_chars: Optional[int] = o.hidden("--max-text-chars", min=1),
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
    price_model: Optional[str] = o.PRICE_MODEL,
    llm_price_model: Optional[str] = o.hidden("--llm-price-model"),
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
    upstream: Optional[str] = typer.Option(
        None,
        "--upstream",
        help="Proxy mode: the app's own LLM (an OpenAI-compatible base URL); requests that are not the "
        "pipeline's task go there unchanged (beats the pipeline's proxy.upstream).",
    ),
    allowed_hosts: Optional[str] = typer.Option(
        None,
        "--allowed-hosts",
        help="Host names the web console answers under besides localhost, 127.0.0.1 and ::1 (comma-separated).",
    ),
    behind_tls: Optional[bool] = typer.Option(
        None, "--behind-tls", help="Reached over HTTPS through a proxy: the console's session cookie is Secure."
    ),
    offline: Optional[bool] = typer.Option(
        None,
        "--offline/--online",
        help="Refuse every host that is not loopback (beats the pipeline's 'offline:' and OFFRAMP_OFFLINE).",
    ),
    workers: Optional[int] = o.WORKERS,
    engine: str = o.ENGINE,
    address: Optional[str] = o.ADDRESS,
    as_json: bool = o.JSON,
    quiet: bool = o.QUIET,
) -> None:
    """Serve a model over HTTP: /v1/classify, /v1/chat/completions, /v1/feedback, /healthz, /readyz, /metrics, the console at /ui.

    Each setting comes from, in order: this command's option, the pipeline YAML, the environment
    (OFFRAMP_MAX_BATCH, OFFRAMP_AUDIT, OFFRAMP_OFFLINE, ...), the default. --json writes the
    server's log as JSON lines on stdout.
    """
    from offramp.errors import UsageError
    from offramp.runtime.config import engine_name, host_names
    from offramp.serving.app import serve as run_server

    engine_name(engine)
    if engine != "local" and (workers or 1) > 1:
        raise UsageError(
            "--engine ray scales a chain's stages with their replicas:, not --workers", "leave --workers out"
        )
    if address is not None and engine != "ray":
        raise UsageError("--address goes with --engine ray")
    if rate_limit is not None and not rate_limit > 0:
        raise UsageError(f"--rate-limit must be greater than zero, got {rate_limit}")
    flags = {
        "max_body_bytes": max_body_bytes,
        "max_text_chars": o.pick(
            _given(ctx, "max_chars", max_chars), max_text_chars, "serve --max-text-chars", "--max-chars"
        ),
        "max_batch": max_batch,
        "read_timeout_s": read_timeout,
        "max_connections_per_client": max_connections_per_client,
        "audit": audit,
        "offline": offline,
        "rate_limit": rate_limit,
        "llm_price_model": o.pick(price_model, llm_price_model, "serve --llm-price-model", "--price-model"),
        "api_keys": api_keys,
        "public_endpoints": public_endpoints,
        "admin_keys": admin_keys,
        "ui_admin_open": ui_admin_open,
        "upstream": upstream,
        "allowed_hosts": host_names(allowed_hosts) if allowed_hosts is not None else None,
        "behind_tls": behind_tls,
        "engine": engine,
        "ray_address": address,
    }

    def announce(msg: str) -> None:
        if as_json:
            import time

            emit({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "level": "info", "logger": "offramp", "message": msg})
        else:
            info(msg, quiet)

    run_server(model_dir, host=host, port=port, workers=workers or 1, flags=flags, json_logs=as_json, announce=announce)


def _given(ctx: typer.Context, name: str, value: int) -> int | None:
    """The option's value when it was given (else None: the pipeline file, the environment or the
    default decide, as for every other setting)."""
    from click.core import ParameterSource

    return value if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE else None


def hash_key_cmd(
    key: str = typer.Argument(..., help="An API key to accept."),
    as_json: bool = o.JSON,
    quiet: bool = o.QUIET,
) -> None:
    """Print the SHA-256 of an API key, for the file 'offramp serve --api-keys' reads."""
    from offramp.errors import UsageError
    from offramp.serving.auth import hash_key

    if len(key) < 16:
        raise UsageError("an API key should have at least 16 characters")
    if as_json:
        emit({"sha256": hash_key(key)})
    else:
        print(hash_key(key))
