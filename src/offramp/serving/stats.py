"""What the console's overview shows, kept by the service as traffic flows.

Only classification traffic counts (``/v1/classify`` and ``/v1/chat/completions``): health checks,
metrics scrapes and the console's own calls do not. Everything is in memory and bounded: the last
2,000 request latencies, one-minute label volumes for the last hour, dollars saved per UTC day.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from datetime import datetime, timezone
from typing import Any

import numpy as np

MINUTES = 60


class TrafficStats:
    def __init__(self, clock=time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.requests = 0
        self.messages = 0
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

    def message(self, label: str, route: str, usd_saved: float) -> None:
        now = self._clock()
        minute = int(now // 60)
        if minute != self._day_minute:  # the UTC day, worked out once a minute rather than per message
            self._day_minute, self._day = minute, datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%d")
        day = self._day
        with self._lock:
            self.messages += 1
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

    def snapshot(self) -> dict[str, Any]:
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
                "messages": self.messages,
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
