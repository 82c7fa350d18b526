"""Choose a model by stratified cross-validation on macro-F1, within a time limit, and by cost.

Candidates that share a featurizer share its features: the featurizer is fitted once on all the
training texts (it sees no labels), and only the classifier is cross-validated. The winner's
out-of-fold scores then fit its temperature, so its probabilities are calibrated on texts it had
not seen, and it is refitted on all the data.

Each scored candidate carries its cross-validated macro-F1 with the standard error across folds
and its measured cost per message (a batch of held-out messages through the first fold's model).
The rule ``"best"`` takes the highest score; ``"cheapest"`` (what ``quality="auto"`` uses) takes
the cheapest candidate whose score is within one standard error of the best one's (or within a
stated ``max_quality_loss``), since a difference smaller than the estimate's own error is not a
reason to pay many times the compute for every message.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold

from offramp.encoders import sentence as encoder
from offramp.encoders.sentence import available
from offramp.errors import UsageError
from offramp.estimators.base import softmax
from offramp.estimators.calibration import expected_calibration_error, fit_temperature
from offramp.estimators.features import NgramFeaturizer
from offramp.estimators.stacked import StackedLinear
from offramp.estimators.tfidf import TfidfLinear
from offramp.training.speed import measure_latency
from offramp.types import JSONDict


@dataclass
class Candidate:
    """A named model configuration to try."""

    name: str
    make: Callable[[], TfidfLinear]  # any model with feature_key / build_features / fit_features
    description: str = ""


@dataclass
class CandidateResult:
    name: str
    description: str
    status: str  # "scored", "skipped: ..." or "failed: ..."
    cv_macro_f1: float | None = None
    cv_accuracy: float | None = None
    seconds: float = 0.0
    latency_p99_ms: float | None = None
    size_bytes: int | None = None  # the candidate's stored arrays (uncompressed), without a shared encoder
    cv_macro_f1_se: float | None = None  # standard error of the macro-F1 across folds
    cost_us: float | None = None  # microseconds per message in a batch (held-out messages)

    def as_dict(self) -> JSONDict:
        return dict(self.__dict__)


@dataclass
class Selection:
    model: TfidfLinear
    winner: str
    results: list[CandidateResult]
    n_folds: int
    ece_before: float
    ece_after: float
    seconds: float
    notes: list[str] = field(default_factory=list)
    oof_proba: np.ndarray | None = None  # the winner's calibrated out-of-fold probabilities
    rule: str = "best"  # "best" or "cheapest" (see the module doc)
    tolerance: float | None = None  # with "cheapest": the score loss allowed


RULES = ("best", "cheapest")


def fast_candidates(n_texts: int, seed: int = 0) -> list[Candidate]:
    """The fast tier's search space, most promising first (the first one always runs)."""
    min_df = 1 if n_texts < 2000 else 2
    chars14: dict[str, Any] = dict(word_ngrams=(1, 2), char_ngrams=(1, 4), min_df=min_df, seed=seed)
    chars25: dict[str, Any] = dict(word_ngrams=(1, 2), char_ngrams=(2, 5), min_df=min_df, seed=seed)
    return [
        Candidate(
            "svm-w12-c14-C0.5",
            lambda: TfidfLinear(**chars14, loss="svm", C=0.5),
            "words 1-2 + chars 1-4, linear SVM C=0.5",
        ),
        Candidate(
            "svm-w12-c14-C1", lambda: TfidfLinear(**chars14, loss="svm", C=1.0), "words 1-2 + chars 1-4, linear SVM C=1"
        ),
        Candidate(
            "svm-w12-c25-C1", lambda: TfidfLinear(**chars25, loss="svm", C=1.0), "words 1-2 + chars 2-5, linear SVM C=1"
        ),
        Candidate(
            "svm-w12-c14-C0.2",
            lambda: TfidfLinear(**chars14, loss="svm", C=0.2),
            "words 1-2 + chars 1-4, linear SVM C=0.2",
        ),
        Candidate(
            "logreg-w12-c14-C20",
            lambda: TfidfLinear(**chars14, loss="logreg", C=20.0),
            "words 1-2 + chars 1-4, logistic regression C=20",
        ),
    ]


QUALITIES = ("fast", "balanced", "best")


_ENCODER_SHORT = {"minilm": "MiniLM", "use-multilingual": "multilingual USE", "mpnet": "mpnet"}
STATIC_ENCODER = "static-minilm"


def static_candidates(n_texts: int, seed: int = 0) -> list[Candidate]:
    """The static tier: token vectors distilled from MiniLM (:mod:`offramp.encoders.static`), stacked
    with TF-IDF or alone; n-gram speed, English (the source encoder's language)."""
    min_df = 1 if n_texts < 2000 else 2
    tf: dict[str, Any] = dict(word_ngrams=(1, 2), char_ngrams=(1, 4), min_df=min_df, seed=seed)
    return [
        Candidate(
            "static-stacked-w12-c14-e2-C1",
            lambda: StackedLinear(**tf, loss="svm", C=1.0, embed_weight=2.0, encoder=STATIC_ENCODER),
            "TF-IDF words 1-2 + chars 1-4 stacked with static embeddings distilled from MiniLM (x2), linear SVM C=1",
        ),
        Candidate(
            "static-embed-logreg-C10",
            lambda: StackedLinear(None, None, seed=seed, loss="logreg", C=10.0, encoder=STATIC_ENCODER),
            "static embeddings distilled from MiniLM, logistic regression C=10",
        ),
    ]


def mpnet_candidates(n_texts: int, seed: int = 0) -> list[Candidate]:
    """The larger English encoder's stacked candidates, tried last by ``best`` when it is installed
    (on Banking77 they gained 0.004 accuracy over MiniLM's; see docs/benchmarks/accurate-tier.md)."""
    min_df = 1 if n_texts < 2000 else 2
    tf: dict[str, Any] = dict(word_ngrams=(1, 2), char_ngrams=(1, 4), min_df=min_df, seed=seed, encoder="mpnet")
    return [
        Candidate(
            "stacked-mpnet-w12-c14-e2-C1",
            lambda: StackedLinear(**tf, loss="svm", C=1.0, embed_weight=2.0),
            "TF-IDF words 1-2 + chars 1-4 stacked with mpnet embeddings (x2), linear SVM C=1",
        ),
        Candidate(
            "stacked-mpnet-w12-c14-e1.5-C0.5",
            lambda: StackedLinear(**tf, loss="svm", C=0.5, embed_weight=1.5),
            "TF-IDF words 1-2 + chars 1-4 stacked with mpnet embeddings (x1.5), linear SVM C=0.5",
        ),
    ]


def accurate_candidates(n_texts: int, seed: int = 0, best: bool = False, encoder: str = "minilm") -> list[Candidate]:
    """The accurate tier: sentence embeddings (from the registered ``encoder``), stacked with TF-IDF
    or alone. Candidate names carry the encoder's name unless it is the default ``minilm``."""
    min_df = 1 if n_texts < 2000 else 2
    tf: dict[str, Any] = dict(word_ngrams=(1, 2), char_ngrams=(1, 4), min_df=min_df, seed=seed, encoder=encoder)
    tag = "" if encoder == "minilm" else f"-{encoder}"
    short = _ENCODER_SHORT.get(encoder, encoder)
    out = [
        Candidate(
            f"stacked{tag}-w12-c14-e1.5-C0.5",
            lambda: StackedLinear(**tf, loss="svm", C=0.5, embed_weight=1.5),
            f"TF-IDF words 1-2 + chars 1-4 stacked with {short} embeddings (x1.5), linear SVM C=0.5",
        ),
        Candidate(
            f"embed{tag}-logreg-C10",
            lambda: StackedLinear(None, None, seed=seed, loss="logreg", C=10.0, encoder=encoder),
            f"{short} sentence embeddings, logistic regression C=10",
        ),
    ]
    if best:
        out += [
            Candidate(
                f"stacked{tag}-w12-c14-e1-C0.5",
                lambda: StackedLinear(**tf, loss="svm", C=0.5, embed_weight=1.0),
                f"TF-IDF words 1-2 + chars 1-4 stacked with {short} embeddings (x1), linear SVM C=0.5",
            ),
            Candidate(
                f"stacked{tag}-w12-c14-e2-C1",
                lambda: StackedLinear(**tf, loss="svm", C=1.0, embed_weight=2.0),
                f"TF-IDF words 1-2 + chars 1-4 stacked with {short} embeddings (x2), linear SVM C=1",
            ),
        ]
    return out


def candidates_for(quality: str, n_texts: int, seed: int = 0, encoder: str = "minilm") -> list[Candidate]:
    """Search space per quality: fast = TF-IDF only; balanced and best add the static tier (English
    data) and the accurate tier."""
    if quality not in QUALITIES:
        raise ValueError(f"quality must be one of {QUALITIES}")
    fast = fast_candidates(n_texts, seed)
    if quality == "fast":
        return fast
    static = static_candidates(n_texts, seed) if encoder == "minilm" and available("minilm") else []
    if quality == "balanced":
        return fast[:2] + static + accurate_candidates(n_texts, seed, encoder=encoder)
    out = fast + static + accurate_candidates(n_texts, seed, best=True, encoder=encoder)
    if encoder == "minilm" and available("mpnet"):  # English data: the larger English encoder too
        out += mpnet_candidates(n_texts, seed)
    return out


def n_folds_for(labels: Sequence[str] | np.ndarray, wanted: int = 3) -> int:
    _, counts = np.unique(np.asarray(labels, dtype=object).astype(str), return_counts=True)
    return int(max(2, min(wanted, counts.min())))


def select_model(
    texts: Sequence[str],
    labels: Sequence[str] | np.ndarray,
    candidates: Sequence[Candidate],
    *,
    time_limit: float | None = 60.0,
    seed: int = 0,
    n_folds: int = 3,
    latency_budget_ms: float | None = None,
    on_progress: Callable[[str], None] | None = None,
    time_candidates: bool = True,
    rule: str = "best",
    max_quality_loss: float | None = None,
    featurizer: NgramFeaturizer | None = None,
) -> Selection:
    """Cross-validate ``candidates`` and return the best one, calibrated and refitted on everything.

    The first candidate is always scored; each further one only if the time spent so far plus its
    expected cost (measured on the candidates before it) stays within ``time_limit`` seconds
    (``None``: every candidate is scored, so the choice does not depend on the machine's speed).
    Each scored candidate's single-message p99 latency is measured (on the first fold's model;
    with ``time_candidates`` False only where ``latency_budget_ms`` needs it); with
    ``latency_budget_ms`` only candidates within the budget can win (if none is, the fastest).
    ``rule`` "cheapest" takes the cheapest candidate within one standard error (or
    ``max_quality_loss``) of the best score; "best" the best score. ``featurizer``: an n-gram
    featurizer fitted already (a hierarchy's router's): the n-gram candidates that build the same
    n-grams use it as it is, so their model's features are the router's, computed once per message
    when the two run in a chain.
    """
    if rule not in RULES:
        raise UsageError(f"rule must be one of {', '.join(RULES)}; got {rule!r}", param="rule")
    if max_quality_loss is not None and not 0 <= max_quality_loss < 1:
        raise UsageError(
            f"max_quality_loss must be at least 0 and below 1, got {max_quality_loss}", param="max_quality_loss"
        )
    t0 = time.perf_counter()
    texts = list(texts)
    y_str = np.asarray(labels, dtype=object).astype(str)
    classes, y = np.unique(y_str, return_inverse=True)
    n_folds = n_folds_for(y_str, n_folds)
    folds = list(StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))
    say = on_progress or (lambda _msg: None)

    feature_cache: dict[str, tuple] = {}
    results: list[CandidateResult] = []
    oof_by_name: dict[str, np.ndarray] = {}
    fit_cost: list[float] = []  # seconds per candidate, to forecast the next one
    for i, cand in enumerate(candidates):
        proto = cand.make()
        key = proto.feature_key()
        elapsed = time.perf_counter() - t0
        forecast = max(fit_cost) if fit_cost else 0.0
        features = 0.0  # one-off cost of features not built yet (sentence encoding)
        if key not in feature_cache:
            if fit_cost:
                forecast *= 1.3
            if hasattr(proto, "estimate_feature_seconds"):
                try:
                    features = proto.estimate_feature_seconds(texts)
                except Exception:  # the candidate will fail and say why below
                    pass
        # keep room for the final refit of the winner (about one fold's worth)
        if i > 0 and time_limit is not None and elapsed + features + forecast * (1 + 1 / n_folds) > time_limit:
            results.append(CandidateResult(cand.name, cand.description, "skipped: time limit"))
            continue
        say(f"cross-validating {cand.name}")
        c0 = time.perf_counter()
        try:
            if key not in feature_cache:
                if featurizer is not None and type(proto) is TfidfLinear and key == repr(featurizer.get_config()):
                    feature_cache[key] = (featurizer, featurizer.transform(texts))
                else:
                    feature_cache[key] = proto.build_features(texts)
            feat, X = feature_cache[key]
            oof = np.zeros((len(y), len(classes)), dtype=np.float64)
            first_fold_model = None
            fold_f1: list[float] = []
            for tr, te in folds:
                m = cand.make().fit_features(feat, X[tr], y_str[tr])
                scores = np.asarray(X[te] @ m.coef_) + m.intercept_
                # a fold may lack a rare class: place its scores in the right columns
                cols = np.searchsorted(classes, m.classes_)
                fill = np.full((len(te), len(classes)), -1e3)
                fill[:, cols] = scores
                oof[te] = fill
                fold_f1.append(float(f1_score(y[te], fill.argmax(axis=1), average="macro")))
                if first_fold_model is None:
                    first_fold_model = (m, te)
            pred = oof.argmax(axis=1)
            assert first_fold_model is not None
            m, te = first_fold_model
            lat: dict[str, float | int | None] = {"p99": None}
            if time_candidates or latency_budget_ms is not None:
                with m.uncached():
                    sample = [texts[i] for i in te[:200]]
                    lat = measure_latency(m.predict_one, sample, n=300, warmup=5, max_seconds=1.0, min_n=30)
            size = int(sum(a.nbytes for a in m.get_state()[1].values()))
            cost = None
            if time_candidates or rule == "cheapest":
                with m.uncached():
                    cost = batch_cost_us(m.predict, [texts[i] for i in te[:1000]])
            res = CandidateResult(
                cand.name,
                cand.description,
                "scored",
                cv_macro_f1=float(f1_score(y, pred, average="macro")),
                cv_accuracy=float((pred == y).mean()),
                seconds=time.perf_counter() - c0,
                latency_p99_ms=lat["p99"],
                size_bytes=size,
                cv_macro_f1_se=float(np.std(fold_f1, ddof=1) / np.sqrt(len(fold_f1))) if len(fold_f1) > 1 else 0.0,
                cost_us=cost,
            )
            oof_by_name[cand.name] = oof
        except Exception as e:  # one failing configuration should not sink the search
            res = CandidateResult(cand.name, cand.description, f"failed: {e}", seconds=time.perf_counter() - c0)
        fit_cost.append(res.seconds)
        results.append(res)

    scored = [r for r in results if r.status == "scored"]
    if not scored:
        raise RuntimeError("no candidate could be trained: " + "; ".join(r.status for r in results))
    notes = []
    eligible = scored
    if latency_budget_ms is not None:
        eligible = [r for r in scored if r.latency_p99_ms is not None and r.latency_p99_ms <= latency_budget_ms]
        for r in scored:
            if r not in eligible:
                r.status = f"scored, over the {latency_budget_ms:g} ms latency budget"
        if not eligible:
            eligible = [min(scored, key=lambda r: r.latency_p99_ms or float("inf"))]
            notes.append(f"no candidate met the {latency_budget_ms:g} ms budget; the fastest was taken")
    best = max(eligible, key=lambda r: (round(r.cv_macro_f1 or 0.0, 4), -results.index(r)))
    tolerance = None
    if rule == "cheapest":
        tolerance = max_quality_loss if max_quality_loss is not None else float(best.cv_macro_f1_se or 0.0)
        floor = (best.cv_macro_f1 or 0.0) - tolerance - 1e-12
        near = [r for r in eligible if (r.cv_macro_f1 or 0.0) >= floor and r.cost_us is not None]
        if near:
            best = min(near, key=lambda r: (r.cost_us or 0.0, -(r.cv_macro_f1 or 0.0), results.index(r)))
    oof = oof_by_name[best.name]
    temperature = fit_temperature(oof, y)
    ece_before = expected_calibration_error(softmax(oof, 1.0), y)
    ece_after = expected_calibration_error(softmax(oof, temperature), y)

    say(f"refitting {best.name} on all {len(y)} texts")
    cand = next(c for c in candidates if c.name == best.name)
    proto = cand.make()
    feat, X = feature_cache[proto.feature_key()]
    model = proto.fit_features(feat, X, y_str)
    model.temperature_ = temperature
    return Selection(
        model,
        best.name,
        results,
        n_folds,
        ece_before,
        ece_after,
        time.perf_counter() - t0,
        notes,
        softmax(oof, temperature),
        rule,
        tolerance,
    )


def batch_cost_us(predict: Callable[[list[str]], object], texts: list[str], min_seconds: float = 0.2) -> float:
    """Microseconds per message for batch prediction over ``texts`` (repeated to ``min_seconds``).

    A slow model (a sentence encoder) is timed on as many of the texts as fill ``min_seconds``
    once, judged from the warm-up, so its cost is known in a fraction of a second too."""
    if not texts:
        return 0.0
    w0 = time.perf_counter()
    predict(texts[:8])  # warm-up, and a first estimate
    per = (time.perf_counter() - w0) / min(8, len(texts))
    texts = texts[: max(8, min(len(texts), int(min_seconds / max(per, 1e-9))))]
    n, t0 = 0, time.perf_counter()
    while True:
        predict(texts)
        n += len(texts)
        spent = time.perf_counter() - t0
        if spent >= min_seconds:
            return spent / n * 1e6


def resolve_quality(quality: str | None, encoder_name: str = encoder.DEFAULT_ENCODER) -> tuple[str, list[str]]:
    """The quality to use: 'auto' (None) means balanced when the encoder is installed, else fast."""
    info = encoder.encoder_info(encoder_name)
    if quality in (None, "auto"):
        if encoder.available(encoder_name):
            return "balanced", []
        return "fast", [
            f"the sentence encoder {encoder_name} is not installed, so only the fast tier was tried ({info.install})"
        ]
    if quality not in QUALITIES:
        raise UsageError(f"quality must be one of auto, {', '.join(QUALITIES)}; got {quality!r}", param="quality")
    if quality != "fast" and not encoder.available(encoder_name):
        raise encoder.EncoderUnavailable(
            f"quality {quality!r} needs the sentence encoder {encoder_name} ({info.package}), which is not installed",
            info.install,
        )
    return quality, []
