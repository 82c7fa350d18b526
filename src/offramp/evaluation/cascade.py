"""The cascade view of a report: the small model, the LLM alone, and the two as a cascade.

The cascade answers locally when the small model is sure (confidence at or above a threshold, and
not its "don't know" answer) and asks the LLM otherwise — what ``offramp serve`` does with an
``llm:`` section. The threshold is given, or chosen from confidences alone (no labels): the lowest
that sends at most ``llm_share`` of the messages to the LLM, so the test labels do not tune it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from offramp.evaluation.metrics import classification_metrics
from offramp.runtime.routing import share_threshold
from offramp.types import JSONDict


def cascade_view(
    y_true: Sequence[str],
    small_pred: Sequence[str],
    confidence: Sequence[float],
    llm_pred: Sequence[str | None],
    *,
    threshold: float | None = None,
    llm_share: float = 0.1,
    refusal: str | None = None,
    small_usd_per_month: float | None = None,
    llm_usd_per_message: float | None = None,
    messages_per_month: float | None = None,
) -> JSONDict:
    """Macro-F1, share handled locally and $ per month of the small model alone, the LLM alone and
    the cascade, on the messages that have an LLM prediction."""
    keep = [i for i, p in enumerate(llm_pred) if p is not None]
    y = [str(y_true[i]) for i in keep]
    small = [str(small_pred[i]) for i in keep]
    llm = [str(llm_pred[i]) for i in keep]
    conf = np.array([float(confidence[i]) for i in keep])
    chosen = "given" if threshold is not None else f"at most {llm_share:.0%} of messages to the LLM (no labels used)"
    t = threshold if threshold is not None else share_threshold(conf, llm_share)
    local = conf >= t
    if refusal is not None:
        local &= np.array([p != refusal for p in small])
    both = [s if lo else m for s, m, lo in zip(small, llm, local)]
    labels = sorted(set(y))
    share = float(local.mean()) if len(local) else 0.0

    def cost(local_share: float) -> float | None:
        if small_usd_per_month is None or llm_usd_per_message is None or messages_per_month is None:
            return None
        llm_part = (1 - local_share) * messages_per_month * llm_usd_per_message
        return (small_usd_per_month if local_share > 0 else 0.0) + llm_part

    rows = []
    for name, pred, local_share in (
        ("small model alone", small, 1.0),
        ("LLM alone", llm, 0.0),
        ("cascade", both, share),
    ):
        m = classification_metrics(y, pred, labels)
        rows.append(
            {
                "name": name,
                "macro_f1": m["macro_f1"],
                "accuracy": m["accuracy"],
                "local_share": local_share,
                "usd_per_month": cost(local_share),
            }
        )
    return {
        "n": len(keep),
        "threshold": t,
        "threshold_rule": chosen,
        "messages_per_month": messages_per_month,
        "rows": rows,
    }
