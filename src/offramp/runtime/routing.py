"""Per-class confidence thresholds under which a message goes to the LLM, fitted to a stated target.

* ``max_llm_share: s``     one threshold: at most a share s of the held-out messages fall under it
* ``local_precision: p``   one threshold per predicted label: the answers kept local are right at
                           least a share p of the time on the held-out data (a label where no
                           threshold reaches p sends all its messages to the LLM)

A multi-label model is routed by an unsure band around each label's threshold instead
(:func:`fit_bands`): a message goes to the LLM when any label's probability lies within the band
of its threshold. Fitted, one band for every label:

* ``max_llm_share: s``     at most a share s of the held-out messages fall inside the band
* ``local_precision: p``   the label sets kept local are exactly right at least a share p of the
                           time on the held-out data (the narrowest band that gets there)
"""

from __future__ import annotations

from typing import Sequence, TypedDict

import numpy as np

ABOVE_ALL = 1.01  # a threshold no confidence reaches: every message goes to the LLM


class HeldOut(TypedDict, total=False):
    """How the fitted routing does on the held-out messages."""

    llm_share: float
    local_precision: float | None
    n: int
    labels_not_in_model: list[str]  # labels of the held-out file a multi-label model lacks


class Fitted(TypedDict, total=False):
    """A fitted routing: ``thresholds`` (per predicted label, or ``*``) or a multi-label model's
    ``bands``, and how it does on the held-out messages."""

    thresholds: dict[str, float]
    bands: dict[str, float]
    held_out: HeldOut


def share_threshold(confidence: Sequence[float] | np.ndarray, llm_share: float) -> float:
    """The one rule for "send at most a share of the messages to the LLM": the lowest confidence
    threshold under which at most ``llm_share`` of ``confidence`` falls (no labels are used).

    Used both when serving (``routing.fit: {max_llm_share: s}``) and when a report shows the
    cascade of the small model and the LLM.

    >>> share_threshold([0.1, 0.2, 0.3, 0.9, 0.95], 0.4)
    0.3
    """
    c = np.sort(np.asarray(confidence, dtype=np.float64))
    if llm_share <= 0 or not len(c):
        return 0.0
    k = int(np.floor(llm_share * len(c)))  # at most k messages fall under the threshold
    return float(c[k]) if k < len(c) else max(ABOVE_ALL, float(c[-1]) + 1e-9)


def fit_thresholds(
    proba: np.ndarray,
    classes: Sequence[str] | np.ndarray,
    y_true: Sequence[str] | np.ndarray,
    *,
    max_llm_share: float | None = None,
    local_precision: float | None = None,
) -> Fitted:
    classes = np.asarray(classes).astype(str)
    y = np.asarray(y_true, dtype=object).astype(str)
    pred = classes[proba.argmax(axis=1)]
    conf = proba.max(axis=1)
    thresholds: dict[str, float] = {}
    if max_llm_share is not None:
        tau = share_threshold(conf, max_llm_share)
        thresholds["*"] = tau
        to_llm = conf < tau
    elif local_precision is not None:
        to_llm = np.zeros(len(y), bool)
        for c in classes:
            m = pred == c
            if not m.any():
                continue
            order = np.argsort(conf[m])
            correct = (y[m] == c)[order]
            confs = conf[m][order]
            # precision of keeping everything from index i upwards, for every i
            kept_right = np.cumsum(correct[::-1])[::-1]
            kept = np.arange(len(correct), 0, -1)
            ok = np.flatnonzero(kept_right / kept >= local_precision)
            tau = float(confs[ok[0]]) if ok.size else ABOVE_ALL
            thresholds[str(c)] = tau
            to_llm |= m & (conf < tau)
    else:
        raise ValueError("give max_llm_share or local_precision")
    local = ~to_llm
    held_out = HeldOut(
        llm_share=float(to_llm.mean()),
        local_precision=float((pred[local] == y[local]).mean()) if local.any() else None,
        n=int(len(y)),
    )
    return Fitted(thresholds=thresholds, held_out=held_out)


def fit_bands(
    proba: np.ndarray,
    thresholds: np.ndarray,
    Y_true: np.ndarray,
    *,
    max_llm_share: float | None = None,
    local_precision: float | None = None,
    unreachable: np.ndarray | None = None,
) -> Fitted:
    """One unsure band ("*") for a multi-label model, fitted on held-out messages: ``proba`` and
    ``Y_true`` are (messages x labels), ``thresholds`` the model's per-label thresholds.
    ``unreachable`` marks messages whose right set has a label the model lacks: the model's set
    is never exactly right for them (as a single-label model's answer is wrong for a label it
    lacks)."""
    proba = np.asarray(proba, dtype=np.float64)
    Y = np.asarray(Y_true).astype(bool)
    t = np.asarray(thresholds, dtype=np.float64)
    nearest = np.abs(proba - t).min(axis=1)  # how near the message's closest call is to its threshold
    exact = ((proba >= t) == Y).all(axis=1)  # the model's label set is exactly the right one
    if unreachable is not None:
        exact &= ~np.asarray(unreachable, dtype=bool)
    n = len(nearest)
    if max_llm_share is not None:
        k = int(np.floor(max_llm_share * n))
        band = float(np.sort(nearest)[k]) if k < n else ABOVE_ALL
    elif local_precision is not None:
        order = np.argsort(-nearest)  # surest first: a band b keeps every message with nearest >= b
        kept_right = np.cumsum(exact[order])
        kept = np.arange(1, n + 1)
        ok = np.flatnonzero(kept_right / kept >= local_precision)
        if ok.size:  # the widest prefix that still reaches p: its last message sets the band
            band = float(nearest[order][ok[-1]])
        else:
            band = ABOVE_ALL
    else:
        raise ValueError("give max_llm_share or local_precision")
    to_llm = nearest < band
    local = ~to_llm
    held_out = HeldOut(
        llm_share=float(to_llm.mean()) if n else 0.0,
        local_precision=float(exact[local].mean()) if local.any() else None,
        n=int(n),
    )
    return Fitted(bands={"*": band}, held_out=held_out)
