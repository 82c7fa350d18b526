"""Console sessions: a key typed once into the login form becomes an HttpOnly, SameSite=Strict
cookie naming a server-side session; keys never travel in URLs and are never stored.

Each session carries a CSRF token the console's pages send back in ``X-CSRF-Token`` on every
request that changes something; a request without it (or with another session's) is refused.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from offramp.serving.auth import RateLimiter

COOKIE = "offramp_session"
TTL_S = 8 * 3600


@dataclass
class Session:
    token: str
    csrf: str
    admin: bool
    ident: str
    expires: float


class SessionStore:
    """Sessions in memory, oldest first: expired ones are dropped as new ones are made, and past
    ``max_sessions`` the oldest go. Anonymous sessions (a console without keys) are made at most
    ``per_minute`` a minute per client address."""

    def __init__(self, max_sessions: int = 1_000, ttl_s: float = TTL_S, per_minute: float = 30.0):
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()
        self.max_sessions, self.ttl_s = max_sessions, ttl_s
        self._made = RateLimiter(per_minute)

    def __len__(self) -> int:
        return len(self._sessions)

    def creation_wait(self, client: str) -> float:
        """0 when ``client`` may have a new anonymous session now, else the seconds to wait."""
        return self._made.take(client)

    def create(self, admin: bool, ident: str) -> Session:
        now = time.time()
        s = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), admin, ident, now + self.ttl_s)
        with self._lock:
            sessions = self._sessions
            while sessions and next(iter(sessions.values())).expires < now:  # all live equally long: oldest first
                sessions.popitem(last=False)
            sessions[s.token] = s
            while len(sessions) > self.max_sessions:
                sessions.popitem(last=False)
        return s

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        with self._lock:
            s = self._sessions.get(token)
            if s is None:
                return None
            if s.expires < time.time():
                self._sessions.pop(token, None)
                return None
            return s

    def drop(self, token: str | None) -> None:
        if token:
            with self._lock:
                self._sessions.pop(token, None)


def csrf_ok(session: Session, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(session.csrf, sent or "")
