"""The accurate tier on Banking77 and CLINC150 (int8 MiniLM embeddings, alone or stacked with TF-IDF).

    python benchmarks/accurate_tier.py            # both sets
    python benchmarks/accurate_tier.py banking77  # one (banking77, clinc150, clinc150-reject[-refit])
    python benchmarks/accurate_tier.py --best banking77 clinc150-reject

Each set is trained with `offramp train --quality balanced` (time limit 180 s) from an empty
embedding cache, so "train s" includes encoding every text. The winner is saved, reloaded from its
directory and measured: accuracy, macro-F1, single-message latency (in process), batch throughput,
model directory size (the shared 23 MB encoder is not part of it).

With ``--best`` each set is trained with `--quality best` and no time limit (every candidate,
the mpnet encoder's too when it is installed), using the usual embedding cache (``~/.cache/offramp``
or ``OFFRAMP_CACHE_DIR``), so a set encoded before is not encoded again and "train s" then
excludes encoding: `benchmarks/encoders.py` measures each encoder's speed.

clinc150 trains with out-of-scope as a class (train + val + oos_train + oos_val). clinc150-reject
follows the out-of-scope protocol instead: train on train + oos_train, fit the "don't know"
threshold on val + oos_val only, test on test + oos_test. The target is the goal itself,
out-of-scope recall >= 0.75, which offramp asks of the held-out figure's 95% lower bound (with
oos_val's 100 messages: 83 rejected there). clinc150-reject-refit is the same with
``--refit-with-val``: once the threshold is fitted, the winner is refitted with val + oos_val added.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import banking77, clinc150, latency_ms, print_table, throughput


def main(which: list[str], best: bool = False) -> None:
    if not best:
        os.environ["OFFRAMP_CACHE_DIR"] = tempfile.mkdtemp(prefix="offramp-bench-cache-")
    quality, limit = ("best", None) if best else ("balanced", 180)
    from offramp import train
    from offramp.data.io import Dataset
    from offramp.modeldir.store import model_bytes
    from offramp.registry.records import load

    rows, cands = [], []
    sets = {
        "banking77": banking77,
        "clinc150": clinc150,
        "clinc150-reject": lambda: clinc150(oos_as_class=False),
        "clinc150-reject-refit": lambda: clinc150(oos_as_class=False),
    }
    for name in which:
        (Xtr, ytr), (Xte, yte), val = sets[name]()
        yte_a = np.asarray(yte)
        reject = {}
        if val is not None:
            from offramp.estimators.rejection import RejectTarget

            reject = dict(
                reject_target=RejectTarget.parse("oos_recall>=0.75"),
                oos_label="oos",
                val=Dataset(val[0], val[1], "clinc150 val + oos_val"),
                refit_with_val=name.endswith("-refit"),
            )
        with tempfile.TemporaryDirectory() as d:
            trained, res = train(Dataset(Xtr, ytr, name), quality=quality, time_limit=limit, seed=0, **reject)
            trained.save(Path(d) / "m")
            model = load(Path(d) / "m")
            size = model_bytes(Path(d) / "m")
        pred = model.predict(Xte)
        with model.uncached():  # every text encoded afresh, as new traffic would be
            p50, p99 = latency_ms(model.predict_one, Xte, n=1000)
            thr = throughput(model.predict, Xte, min_n=len(Xte))
        acc = float((pred == yte_a).mean())
        f1 = float(f1_score(yte_a, pred, average="macro"))
        oos = "—"
        if name.startswith("clinc150"):
            ins = yte_a != "oos"
            acc = float((pred[ins] == yte_a[ins]).mean())
            oos = f"{(pred[~ins] == 'oos').mean():.3f}"
        rows.append(
            [
                name,
                res.winner,
                f"{acc:.4f}",
                f"{f1:.4f}",
                oos,
                f"{res.train_seconds:.0f}",
                f"{p50:.2f}",
                f"{p99:.2f}",
                f"{thr:,.0f}",
                f"{size / 1e6:.2f}",
            ]
        )
        for r in res.candidates:
            cands.append(
                [
                    name,
                    r.name,
                    "—" if r.cv_macro_f1 is None else f"{r.cv_macro_f1:.4f}",
                    "—" if r.latency_p99_ms is None else f"{r.latency_p99_ms:.2f}",
                    f"{r.seconds:.0f}",
                    r.status,
                ]
            )
    print_table(
        f"accurate tier (offramp train --quality {quality}, time limit {limit or 'none'})",
        [
            "set",
            "winner",
            "accuracy (in-scope)",
            "macro-F1",
            "oos recall",
            "train s (incl. encoding)" if not best else "train s (vectors cached)",
            "p50 ms",
            "p99 ms",
            "batch msg/s",
            "model dir MB",
        ],
        rows,
    )
    print_table(
        "candidates (cross-validated on the training set)",
        ["set", "candidate", "CV macro-F1", "p99 ms", "seconds", "status"],
        cands,
    )


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--best"]
    main(args or ["banking77", "clinc150", "clinc150-reject"], best="--best" in sys.argv[1:])
