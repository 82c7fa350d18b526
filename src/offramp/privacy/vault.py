"""Reversible pseudonyms: the same value becomes the same ``<PERSON_1>`` within one conversation.

The mapping never leaves the machine. It lives in SQLite; with a key in the environment
(``OFFRAMP_VAULT_KEY`` by default) the original values are encrypted at rest with AES-GCM and looked
up by a keyed hash, so the file holds no value in clear. Entries expire ``ttl_s`` seconds after they
were made; an expired pseudonym is no longer turned back.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import threading
import time
from pathlib import Path

from offramp.errors import UsageError

KEY_ENV = "OFFRAMP_VAULT_KEY"
TOKEN = re.compile(r"<([A-Z][A-Z_]*)_(\d+)>")


class PseudonymVault:
    def __init__(
        self,
        path: str | Path,
        *,
        ttl_s: float = 86_400.0,
        key: str | None = None,
        key_env: str = KEY_ENV,
        clock=time.time,
    ):
        self.path = Path(path)
        if not ttl_s > 0:
            raise UsageError(
                f"the pseudonym time to live must be above 0 seconds, got {ttl_s}",
                "set ttl_s to how long a pseudonym may be turned back, e.g. 86400",
            )
        self.ttl_s = float(ttl_s)
        self._clock = clock
        secret = key if key is not None else os.environ.get(key_env)
        self.encrypted = bool(secret)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if tables and not {"meta", "pseudonyms"} <= tables:
                self._db.close()
                raise UsageError(
                    f"{self.path} is a SQLite file but not a pseudonym vault",
                    "point the vault setting at a new file or a vault offramp wrote",
                )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript("""
                CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT);
                CREATE TABLE IF NOT EXISTS pseudonyms (
                    conversation TEXT, entity TEXT, n INTEGER, digest TEXT, value BLOB, created REAL,
                    PRIMARY KEY (conversation, digest));
                CREATE UNIQUE INDEX IF NOT EXISTS by_token ON pseudonyms (conversation, entity, n);
            """)
        except sqlite3.DatabaseError as e:
            raise UsageError(
                f"cannot open the pseudonym vault {self.path}: {e}", "point the guard's vault at a writable SQLite file"
            ) from None
        mode = "encrypted" if self.encrypted else "plain"
        row = self._db.execute("SELECT v FROM meta WHERE k='mode'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('mode', ?)", (mode,))
            self._db.execute("INSERT INTO meta VALUES ('salt', ?)", (secrets.token_hex(16),))
        elif row[0] != mode:
            raise UsageError(
                f"the pseudonym vault {self.path} was written {row[0]}, but {key_env} is "
                f"{'set' if self.encrypted else 'not set'}",
                f"{'unset' if self.encrypted else 'set'} {key_env}, or use a new vault file",
            )
        salt = self._db.execute("SELECT v FROM meta WHERE k='salt'").fetchone()[0]
        material = (secret or "").encode()
        self._mac_key = hashlib.sha256(b"offramp-vault-mac\0" + material + salt.encode()).digest()
        self._aead = None
        if self.encrypted:
            try:
                from cryptography.hazmat.primitives.ciphers.aead import AESGCM
            except ImportError:
                raise UsageError(
                    f"{key_env} is set but the 'cryptography' package is missing", 'pip install "offramp[privacy]"'
                ) from None
            self._aead = AESGCM(hashlib.sha256(b"offramp-vault-enc\0" + material + salt.encode()).digest())
            if not self._key_matches():
                raise UsageError(
                    f"{key_env} does not open the pseudonym vault {self.path}",
                    "use the key it was written with, or a new vault file",
                )
        self.purge()

    def _key_matches(self) -> bool:
        probe = self._db.execute("SELECT v FROM meta WHERE k='probe'").fetchone()
        if probe is None:
            self._db.execute("INSERT INTO meta VALUES ('probe', ?)", (self._seal("offramp").hex(),))
            return True
        try:
            return self._open(bytes.fromhex(probe[0])) == "offramp"
        except Exception:
            return False

    def _seal(self, value: str) -> bytes:
        if self._aead is None:
            return value.encode("utf-8")
        nonce = secrets.token_bytes(12)
        return nonce + self._aead.encrypt(nonce, value.encode("utf-8"), None)

    def _open(self, blob: bytes) -> str:
        if self._aead is None:
            return bytes(blob).decode("utf-8")
        return self._aead.decrypt(bytes(blob[:12]), bytes(blob[12:]), None).decode("utf-8")

    def _digest(self, conversation: str, entity: str, value: str) -> str:
        return hmac.new(self._mac_key, f"{conversation}\0{entity}\0{value}".encode(), "sha256").hexdigest()

    def pseudonym(self, conversation: str, entity: str, value: str) -> str:
        """``<ENTITY_n>``: the same for the same value in the same conversation, new otherwise."""
        digest = self._digest(conversation, entity, value)
        with self._lock:
            row = self._db.execute(
                "SELECT n FROM pseudonyms WHERE conversation=? AND digest=?", (conversation, digest)
            ).fetchone()
            if row is None:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    n = self._db.execute(
                        "SELECT COALESCE(MAX(n), 0) + 1 FROM pseudonyms WHERE conversation=? AND entity=?",
                        (conversation, entity),
                    ).fetchone()[0]
                    self._db.execute(
                        "INSERT INTO pseudonyms VALUES (?, ?, ?, ?, ?, ?)",
                        (conversation, entity, n, digest, self._seal(value), self._clock()),
                    )
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            else:
                n = row[0]
        return f"<{entity}_{n}>"

    def reveal(self, conversation: str, text: str) -> str:
        """``text`` with every known, unexpired pseudonym of ``conversation`` turned back."""
        cutoff = self._clock() - self.ttl_s

        def back(m: re.Match) -> str:
            with self._lock:
                row = self._db.execute(
                    "SELECT value, created FROM pseudonyms WHERE conversation=? AND entity=? AND n=?",
                    (conversation, m.group(1), int(m.group(2))),
                ).fetchone()
            if row is None or row[1] < cutoff:
                return m.group()
            return self._open(row[0])

        return TOKEN.sub(back, text)

    def purge(self) -> int:
        """Delete the entries older than the time to live; returns how many."""
        with self._lock:
            cur = self._db.execute("DELETE FROM pseudonyms WHERE created < ?", (self._clock() - self.ttl_s,))
        return cur.rowcount

    def forget(self, conversation: str) -> int:
        """Delete one conversation's mapping now (say, on a request to erase it); returns how many."""
        with self._lock:
            return self._db.execute("DELETE FROM pseudonyms WHERE conversation=?", (conversation,)).rowcount

    def close(self) -> None:
        self._db.close()
