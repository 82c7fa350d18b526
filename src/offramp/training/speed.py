"""How fast a model answers: single-message latency and batch throughput, measured in process."""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np


def latency_summary(ms: Sequence[float] | np.ndarray) -> dict[str, float | int | None]:
    """p50 / p95 / p99 of latencies in milliseconds, and how many there were."""
    if not len(ms):
        return {"p50": None, "p95": None, "p99": None, "n": 0}
    a = np.asarray(ms, dtype=np.float64)
    return {
        "p50": float(np.percentile(a, 50)),
        "p95": float(np.percentile(a, 95)),
        "p99": float(np.percentile(a, 99)),
        "n": int(len(a)),
    }


def measure_latency(
    predict_one,
    texts: Sequence[str],
    n: int = 1000,
    warmup: int = 20,
    max_seconds: float = 2.0,
    min_n: int = 100,
) -> dict:
    """Milliseconds per single message, one at a time, in process: p50, p95, p99.

    Stops after ``n`` messages or ``max_seconds`` (with at least ``min_n`` measured), whichever is first.
    """
    if not texts:
        return latency_summary([])
    sample = [texts[i % len(texts)] for i in range(max(n, 1))]
    for t in sample[:warmup]:
        predict_one(t)
    times = []
    start = time.perf_counter()
    for t in sample:
        t0 = time.perf_counter()
        predict_one(t)
        times.append(time.perf_counter() - t0)
        if len(times) >= min_n and t0 - start > max_seconds:
            break
    return latency_summary(np.asarray(times) * 1e3)


def measure_throughput(
    predict_batch, texts: Sequence[str], min_messages: int = 20_000, min_seconds: float = 1.0
) -> float:
    """Messages per second for batch prediction over the texts (repeated to a measurable size).

    Probes of 32, then 256 texts (the second only for a model that answered the first in under a
    tenth of a second) size the measured batch: about ``min_seconds`` of work, at most
    ``min_messages`` messages, so a slow model is not kept busy for minutes.
    """
    if not texts:
        return 0.0
    texts = list(texts)
    for size in (32, 256):
        probe = (texts * (-(-size // len(texts))))[:size]
        t0 = time.perf_counter()
        predict_batch(probe)
        took = time.perf_counter() - t0
        rate = len(probe) / max(took, 1e-9)
        if took >= 0.1:
            break
    n = int(min(max(rate * min_seconds, len(probe)), min_messages))
    batch = (texts * (-(-n // len(texts))))[:n]
    done, t0 = 0, time.perf_counter()
    while True:
        predict_batch(batch)
        done += len(batch)
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds or len(batch) < n:
            return done / elapsed
