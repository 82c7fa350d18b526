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
    def __init__(self, max_sessions: int = 10_000, ttl_s: float = TTL_S):
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()
        self.max_sessions, self.ttl_s = max_sessions, ttl_s

    def create(self, admin: bool, ident: str) -> Session:
        s = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), admin, ident, time.time() + self.ttl_s)
        with self._lock:
            self._sessions[s.token] = s
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
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
