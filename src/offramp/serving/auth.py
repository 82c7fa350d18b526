"""API keys (stored as SHA-256 hashes, never in clear) and a per-key token-bucket rate limit."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from pathlib import Path

from offramp.errors import UsageError


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def load_key_hashes(path: str | Path) -> set[str]:
    """One SHA-256 hex digest per line (``#`` comments allowed); see ``offramp serve --help``."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"API key file {p} does not exist", "create it with: offramp hash-key KEY >> keys.txt")
    hashes = set()
    for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if len(line) != 64 or any(c not in "0123456789abcdef" for c in line.lower()):
            raise UsageError(
                f"{p} line {i} is not a SHA-256 hex digest", "store hashes, not keys: offramp hash-key KEY"
            )
        hashes.add(line.lower())
    if not hashes:
        raise UsageError(f"API key file {p} holds no key hashes")
    return hashes


def key_matches(key: str, hashes: set[str]) -> str | None:
    """The matching hash (used as the client's identity) or None; compared in constant time."""
    h = hash_key(key)
    for known in hashes:
        if hmac.compare_digest(h, known):
            return known
    return None


class RateLimiter:
    """Token bucket per client: ``per_minute`` requests a minute, bursts up to the same number."""

    def __init__(self, per_minute: float):
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, per_minute)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, client: str) -> float:
        """0 when the request may go ahead, else the seconds to wait before the next one."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(client, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[client] = (tokens - 1.0, now)
                return 0.0
            self._buckets[client] = (tokens, now)
            return (1.0 - tokens) / self.rate
