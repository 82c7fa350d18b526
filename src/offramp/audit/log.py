"""The audit log: append-only, hash-chained, in SQLite (WAL).

Each record carries the MAC of the one before it: ``mac = HMAC(key, seq | prev_mac | body)``. The
key comes from ``OFFRAMP_AUDIT_KEY`` or, without it, from a key file made beside the log on first
use (``<log>.key``, readable by its owner only). Without the key nobody can rewrite the chain so
that it verifies again, and :func:`verify` names the first record that was edited, deleted,
inserted or moved. A head row (last sequence number and its MAC, itself MACed) catches records
cut from the end.

A record never holds the text: only a keyed hash of it, the decision, the route, the endpoint the
text went to (if it left) and the counts of personal data found. :meth:`AuditLog.append` returns
after the record is committed with ``synchronous=FULL``: a record it acknowledged survives a crash.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, TextIO, TypeVar

from offramp.errors import DataError, UsageError
from offramp.formats import csv_safe
from offramp.types import JSONDict

T = TypeVar("T")

KEY_ENV = "OFFRAMP_AUDIT_KEY"
GENESIS = "0" * 64
FIELDS = (
    "time",
    "request_id",
    "model",
    "model_version",
    "decision",
    "confidence",
    "route",
    "endpoint",
    "text_hmac",
    "pii",
    "flags",
    "action",
)
OPTIONAL_FIELDS = ("path",)  # a chain: the stages a message went through (stage, label, confidence, route, version)


def _retry_locked(fn: Callable[[], T], tries: int = 50) -> T:
    """``fn()``, tried again while another process holds the database (concurrent first creation)."""
    for _ in range(tries - 1):
        try:
            return fn()
        except sqlite3.OperationalError as e:
            if "locked" not in str(e):
                raise
            time.sleep(0.05)
    return fn()


def _canonical(body: dict) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _read_key_file(kf: Path, key_env: str) -> bytes:
    key = b""
    for _ in range(50):  # another process may be writing it this very moment (concurrent first creation)
        try:
            key = bytes.fromhex(kf.read_text(encoding="ascii").strip())
        except (ValueError, UnicodeDecodeError, OSError):
            key = b""
        if len(key) >= 16:
            return key
        time.sleep(0.02)
    raise UsageError(
        f"the audit log's key file {kf} does not hold a key (hex, at least 16 bytes)",
        f"restore the key file the log was written with, or set {key_env}",
    )


def _has_records(path: Path) -> bool:
    """True if ``path`` is a SQLite file whose records table holds a row (read-only look)."""
    if not path.is_file() or path.stat().st_size == 0:
        return False
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            return con.execute("SELECT 1 FROM records LIMIT 1").fetchone() is not None
        finally:
            con.close()
    except sqlite3.DatabaseError:
        return False


def _load_key(path: Path, key_env: str, create: bool) -> bytes:
    env = os.environ.get(key_env)
    if env:
        return hashlib.sha256(env.encode("utf-8")).digest()
    kf = path.with_name(path.name + ".key")
    if not kf.exists() and create and (_has_records(path) or path.with_name(path.name + ".anchor").exists()):
        # a new key would make every existing record look forged: refuse instead
        raise UsageError(
            f"the audit log {path} has records but its key file {kf} is missing",
            f"restore the key file, or set {key_env} to the key the log was written with",
        )
    if kf.exists():
        return _read_key_file(kf, key_env)
    if not create:
        raise UsageError(
            f"no key for the audit log {path}: neither {key_env} nor {kf} exists",
            f"set {key_env} to the key the log was written with",
        )
    key = secrets.token_bytes(32)
    tmp = kf.with_name(f".{kf.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.hex() + "\n")
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, kf)  # appears whole or not at all; the first of several creators wins
    except FileExistsError:
        return _read_key_file(kf, key_env)
    finally:
        os.unlink(tmp)
    return key


class AuditLog:
    def __init__(self, path: str | Path, *, key_env: str = KEY_ENV, create: bool = True):
        self.path = Path(path)
        if not create and not self.path.exists():
            raise UsageError(f"no audit log at {self.path}", "give the path of an audit log written by offramp serve")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._key = _load_key(self.path, key_env, create)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if tables and not {"records", "head"} <= tables or not tables and not create:
                self._db.close()
                raise DataError(
                    f"{self.path} is a SQLite file but not an offramp audit log",
                    "give the path of an audit log written by offramp serve, or a new file",
                )
            _retry_locked(lambda: self._db.execute("PRAGMA journal_mode=WAL"))
            self._db.execute("PRAGMA synchronous=FULL")
            # both tables in one transaction: a process opening the log meanwhile sees none or both
            _retry_locked(
                lambda: self._db.executescript("""
                BEGIN IMMEDIATE;
                CREATE TABLE IF NOT EXISTS records (seq INTEGER PRIMARY KEY, prev TEXT NOT NULL,
                                                    body TEXT NOT NULL, mac TEXT NOT NULL);
                CREATE TABLE IF NOT EXISTS head (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER,
                                                 mac TEXT, seal TEXT);
                COMMIT;
            """)
            )
        except sqlite3.DatabaseError as e:
            raise DataError(
                f"{self.path} is not a usable audit log ({e})",
                "point the audit setting at a new file or an audit log offramp wrote",
            ) from None
        self._text_key = hmac.new(self._key, b"offramp-audit-text", "sha256").digest()
        self._lock = threading.Lock()
        self.anchor_path = self.path.with_name(self.path.name + ".anchor")
        self._lock_file: TextIO | None = None  # opened at the first append: several processes may write one chain

    # ------------------------------------------------------------------ the anchor
    def _anchor_seal(self, seq: int, mac: str) -> str:
        return hmac.new(self._key, f"anchor|{seq}|{mac}".encode(), "sha256").hexdigest()

    def _write_anchor(self, seq: int, mac: str) -> None:
        """Keep the chain's length and last MAC outside the database, sealed with the key: a log
        emptied or cut inside SQLite no longer matches it."""
        data = json.dumps({"seq": seq, "mac": mac, "seal": self._anchor_seal(seq, mac)}).encode()
        tmp = self.anchor_path.with_name(f".{self.anchor_path.name}.{os.getpid()}.{threading.get_ident()}")
        tmp.write_bytes(data)
        os.replace(tmp, self.anchor_path)

    def _read_anchor(self) -> tuple[int, str] | None | str:
        """(seq, mac) of the anchor; None without one; a message if it is damaged or sealed by another key."""
        try:
            doc = json.loads(self.anchor_path.read_text(encoding="utf-8"))
            seq, mac, seal = int(doc["seq"]), str(doc["mac"]), str(doc["seal"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return f"the anchor file {self.anchor_path.name} is damaged"
        if not hmac.compare_digest(self._anchor_seal(seq, mac), seal):
            return f"the anchor file {self.anchor_path.name} does not match the key (another key, or it was edited)"
        return seq, mac

    def check_continuable(self) -> None:
        """Refuse (UsageError) a log this key cannot continue: its head sealed with another key, or
        fewer records than its anchor says it had (emptied or cut). Cheap: the head and one record."""
        head = self._db.execute("SELECT seq, mac, seal FROM head WHERE id = 1").fetchone()
        last = self._db.execute("SELECT seq, mac FROM records ORDER BY seq DESC LIMIT 1").fetchone()
        fix = f"restore the log and its key (or {KEY_ENV}), or start a new log"
        if head is not None and not hmac.compare_digest(self._seal(head[0], head[1]), head[2] or ""):
            raise UsageError(f"the audit log {self.path} was written with another key, or its head was edited", fix)
        anchor = self._read_anchor()
        if isinstance(anchor, str):
            raise UsageError(f"the audit log {self.path}: {anchor}", fix)
        count = last[0] if last else 0
        if anchor is not None and anchor[0] > count:
            raise UsageError(
                f"the audit log {self.path} held {anchor[0]} records but now holds {count}: it was emptied or cut", fix
            )
        if last is not None and head is not None and (head[0], head[1]) != (last[0], last[1]):
            raise UsageError(f"the audit log {self.path} ends at record {last[0]} but its head says {head[0]}", fix)

    # ------------------------------------------------------------------ writing
    def text_hmac(self, text: str) -> str:
        return hmac.new(self._text_key, text.encode("utf-8", "surrogatepass"), "sha256").hexdigest()

    def _mac(self, seq: int, prev: str, body: str) -> str:
        return hmac.new(self._key, f"{seq}|{prev}|{body}".encode(), "sha256").hexdigest()

    def _seal(self, seq: int, mac: str) -> str:
        return hmac.new(self._key, f"head|{seq}|{mac}".encode(), "sha256").hexdigest()

    def record(self, **fields) -> dict:
        """A record body with the time filled in and unknown fields refused."""
        unknown = set(fields) - set(FIELDS) - set(OPTIONAL_FIELDS)
        if unknown:
            raise ValueError(f"unknown audit field(s): {', '.join(sorted(unknown))}")
        body = {k: fields.get(k) for k in FIELDS}
        for k in OPTIONAL_FIELDS:  # kept only when set, so other records stay as they were
            if fields.get(k) is not None:
                body[k] = fields[k]
        if body["time"] is None:
            body["time"] = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        return body

    def append_many(self, bodies: list[dict]) -> list[int]:
        """Append records in one transaction; returns their sequence numbers once committed."""
        if not bodies:
            return []
        with self._lock, self._across_processes():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT seq, mac FROM records ORDER BY seq DESC LIMIT 1").fetchone()
                seq, prev = row if row else (0, GENESIS)
                seqs = []
                for body in bodies:
                    seq += 1
                    text = _canonical(body)
                    mac = self._mac(seq, prev, text)
                    self._db.execute("INSERT INTO records VALUES (?, ?, ?, ?)", (seq, prev, text, mac))
                    prev = mac
                    seqs.append(seq)
                self._db.execute("INSERT OR REPLACE INTO head VALUES (1, ?, ?, ?)", (seq, prev, self._seal(seq, prev)))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._write_anchor(seq, prev)
        return seqs

    def append(self, body: dict) -> int:
        return self.append_many([body])[0]

    @contextmanager
    def _across_processes(self) -> Iterator[None]:
        """Hold the log's lock file from reading the chain's end to writing the anchor, so that
        processes appending to one log (serve --workers) leave one chain and an anchor that
        names its true end (SQLite alone would order the records but not the anchor writes)."""
        if self._lock_file is None:
            self._lock_file = open(self.path.with_name(self.path.name + ".lock"), "a")
        fcntl.flock(self._lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)

    # ------------------------------------------------------------------ reading
    def records(self):
        yield from self._db.execute("SELECT seq, prev, body, mac FROM records ORDER BY seq")

    def verify(self) -> Verdict:
        expected, prev, n = 1, GENESIS, 0
        for seq, stored_prev, body, mac in self.records():
            if seq != expected:
                what = "deleted" if seq > expected else "duplicated"
                return Verdict(
                    False,
                    n,
                    seq,
                    f"record {expected} is missing: the chain jumps from {expected - 1} to {seq} (a record was {what})",
                )
            if stored_prev != prev:
                return Verdict(
                    False,
                    n,
                    seq,
                    f"record {seq} does not link to record {seq - 1} "
                    "(a record was inserted, removed or moved before it)",
                )
            if not hmac.compare_digest(self._mac(seq, stored_prev, body), mac):
                return Verdict(
                    False,
                    n,
                    seq,
                    f"record {seq} does not match its MAC (it was edited, or moved, "
                    "or the key is not the one the log was written with)",
                )
            prev, expected, n = mac, expected + 1, n + 1
        anchor = self._read_anchor()
        if isinstance(anchor, str):
            return Verdict(False, n, None, anchor)
        if anchor is not None and anchor[0] > n:
            return Verdict(
                False,
                n,
                None,
                f"the log holds {n} records but its anchor says it held {anchor[0]}: it was emptied or cut",
            )
        if anchor is not None and anchor[0] == n and n and anchor[1] != prev:
            return Verdict(False, n, None, "the log's last record does not match its anchor (it was replaced)")
        head = self._db.execute("SELECT seq, mac, seal FROM head WHERE id = 1").fetchone()
        if head is None:
            if n:
                return Verdict(False, n, None, "the log's head row is missing (it was removed)")
            return Verdict(True, 0, None, "the log is empty")
        hseq, hmac_, seal = head
        if not hmac.compare_digest(self._seal(hseq, hmac_), seal or ""):
            return Verdict(False, n, None, "the log's head row does not match its seal (it was edited)")
        if hseq != n or hmac_ != prev:
            return Verdict(
                False, n, None, f"the log ends at record {n} but its head says {hseq}: records were cut from the end"
            )
        return Verdict(True, n, None, f"{n} records, chain intact")

    def close(self) -> None:
        self._db.close()


@dataclass
class Verdict:
    ok: bool
    records: int
    first_bad: int | None
    message: str


class AuditWriter:
    """Group commit for a busy server: callers wait for their record to be committed, records
    that arrive while a commit is in flight share the next one."""

    def __init__(self, log: AuditLog, max_batch: int = 512):
        self.log = log
        self.max_batch = max_batch
        self._cv = threading.Condition()
        self._pending: list[tuple[JSONDict, Callable[[int | BaseException], None]]] = []
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="offramp-audit", daemon=True)
        self._thread.start()

    def submit(self, body: JSONDict, callback: Callable[[int | BaseException], None]) -> None:
        """Queue ``body``; ``callback(seq or exception)`` is called from the writer thread once committed."""
        with self._cv:
            if self._closed:
                raise RuntimeError("the audit writer is closed")
            self._pending.append((body, callback))
            self._cv.notify()

    def write(self, body: dict, timeout: float = 30.0) -> int:
        """Append ``body`` and wait for the commit; returns its sequence number."""
        done, box = threading.Event(), list[int | BaseException]()

        def settle(result: int | BaseException) -> None:
            box.append(result)
            done.set()

        self.submit(body, settle)
        if not done.wait(timeout):
            raise TimeoutError("the audit log did not commit in time")
        result = box[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self._closed:
                    self._cv.wait()
                if not self._pending and self._closed:
                    return
                batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            try:
                results: list[int | BaseException] = list(self.log.append_many([b for b, _ in batch]))
            except BaseException as e:  # every waiter hears of the failure
                results = [e] * len(batch)
            for (_, callback), result in zip(batch, results):
                callback(result)

    def close(self, timeout: float = 30.0) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join(timeout)


def export(log: AuditLog, out: Path) -> dict:
    """Write every record (JSONL or CSV) and return a summary for the auditor."""
    import csv

    fmt = out.suffix.lower()
    if fmt not in (".jsonl", ".csv"):
        raise UsageError(f"{out} must end in .jsonl or .csv", param="out")
    routes: dict[str, int] = {}
    endpoints: dict[str, int] = {}
    requests = left = pii = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8", newline="") as f:
        w: csv.DictWriter[str] | None = None
        if fmt == ".csv":
            w = csv.DictWriter(f, fieldnames=["seq", *FIELDS, "prev", "mac"])
            w.writeheader()
        for seq, prev, body, mac in log.records():
            rec = {"seq": seq, **json.loads(body), "prev": prev, "mac": mac}
            requests += 1
            route = rec.get("route") or "?"
            routes[route] = routes.get(route, 0) + 1
            if rec.get("endpoint"):
                left += 1
                endpoints[rec["endpoint"]] = endpoints.get(rec["endpoint"], 0) + 1
            pii += sum((rec.get("pii") or {}).values())
            if w is None:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            else:
                w.writerow({k: csv_safe(json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in rec.items()})
    return {"requests": requests, "left_machine": left, "routes": routes, "endpoints": endpoints, "pii_found": pii}


def read_bodies(path: str | Path) -> list[dict[str, Any]] | None:
    """The records of an audit log, oldest first, read without its key (the bodies are not secret;
    their chain is checked by :meth:`AuditLog.verify`); None if ``path`` is not an offramp audit log."""
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if not {"records", "head"} <= tables:
                return None
            return [json.loads(b) for (b,) in con.execute("SELECT body FROM records ORDER BY seq")]
        finally:
            con.close()
    except sqlite3.DatabaseError:
        return None
