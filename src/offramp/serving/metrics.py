"""A small Prometheus registry: counters and one latency histogram, in the text exposition format."""

from __future__ import annotations

import threading
from collections import defaultdict

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def _labels(pairs: tuple) -> str:
    if not pairs:
        return ""
    inner = ",".join(
        f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34)).replace(chr(10), " ")}"'
        for k, v in pairs
    )
    return "{" + inner + "}"


class Metrics:
    """Thread-safe counters keyed by (name, labels) and a request-latency histogram."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[tuple, float] = defaultdict(float)
        self._hist = [0] * (len(BUCKETS) + 1)
        self._hist_sum = 0.0
        self._hist_count = 0
        self._gauges: dict[tuple, float] = {}
        self._help = {
            "offramp_shadow_compared_total": "messages answered by both the small model and the LLM, by local label",
            "offramp_shadow_agreed_total": "of those, the messages where the LLM gave the local label",
            "offramp_shadow_agreement_ratio": "agreed / compared, by local label",
            "offramp_shadow_dropped_total": "local_first messages not sent to the LLM because its queue was full",
            "offramp_drift_psi": "population stability index of live traffic against the training reference",
            "offramp_drift_rate_change": "don't-know and fallback rates of live traffic minus the training reference's",
            "offramp_capture_rows_total": "rows queued for the capture pool, by source",
            "offramp_feedback_total": "corrections received, by outcome",
            "offramp_requests_total": "HTTP requests by endpoint and status code",
            "offramp_decisions_total": "classified messages by route (local, llm, refused)",
            "offramp_labels_total": "classified messages by final label",
            "offramp_estimated_usd_saved_total": "estimated dollars not spent on the configured LLM",
            "offramp_model_reloads_total": "model reloads by outcome",
            "offramp_model_calls_total": "calls to the small model (messages that arrive together share one)",
        }

    def inc(self, name: str, value: float = 1.0, **labels) -> None:
        with self._lock:
            self._counters[(name, tuple(sorted(labels.items())))] += value

    def set(self, name: str, value: float, **labels) -> None:
        """Set a gauge."""
        with self._lock:
            self._gauges[(name, tuple(sorted(labels.items())))] = value

    def get(self, name: str, **labels) -> float | None:
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            return self._gauges.get(key, self._counters.get(key))

    def observe(self, seconds: float) -> None:
        with self._lock:
            i = next((k for k, b in enumerate(BUCKETS) if seconds <= b), len(BUCKETS))
            self._hist[i] += 1
            self._hist_sum += seconds
            self._hist_count += 1

    def snapshot(self) -> dict:
        """This process's counts, as JSON-ready lists (what a worker publishes for the others)."""
        with self._lock:
            return {
                "counters": [[n, list(map(list, pairs)), v] for (n, pairs), v in self._counters.items()],
                "gauges": [[n, list(map(list, pairs)), v] for (n, pairs), v in self._gauges.items()],
                "hist": list(self._hist),
                "hist_sum": self._hist_sum,
                "hist_count": self._hist_count,
            }

    def merged(self, others: list[dict], worker_label: str | None = None) -> Metrics:
        """A registry holding this one's counts plus ``others``' (snapshots of other processes):
        counters and the histogram add up; gauges, which do not, get a ``worker`` label each."""
        total = Metrics()
        mine = self.snapshot()
        for i, snap in enumerate([mine, *others]):
            label = (worker_label if i == 0 else snap.get("worker")) or str(i)
            for n, pairs, v in snap["counters"]:
                total._counters[(n, tuple(sorted(tuple(p) for p in pairs)))] += float(v)
            for n, pairs, v in snap["gauges"]:
                key = tuple(sorted([*(tuple(p) for p in pairs), ("worker", label)]))
                total._gauges[(n, key)] = float(v)
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
