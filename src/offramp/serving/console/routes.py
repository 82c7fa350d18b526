"""The web console at ``/ui``: overview, review queue, models, report — served by offramp itself.

Every page is a small HTML shell; ``/ui/static/console.js`` fetches ``/ui/api/...`` and draws the
figures and charts (inline SVG) in the page. No asset comes from elsewhere, so the console works
air-gapped, and every response carries a strict Content-Security-Policy (scripts and styles from
this server only, no framing by other sites).

Access: with API keys (``--api-keys``) or admin keys (``--admin-keys``) configured, the console
needs a login — a key typed into a form once, exchanged for an HttpOnly, SameSite=Strict session
cookie. Changing anything (review, promote, roll back, retrain) needs an admin key, and a request
that changes something must carry the session's CSRF token in ``X-CSRF-Token``. Without keys the
console is read-only unless the service was started with ``--ui-admin-open``.
"""

from __future__ import annotations

import html
import json
from datetime import datetime
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from offramp.serving.auth import key_matches
from offramp.serving.console.operations import Console
from offramp.serving.console.sessions import COOKIE, TTL_S, Session, SessionStore, csrf_ok
from offramp.serving.errors import ApiError
from offramp.serving.schemas import FeedbackRequest, read_body, require_json
from offramp.serving.service import ClassificationService

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def host_name(netloc: str) -> str:
    """The host name of a ``Host`` header or an origin's netloc, lower case, without the port."""
    netloc = netloc.strip().lower()
    if netloc.startswith("["):  # [::1]:8000
        return netloc[1 : netloc.find("]")] if "]" in netloc else netloc
    return netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 else netloc


def check_origin(request: Request) -> None:
    """Every console request: the ``Host`` must be a loopback name or one the settings allow, so
    a page on another name that resolves here (DNS rebinding) is refused; a request that changes
    something must not come from another origin (``Origin``, ``Sec-Fetch-Site``)."""
    service: ClassificationService = request.app.state.service
    allowed = service.settings.allowed_hosts
    host = request.headers.get("host", "")
    name = host_name(host)
    if "*" not in allowed and name not in LOOPBACK_NAMES and name not in allowed and not name.startswith("127."):
        raise ApiError(
            403,
            "host_not_allowed",
            f"the console does not answer under the host name {name[:100]!r}; "
            "start the service with --allowed-hosts NAME to reach it under that name",
        )
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    # a browser says where a request comes from in Sec-Fetch-Site (no page can set it) and Origin
    # (``null`` for a form posted from a page with Referrer-Policy: no-referrer, as the console's are)
    site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    if site is not None and site not in ("same-origin", "none"):
        raise ApiError(403, "cross_origin", "a request from another site cannot change anything here")
    if origin is not None and not (origin == "null" and site is not None):
        netloc = origin.split("://", 1)[1] if "://" in origin else ""
        if not netloc or netloc.lower() != host.strip().lower():
            raise ApiError(403, "cross_origin", f"a request from {origin[:100]!r} cannot change anything here")


console = APIRouter(include_in_schema=False, dependencies=[Depends(check_origin)])
one_worker_console = APIRouter(include_in_schema=False)  # what /ui answers under serve --workers N > 1


@one_worker_console.get("/ui")
@one_worker_console.get("/ui/{rest:path}")
def console_needs_one_worker(rest: str = "") -> None:
    raise ApiError(
        503,
        "console_unavailable",
        "the web console runs with one worker (its sessions and review queue live in one process); "
        "start 'offramp serve' without --workers to use it",
    )


CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
PAGES = {"overview": "/ui", "review": "/ui/review", "models": "/ui/models", "report": "/ui/report"}
_STATIC = {"console.js": "text/javascript; charset=utf-8", "console.css": "text/css; charset=utf-8"}


def _state(request: Request) -> tuple[ClassificationService, Console, SessionStore]:
    app = request.app
    if not hasattr(app.state, "console"):
        app.state.console = Console(app.state.service)
        app.state.sessions = SessionStore()
    return app.state.service, app.state.console, app.state.sessions


def _keys_required(service: ClassificationService) -> bool:
    return bool(service.key_hashes or service.admin_hashes)


def _secured(resp: Response, csp: str = CSP) -> Response:
    resp.headers["Content-Security-Policy"] = csp
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "no-referrer"
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _set_cookie(resp: Response, session: Session, request: Request) -> None:
    service: ClassificationService = request.app.state.service
    # Secure behind TLS: said by the settings, or by a proxy on this machine (X-Forwarded-Proto)
    local_proxy = request.client is not None and request.client.host in ("127.0.0.1", "::1")
    secure = service.settings.behind_tls or (
        local_proxy and request.headers.get("x-forwarded-proto", "").strip().lower() == "https"
    )
    resp.set_cookie(
        COOKIE, session.token, max_age=int(TTL_S), path="/ui", httponly=True, samesite="strict", secure=secure
    )


def _session(request: Request, create: bool) -> tuple[Session | None, bool]:
    """(the request's session, whether it was made now). Without keys a visitor gets an anonymous
    session (admin only with --ui-admin-open); with keys only a login makes one."""
    service, _, sessions = _state(request)
    s = sessions.get(request.cookies.get(COOKIE))
    if s is not None:
        return s, False
    if create and not _keys_required(service):
        host = request.client.host if request.client else "unknown"
        wait = sessions.creation_wait(host)
        if wait > 0:
            raise ApiError(
                429,
                "too_many_sessions",
                f"too many new console sessions from {host}; keep the session cookie, or retry in {max(1, round(wait))} s",
                {"Retry-After": str(max(1, round(wait)))},
            )
        return sessions.create(service.settings.ui_admin_open, host), True
    return None, False


def _api_session(request: Request) -> Session:
    s, _ = _session(request, create=False)
    if s is None:
        raise ApiError(401, "login_required", "open /ui/login and sign in with a key (the console's session has ended)")
    return s


def _changing(request: Request) -> Session:
    """The checks of every request that changes something: a session, JSON, the CSRF token, an admin."""
    s = _api_session(request)
    require_json(request)
    if not csrf_ok(s, request.headers.get("x-csrf-token")):
        raise ApiError(
            403, "csrf_failed", "the request lacks this session's CSRF token (X-CSRF-Token); reload the page"
        )
    if not s.admin:
        service, _, _ = _state(request)
        how = (
            "sign in with an admin key (--admin-keys)"
            if _keys_required(service)
            else "start the service with --ui-admin-open"
        )
        raise ApiError(403, "admin_required", f"changing anything from the console needs an admin: {how}")
    return s


def _json(data: Any, status: int = 200) -> Response:
    return _secured(JSONResponse(data, status_code=status))


def _shell(page: str, session: Session, title: str, body: str = "") -> str:
    nav = "".join(
        f'<a href="{href}"{" class=active" if name == page else ""}>{name.capitalize()}</a>'
        for name, href in PAGES.items()
    )
    role = "admin" if session.admin else "read-only"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>offramp · {html.escape(title)}</title>
<meta name="csrf-token" content="{html.escape(session.csrf)}">
<link rel="stylesheet" href="/ui/static/console.css"></head>
<body data-page="{page}" data-admin="{str(session.admin).lower()}">
<header><strong>offramp</strong><nav>{nav}</nav><span class="role" id="role">{role}</span>
<form method="post" action="/ui/logout" class="logout"><button type="submit">Sign out</button></form></header>
<main id="main">{body}</main>
<div id="toast" role="status" aria-live="polite"></div>
<script src="/ui/static/console.js"></script>
</body></html>"""


def _page(request: Request, page: str, title: str, body: str = "") -> Response:
    s, new = _session(request, create=True)
    if s is None:
        return _secured(RedirectResponse("/ui/login", status_code=303))
    resp = _secured(HTMLResponse(_shell(page, s, title, body)))
    if new:
        _set_cookie(resp, s, request)
    return resp


@console.get("/ui")
def overview_page(request: Request) -> Response:
    return _page(request, "overview", "overview")


@console.get("/ui/review")
def review_page(request: Request) -> Response:
    return _page(request, "review", "review")


@console.get("/ui/models")
def models_page(request: Request) -> Response:
    return _page(request, "models", "models")


@console.get("/ui/report")
def report_page(request: Request) -> Response:
    return _page(request, "report", "report", '<iframe id="report" src="/ui/report/latest" title="report"></iframe>')


@console.get("/ui/report/latest")
def report_latest(request: Request) -> Response:
    _api_session(request)
    _, ops, _ = _state(request)
    page, style_hash = ops.report()
    csp = f"default-src 'none'; style-src {style_hash}; img-src data:; frame-ancestors 'self'; base-uri 'none'"
    return _secured(HTMLResponse(page), csp)


@console.get("/ui/static/{name}")
def static(name: str) -> Response:
    kind = _STATIC.get(name)
    if kind is None:
        raise ApiError(404, "not_found", f"no console asset {name!r}")
    body = resources.files("offramp.serving.console").joinpath("static").joinpath(name).read_bytes()
    resp = Response(body, media_type=kind)
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Cache-Control"] = "no-cache"
    return resp


# ---------------------------------------------------------------------- login
def _login_form(message: str = "", status: int = 200) -> Response:
    note = f'<p class="error" id="login-error">{html.escape(message)}</p>' if message else ""
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>offramp · sign in</title>
<link rel="stylesheet" href="/ui/static/console.css"></head>
<body class="login"><main><h1>offramp console</h1>{note}
<form method="post" action="/ui/login"><label for="key">API or admin key</label>
<input id="key" name="key" type="password" autocomplete="current-password" required autofocus>
<button type="submit" id="sign-in">Sign in</button></form>
<p class="muted">The key is exchanged for a session cookie; it is never put in a URL or stored.</p></main></body></html>"""
    return _secured(HTMLResponse(page, status_code=status))


@console.get("/ui/login")
def login_page(request: Request) -> Response:
    service, _, _ = _state(request)
    if not _keys_required(service):
        return _secured(RedirectResponse("/ui", status_code=303))
    return _login_form()


@console.post("/ui/login")
async def login(request: Request) -> Response:
    service, _, sessions = _state(request)
    if not _keys_required(service):
        return _secured(RedirectResponse("/ui", status_code=303))
    host = request.client.host if request.client else "unknown"
    wait = service.limiter.take(f"login:{host}")
    if wait > 0:
        return _login_form(f"too many attempts; try again in {max(1, round(wait))} s", 429)
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return _login_form("send the form from this page", 415)
    raw = await request.body()
    key = (parse_qs(raw.decode("utf-8", "replace")).get("key") or [""])[0].strip()
    admin = key_matches(key, service.admin_hashes) if key and service.admin_hashes else None
    user = key_matches(key, service.key_hashes) if key and service.key_hashes and admin is None else None
    if admin is None and user is None:
        return _login_form("unknown key: check it and try again", 401)
    s = sessions.create(admin is not None, str(admin or user))
    resp = _secured(RedirectResponse("/ui", status_code=303))
    _set_cookie(resp, s, request)
    return resp


@console.post("/ui/logout")
def logout(request: Request) -> Response:
    _, _, sessions = _state(request)
    sessions.drop(request.cookies.get(COOKIE))
    resp = _secured(RedirectResponse("/ui/login", status_code=303))
    resp.delete_cookie(COOKIE, path="/ui")
    return resp


# ---------------------------------------------------------------------- the console's API
@console.get("/ui/api/session")
def session_info(request: Request) -> Response:
    s = _api_session(request)
    return _json({"admin": s.admin, "csrf": s.csrf})


@console.get("/ui/api/overview")
def overview(request: Request) -> Response:
    _api_session(request)
    _, ops, _ = _state(request)
    return _json(ops.overview())


@console.get("/ui/api/review")
def review_items(request: Request) -> Response:
    _api_session(request)
    _, ops, _ = _state(request)
    q = request.query_params
    since = None
    if q.get("since"):
        try:
            since = datetime.fromisoformat(q["since"]).timestamp()
        except ValueError:
            raise ApiError(422, "invalid_request", f"since={q['since']!r} is not an ISO date or time") from None
    source = q.get("source") or None
    if source is not None and source not in ("unsure", "disagreed", "rejected"):
        raise ApiError(422, "invalid_request", "source must be unsure, disagreed or rejected")
    try:
        limit = int(q.get("limit") or 50)
    except ValueError:
        raise ApiError(422, "invalid_request", "limit must be a whole number") from None
    return _json(ops.review_items(q.get("label") or None, source, since, max(1, min(limit, 500))))


@console.post("/ui/api/review")
async def review(request: Request) -> Response:
    _changing(request)
    service, _, _ = _state(request)
    body = await read_body(request, FeedbackRequest)
    if service.review.get(body.request_id) is None:
        raise ApiError(
            404,
            "review_expired",
            "this message is no longer in the review queue (reviewed, or its feedback window ended)",
        )
    service.feedback(body.request_id, body.label.strip(), admin=True)  # _changing checked for an admin
    return _json({"status": "accepted", "request_id": body.request_id}, 202)


@console.get("/ui/api/models")
def models(request: Request) -> Response:
    _api_session(request)
    _, ops, _ = _state(request)
    return _json(ops.models())


@console.post("/ui/api/promote")
async def promote(request: Request) -> Response:
    _changing(request)
    _, ops, _ = _state(request)
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise ApiError(422, "invalid_request", "the body is not valid JSON") from None
    version = body.get("version") if isinstance(body, dict) else None
    if not isinstance(version, str):
        raise ApiError(422, "invalid_request", 'send {"version": "v0002"}')
    return _json(ops.promote(version))


@console.post("/ui/api/rollback")
def rollback(request: Request) -> Response:
    _changing(request)
    _, ops, _ = _state(request)
    return _json(ops.rollback())


@console.post("/ui/api/retrain")
def retrain_now(request: Request) -> Response:
    _changing(request)
    _, ops, _ = _state(request)
    return _json(ops.start_retrain(), 202)
