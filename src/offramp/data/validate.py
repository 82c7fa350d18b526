"""Checks that a dataset can train a classifier, and that a test set is fair to a model."""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Sequence

import numpy as np

from offramp.data.io import Dataset
from offramp.data.text import normalize
from offramp.errors import DataError


def check_training_set(ds: Dataset) -> list[str]:
    """Raise DataError when ``ds`` cannot train a classifier; return warnings otherwise."""
    counts = Counter(ds.labels or [])
    if len(counts) < 2:
        only = next(iter(counts), "(none)")
        raise DataError(
            f"{ds.path} has only one class ({only!r}); a classifier needs at least two",
            "add examples of the other classes, or check the label column",
            param="label_col",
        )
    rare = sorted(k for k, c in counts.items() if c < 2)
    if rare:
        shown = ", ".join(repr(r) for r in rare[:10]) + (f" and {len(rare) - 10} more" if len(rare) > 10 else "")
        raise DataError(
            f"{ds.path}: {len(rare)} classes have fewer than 2 examples: {shown}",
            "add examples of them or remove those rows; cross-validation needs 2 per class",
        )
    warnings = []
    conflicts = _conflicting_texts(ds.texts, ds.labels or [])
    if conflicts:
        warnings.append(f"{conflicts} texts appear with more than one label; the model cannot fit both")
    return warnings


def _conflicting_texts(texts: Sequence[str], labels: Sequence[str]) -> int:
    """How many distinct (normalised) texts carry more than one label; in arrays, so two million
    rows cost tens of megabytes rather than a dictionary of sets of every text."""
    if not len(texts):
        return 0
    h = np.fromiter((hash(normalize(t)) for t in texts), dtype=np.int64, count=len(texts))
    lab = np.unique(np.asarray(labels, dtype=object).astype(str), return_inverse=True)[1]
    order = np.lexsort((lab, h))
    hs, ls = h[order], lab[order]
    new_text = np.r_[True, hs[1:] != hs[:-1]]
    new_pair = new_text | np.r_[True, ls[1:] != ls[:-1]]
    labels_per_text = np.bincount((np.cumsum(new_text) - 1)[new_pair])
    return int((labels_per_text > 1).sum())


def _fingerprint(text: str, salt: bytes) -> int:
    return int.from_bytes(
        hashlib.blake2b(normalize(text).encode("utf-8", "surrogatepass"), digest_size=8, key=salt).digest(), "little"
    )


def text_fingerprints(texts: Sequence[str], salt: bytes) -> np.ndarray:
    """Salted 64-bit hashes of normalised texts: enough to spot shared texts, not to read them."""
    return np.unique(np.fromiter((_fingerprint(t, salt) for t in texts), dtype=np.uint64, count=len(texts)))


def check_test_set(
    ds: Dataset,
    classes: Sequence[str] | np.ndarray,
    train_fingerprints: np.ndarray | None = None,
    salt: bytes | None = None,
) -> list[str]:
    """Warnings about a test set: labels the model never saw, and texts shared with training."""
    warnings = []
    known = set(map(str, classes))
    unseen = Counter(lab for lab in (ds.labels or []) if lab not in known)
    if unseen:
        shown = ", ".join(f"{k} ({v})" for k, v in unseen.most_common(5))
        warnings.append(
            f"{sum(unseen.values())} test rows have labels the model never saw: {shown}; they count as errors"
        )
    if train_fingerprints is not None and salt is not None and len(train_fingerprints):
        fp = np.array([_fingerprint(t, salt) for t in ds.texts], dtype=np.uint64)
        shared = int(np.isin(fp, train_fingerprints).sum())
        if shared:
            warnings.append(
                f"leakage: {shared} test texts also appear in the training data; scores on them overstate quality"
            )
    return warnings
