"""``serve --workers N``: what the worker processes share, through a directory they all see.

uvicorn starts N processes that accept connections on one socket; each loads the model and answers
on its own. Three things must nevertheless be one:

* **metrics** — each worker writes a snapshot of its counters every half second
  (``metrics-PID.json``); ``/metrics`` on any worker adds its live counts to the others' latest
  snapshots, so a scrape sees the whole server (other workers' counts up to half a second old).
  Snapshots of workers that died stay counted, so counters never go down; gauges, which do not
  add up, carry a ``worker`` label.
* **reloads** — ``POST /v1/admin/reload`` reloads the worker that received it and bumps a
  generation number in ``reload``; every other worker sees the change within half a second and
  reloads too. Serving a registry, each worker's watcher picks up a promote or rollback itself.
* **the audit log** — one hash chain: every append holds the log's lock file from reading the
  chain's end to writing its anchor (see :mod:`offramp.audit.log`).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from offramp.serving.telemetry import MetricsSnapshot, Telemetry

log = logging.getLogger("offramp.serving")

WORKER_DIR_ENV = "OFFRAMP_WORKER_DIR"
SERVE_SPEC_ENV = "OFFRAMP_SERVE_SPEC"
PERIOD_S = 0.5


def listening_socket(host: str, port: int) -> socket.socket:
    """The socket N workers accept on, marked TCP. uvicorn's own (0.54) leaves the protocol at 0,
    so asyncio never sets TCP_NODELAY on the connections it accepts and every keep-alive request
    after the first waits ~40 ms for the client's delayed ACK (uvicorn issue #3149). Raises OSError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


class WorkerSync:
    def __init__(self, directory: str | os.PathLike[str], telemetry: Telemetry, on_reload: Callable[[], object]):
        self.dir = Path(directory)
        self.me = str(os.getpid())
        self.telemetry, self.on_reload = telemetry, on_reload
        self._seen = self._generation()
        self._stop = threading.Event()
        self.publish()
        threading.Thread(target=self._run, name="offramp-worker-sync", daemon=True).start()

    # ------------------------------------------------------------------ reloads
    def _generation(self) -> str:
        try:
            return (self.dir / "reload").read_text(encoding="utf-8").strip()
        except OSError:
            return "0"

    def request_reload(self) -> None:
        """Tell the other workers to reload (this one already has)."""
        with open(self.dir / "reload.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            n = int(self._generation() or 0) + 1
            tmp = self.dir / f".reload.{self.me}"
            tmp.write_text(str(n), encoding="utf-8")
            os.replace(tmp, self.dir / "reload")
            self._seen = str(n)

    # ------------------------------------------------------------------ metrics
    def publish(self) -> None:
        snap = self.telemetry.snapshot()
        snap["worker"] = self.me
        tmp = self.dir / f".metrics-{self.me}.json"
        tmp.write_text(json.dumps(snap), encoding="utf-8")
        os.replace(tmp, self.dir / f"metrics-{self.me}.json")

    def others(self) -> list[MetricsSnapshot]:
        snaps = []
        for path in sorted(self.dir.glob("metrics-*.json")):
            if path.name == f"metrics-{self.me}.json":
                continue
            try:
                snaps.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):  # being replaced this instant: its next snapshot counts
                continue
        return snaps

    def render(self) -> str:
        self.telemetry.drain()
        return self.telemetry.metrics.merged(self.others(), worker_label=self.me).render()

    # ------------------------------------------------------------------ the loop
    def _run(self) -> None:
        while not self._stop.wait(PERIOD_S):
            try:
                self.publish()
                gen = self._generation()
                if gen != self._seen:
                    self._seen = gen
                    self.on_reload()
            except Exception as e:  # keep serving; the next round tries again
                log.warning("worker sync: %s", getattr(e, "message", e))

    def close(self) -> None:
        self._stop.set()
