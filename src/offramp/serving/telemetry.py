"""What the service counts: a small Prometheus registry (:class:`Metrics`), the console's traffic
figures (:class:`TrafficStats`), and :class:`Telemetry`, the one object the request path feeds.

The request path never takes a lock per message: a request's endpoint, status and latency are
appended to a queue (an atomic append) and folded into the counters when someone reads them (a
scrape, the console) or when the queue grows long; a batch of decisions is counted in one step
under one lock.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections import OrderedDict, defaultdict, deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, TypedDict

import numpy as np

from offramp.types import JSONDict

Key = tuple[str, tuple[tuple[str, object], ...]]  # a metric: its name and its sorted labels
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def _labels(pairs: tuple[tuple[str, object], ...]) -> str:
    if not pairs:
        return ""
    inner = ",".join(
        f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34)).replace(chr(10), " ")}"'
        for k, v in pairs
    )
    return "{" + inner + "}"


def _label_key(pairs: list[tuple[str, object]]) -> tuple[tuple[str, object], ...]:
    """Labels read back from a snapshot (JSON gives ``[key, value]`` lists) as a metric's key."""
    return tuple(sorted(((str(k), v) for k, v in pairs), key=lambda kv: kv[0]))


class MetricsSnapshot(TypedDict, total=False):
    """A process's counts as JSON (what a worker publishes for the others): ``[name, [[key, value],
    ...], value]`` per counter and gauge, the histogram's buckets, sum and count."""

    counters: list[tuple[str, list[tuple[str, object]], float]]
    gauges: list[tuple[str, list[tuple[str, object]], float]]
    hist: list[int]
    hist_sum: float
    hist_count: int
    worker: str


class Metrics:
    """Thread-safe counters keyed by (name, labels) and a request-latency histogram."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[Key, float] = defaultdict(float)
        self._hist = [0] * (len(BUCKETS) + 1)
        self._hist_sum = 0.0
        self._hist_count = 0
        self._gauges: dict[Key, float] = {}
        self._help = {
            "offramp_shadow_compared_total": "messages answered by both the small model and the LLM, by local label",
            "offramp_shadow_agreed_total": "of those, the messages where the LLM gave the local label",
            "offramp_shadow_agreement_ratio": "agreed / compared, by local label",
            "offramp_shadow_dropped_total": "local_first messages not sent to the LLM because its queue was full",
            "offramp_drift_psi": "population stability index of live traffic against the training reference",
            "offramp_drift_rate_change": "don't-know and fallback rates of live traffic minus the training reference's",
            "offramp_capture_rows_total": "rows queued for the capture pool, by source",
            "offramp_feedback_total": "corrections received, by outcome",
            "offramp_proxy_requests_total": "proxy mode: chat requests answered here (local) or forwarded to the upstream",
            "offramp_proxy_forwarded_total": "proxy mode: requests forwarded to the upstream, by reason",
            "offramp_proxy_upstream_down_total": "proxy mode, shadow: task requests answered here because the upstream could not be reached",
            "offramp_requests_total": "HTTP requests by endpoint and status code",
            "offramp_decisions_total": "classified messages by route (local, llm, refused)",
            "offramp_labels_total": "classified messages by final label",
            "offramp_estimated_usd_saved_total": "estimated dollars not spent on the configured LLM",
            "offramp_model_reloads_total": "model reloads by outcome",
            "offramp_model_calls_total": "calls to the small model (messages that arrive together share one)",
            "offramp_stage_decisions_total": "a chain: messages each stage answered, by stage and route",
            "offramp_stage_seconds_total": "a chain: seconds each stage spent on its batches (divide by messages for the mean)",
            "offramp_stage_messages_total": "a chain: messages each stage worked on (guard, actions and checks included)",
            "offramp_stage_shadow_compared_total": "a chain in shadow: a stage's local answers the LLM also answered, by stage and local label",
            "offramp_stage_shadow_agreed_total": "a chain in shadow: of them, those where the LLM gave the same label",
        }

    def inc(self, name: str, value: float = 1.0, **labels: object) -> None:
        with self._lock:
            self._counters[(name, tuple(sorted(labels.items())))] += value

    def set(self, name: str, value: float, **labels: object) -> None:
        """Set a gauge."""
        with self._lock:
            self._gauges[(name, tuple(sorted(labels.items())))] = value

    def get(self, name: str, **labels: object) -> float | None:
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            return self._gauges.get(key, self._counters.get(key))

    def series(self, name: str) -> list[tuple[dict[str, str], float]]:
        """Every counter of ``name``: its labels and its value."""
        with self._lock:
            return [
                ({str(k): str(v) for k, v in pairs}, value) for (n, pairs), value in self._counters.items() if n == name
            ]

    def observe(self, seconds: float) -> None:
        with self._lock:
            self._observe(seconds)

    def _observe(self, seconds: float) -> None:  # with the lock held
        self._hist[bisect_left(BUCKETS, seconds)] += 1
        self._hist_sum += seconds
        self._hist_count += 1

    def snapshot(self) -> MetricsSnapshot:
        """This process's counts, as JSON-ready lists (what a worker publishes for the others)."""
        with self._lock:
            return {
                "counters": [(n, list(pairs), v) for (n, pairs), v in self._counters.items()],
                "gauges": [(n, list(pairs), v) for (n, pairs), v in self._gauges.items()],
                "hist": list(self._hist),
                "hist_sum": self._hist_sum,
                "hist_count": self._hist_count,
            }

    def merged(self, others: list[MetricsSnapshot], worker_label: str | None = None) -> Metrics:
        """A registry holding this one's counts plus ``others``' (snapshots of other processes):
        counters and the histogram add up; gauges, which do not, get a ``worker`` label each."""
        total = Metrics()
        mine = self.snapshot()
        for i, snap in enumerate([mine, *others]):
            label = (worker_label if i == 0 else snap.get("worker")) or str(i)
            for n, pairs, v in snap["counters"]:
                total._counters[(n, _label_key(pairs))] += float(v)
            for n, pairs, v in snap["gauges"]:
                total._gauges[(n, _label_key([*pairs, ("worker", label)]))] = float(v)
            total._hist = [a + int(b) for a, b in zip(total._hist, snap["hist"])]
            total._hist_sum += float(snap["hist_sum"])
            total._hist_count += int(snap["hist_count"])
        return total

    def render(self) -> str:
        with self._lock:
            lines = []
            gauges = {n for n, _ in self._gauges}
            names = sorted({n for n, _ in self._counters} | set(self._help) - {"offramp_model_reloads_total"} - gauges)
            for name in names:
                if name in ("offramp_drift_psi", "offramp_drift_rate_change", "offramp_shadow_agreement_ratio"):
                    continue  # gauges: listed once they have a value
                lines.append(f"# HELP {name} {self._help.get(name, name)}")
                lines.append(f"# TYPE {name} counter")
                for (n, pairs), v in sorted(self._counters.items()):
                    if n == name:
                        lines.append(f"{name}{_labels(pairs)} {v:g}")
            for name in sorted(gauges):
                lines.append(f"# HELP {name} {self._help.get(name, name)}")
                lines.append(f"# TYPE {name} gauge")
                for (n, pairs), v in sorted(self._gauges.items()):
                    if n == name:
                        lines.append(f"{name}{_labels(pairs)} {v:g}")
            lines.append("# HELP offramp_request_seconds time to answer a classify or chat request")
            lines.append("# TYPE offramp_request_seconds histogram")
            cum = 0
            for b, c in zip(BUCKETS, self._hist):
                cum += c
                lines.append(f'offramp_request_seconds_bucket{{le="{b:g}"}} {cum}')
            lines.append(f'offramp_request_seconds_bucket{{le="+Inf"}} {self._hist_count}')
            lines.append(f"offramp_request_seconds_sum {self._hist_sum:.6f}")
            lines.append(f"offramp_request_seconds_count {self._hist_count}")
            return "\n".join(lines) + "\n"


MINUTES = 60


class TrafficStats:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.requests = 0
        self.messages_count = 0
        self.routes: dict[str, int] = {}
        self._latency: deque[float] = deque(maxlen=2000)
        self._minutes: OrderedDict[int, dict[str, int]] = OrderedDict()  # minute -> label counts
        self._saved_by_day: dict[str, float] = {}
        self.started = clock()
        self._day_minute, self._day = -1, ""

    def request(self, seconds: float) -> None:
        with self._lock:
            self.requests += 1
            self._latency.append(seconds)

    def messages(self, outcomes: list[tuple[str, str, float]]) -> None:
        """(label, route, dollars saved) of a batch of decided messages, counted in one step."""
        now = self._clock()
        minute = int(now // 60)
        if minute != self._day_minute:
            self._day_minute, self._day = minute, datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%d")
        day = self._day
        with self._lock:
            bucket = self._minutes.get(minute)
            if bucket is None:
                bucket = self._minutes[minute] = {}
                while len(self._minutes) > MINUTES:
                    self._minutes.popitem(last=False)
            saved = 0.0
            for label, route, usd in outcomes:
                self.routes[route] = self.routes.get(route, 0) + 1
                bucket[label] = bucket.get(label, 0) + 1
                saved += usd
            self.messages_count += len(outcomes)
            if saved:
                self._saved_by_day[day] = self._saved_by_day.get(day, 0.0) + saved
                if len(self._saved_by_day) > 400:
                    self._saved_by_day.pop(min(self._saved_by_day))

    def message(self, label: str, route: str, usd_saved: float) -> None:
        now = self._clock()
        minute = int(now // 60)
        if minute != self._day_minute:  # the UTC day, worked out once a minute rather than per message
            self._day_minute, self._day = minute, datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%d")
        day = self._day
        with self._lock:
            self.messages_count += 1
            self.routes[route] = self.routes.get(route, 0) + 1
            bucket = self._minutes.get(minute)
            if bucket is None:
                bucket = self._minutes[minute] = {}
                while len(self._minutes) > MINUTES:
                    self._minutes.popitem(last=False)
            bucket[label] = bucket.get(label, 0) + 1
            if usd_saved:
                self._saved_by_day[day] = self._saved_by_day.get(day, 0.0) + usd_saved
                if len(self._saved_by_day) > 400:
                    self._saved_by_day.pop(min(self._saved_by_day))

    def snapshot(self) -> JSONDict:
        now = self._clock()
        today = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%d")
        month = today[:7]
        this_minute = int(now // 60)
        with self._lock:
            lat = np.array(self._latency) * 1000 if self._latency else None
            minutes = [m for m in range(this_minute - MINUTES + 1, this_minute + 1)]
            labels = sorted({lab for c in self._minutes.values() for lab in c})
            series = {lab: [self._minutes.get(m, {}).get(lab, 0) for m in minutes] for lab in labels}
            total = sum(self.routes.values())
            return {
                "requests": self.requests,
                "messages": self.messages_count,
                "routes": {r: self.routes.get(r, 0) for r in ("local", "llm", "refused")},
                "shares": {r: (self.routes.get(r, 0) / total if total else 0.0) for r in ("local", "llm", "refused")},
                "latency_ms": None
                if lat is None
                else {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)), "n": int(len(lat))},
                "usd_saved": {
                    "today": self._saved_by_day.get(today, 0.0),
                    "month": sum(v for d, v in self._saved_by_day.items() if d.startswith(month)),
                },
                "volumes": {"minutes": [m * 60 for m in minutes], "series": series},
                "since": self.started,
            }


@dataclass
class Outcome:
    """What one decided message adds to the counts."""

    label: str
    route: str
    usd_saved: float
    pii: dict[str, int]
    egress: bool
    internal_error: bool
    stages: tuple[tuple[str, str], ...] = ()  # a chain: (stage, route) for each stage that answered


class Telemetry:
    """The one object the request path feeds: the Prometheus registry, the console's traffic
    figures, and request events queued without a lock (see the module docstring)."""

    TIMED = ("/v1/classify", "/v1/chat/completions")
    MAX_QUEUED = 4096  # request events folded in once this many wait

    def __init__(self, metrics: Metrics | None = None, stats: TrafficStats | None = None) -> None:
        self.metrics = metrics or Metrics()
        self.stats = stats or TrafficStats()
        self._requests: deque[tuple[str, int, float]] = deque()
        self._drain_lock = threading.Lock()

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        """A request answered: one atomic append (folded into the counters later)."""
        self._requests.append((endpoint, status, seconds))
        if len(self._requests) > self.MAX_QUEUED:
            self.drain()

    def drain(self) -> None:
        """Fold the queued request events into the counters, the histogram and the console's latency."""
        with self._drain_lock:
            q = self._requests
            events = [q.popleft() for _ in range(len(q))]
        if not events:
            return
        m, st = self.metrics, self.stats
        counts: dict[tuple[str, int], int] = {}
        timed = []
        for endpoint, status, seconds in events:
            counts[(endpoint, status)] = counts.get((endpoint, status), 0) + 1
            if endpoint in self.TIMED:
                timed.append((status, seconds))
        with m._lock:
            for (endpoint, status), n in counts.items():
                m._counters[("offramp_requests_total", (("endpoint", endpoint), ("status", status)))] += n
            for _, seconds in timed:
                m._observe(seconds)
        ok = [seconds for status, seconds in timed if status < 400]
        if ok:
            with st._lock:
                st.requests += len(ok)
                st._latency.extend(ok)

    def decided(self, outcomes: list[Outcome]) -> None:
        """A batch of decided messages (one small-model call), counted under one lock."""
        m = self.metrics
        with m._lock:
            c = m._counters
            c[("offramp_model_calls_total", ())] += 1
            for o in outcomes:
                c[("offramp_decisions_total", (("route", o.route),))] += 1
                c[("offramp_labels_total", (("label", o.label),))] += 1
                if o.internal_error:  # logged with the request id by the cascade
                    c[("offramp_cascade_errors_total", ())] += 1
                if o.usd_saved:
                    c[("offramp_estimated_usd_saved_total", ())] += o.usd_saved
                for kind, n in o.pii.items():
                    c[("offramp_pii_found_total", (("entity", kind),))] += n
                if o.egress:
                    c[("offramp_egress_total", ())] += 1
                for stage, route in o.stages:
                    c[("offramp_stage_decisions_total", (("route", route), ("stage", stage)))] += 1
        self.stats.messages([(o.label, o.route, o.usd_saved) for o in outcomes])

    def render(self) -> str:
        self.drain()
        return self.metrics.render()

    def snapshot(self) -> MetricsSnapshot:
        self.drain()
        return self.metrics.snapshot()

    def traffic(self) -> JSONDict:
        """What the console's overview shows."""
        self.drain()
        return self.stats.snapshot()
