"""The accurate tier: sentence embeddings, alone or stacked with TF-IDF, into one linear model.

Features are ``[TF-IDF (words + chars) | weight * sentence embedding]``: the n-grams catch exact
wording (product names, error codes), the embedding catches paraphrase. One linear classifier
over both learns how much to trust each. Without n-grams (``word_ngrams=char_ngrams=None``) it is
plain embeddings + a linear classifier.

The encoder is a registered plug-in (:data:`offramp.encoders.sentence.ENCODERS`, ``encoder``
parameter: ``minilm`` for English, ``use-multilingual`` for other languages, ``static-minilm``
for static embeddings distilled from minilm). A transformer encoder is not stored in the model
directory: the directory names the encoder it was trained with (with its weights' SHA-256) and
loading refuses a different one. A static encoder's table (15.6 MB) is stored in the directory,
with its manifest, so the model loads on a machine that never distilled it.

When a "don't know" rule is fitted and nearness to the training data helps it (see
:mod:`offramp.estimators.rejection`), the directory also keeps the sentence vectors of the in-scope
training messages (float16, at most ``MAX_MEMORY`` of them) to measure that nearness.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from numbers import Real
from typing import Any, Optional, Sequence, cast

import numpy as np
import scipy.sparse as sp
from sklearn.utils._param_validation import Interval, StrOptions

from offramp.encoders.sentence import DEFAULT_ENCODER, ENCODERS, CachedEncoder, get_encoder
from offramp.encoders.static import StaticEncoder
from offramp.errors import ModelDirError
from offramp.estimators.base import as_texts, register_family, softmax
from offramp.estimators.features import NgramFeaturizer
from offramp.estimators.tfidf import Features, TfidfLinear, check_ngram_range
from offramp.types import JSONDict, Texts

MAX_MEMORY = 30_000  # training vectors kept for the nearness signal (11.5 MB as float16 at 15,000)
_CHUNK = 1024  # messages per similarity block (keeps the block under ~120 MB at MAX_MEMORY)
_ONE_CORE_ROWS = 1024  # memory rows per matrix-vector product on the single-message path
_DECIDE_EACH = 64  # batches up to this size are decided message by message (the micro-batcher's largest)


def nearest_similarity(E: np.ndarray, memory: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
    """Cosine similarity of each row of ``E`` (unit vectors) to its nearest row of ``memory``.

    ``exclude[i]``, when >= 0, is a memory row that row i may not use (itself, for held-out figures).
    """
    out = np.empty(len(E), dtype=np.float32)
    for a in range(0, len(E), _CHUNK):
        S = E[a : a + _CHUNK] @ memory.T
        if exclude is not None:
            rows = np.nonzero(exclude[a : a + _CHUNK] >= 0)[0]
            S[rows, exclude[a : a + _CHUNK][rows]] = -np.inf
        out[a : a + _CHUNK] = S.max(axis=1) if S.shape[1] else -1.0
    return out


@register_family
class StackedLinear(TfidfLinear):
    """Sentence embeddings (optionally stacked with TF-IDF) and a linear classifier.

    Parameters
    ----------
    word_ngrams, char_ngrams, min_df : TF-IDF part; both n-gram ranges None means embeddings only.
    embed_weight : multiplier on the (unit-length) embedding before it joins the TF-IDF columns.
    encoder : the registered sentence encoder (``minilm``, ``use-multilingual``).
    loss, C, seed : the linear classifier, as in :class:`TfidfLinear`.
    """

    family = "stacked-linear"
    featurizer_: NgramFeaturizer | None  # type: ignore[assignment]  # None: embeddings only
    encoder_: CachedEncoder
    memory_: np.ndarray | None = None  # unit sentence vectors of in-scope training messages, by class
    memory_offsets_: np.ndarray | None = None  # class k's vectors are memory_[offsets[k]:offsets[k + 1]]

    _parameter_constraints: dict = {
        **TfidfLinear._parameter_constraints,
        "embed_weight": [Interval(Real, 0, None, closed="neither")],
        "encoder": [StrOptions(set(ENCODERS))],
    }

    def __init__(
        self,
        word_ngrams: Sequence[int] | None = (1, 2),
        char_ngrams: Sequence[int] | None = (1, 4),
        min_df: int = 2,
        loss: str = "svm",
        C: float = 0.5,
        seed: int = 0,
        embed_weight: float = 1.0,
        encoder: str = DEFAULT_ENCODER,
    ):
        self.word_ngrams = word_ngrams
        self.char_ngrams = char_ngrams
        self.min_df = min_df
        self.loss = loss
        self.C = C
        self.seed = seed
        self.embed_weight = embed_weight
        self.encoder = encoder

    def _check_params(self) -> None:
        """As the fast tier's, except that embeddings alone (no n-grams) are allowed."""
        self._validate_params()
        check_ngram_range("word_ngrams", self.word_ngrams)
        check_ngram_range("char_ngrams", self.char_ngrams)

    def _reset(self) -> None:
        super()._reset()
        self.memory_ = None
        self.memory_offsets_ = None

    @property
    def uses_tfidf(self) -> bool:
        return bool(self.word_ngrams or self.char_ngrams)

    def sentence_encoder(self) -> CachedEncoder:
        """The shared instance of this model's encoder (one line naming its install when missing)."""
        return get_encoder(self.encoder)

    def feature_key(self) -> str:
        tfidf = super().feature_key() if self.uses_tfidf else "none"
        return f"stacked|{tfidf}|w={self.embed_weight}|{self.encoder}"

    def estimate_feature_seconds(self, texts: Sequence[str]) -> float:
        return self.sentence_encoder().estimate_seconds(texts)

    def build_features(self, texts: Sequence[str]) -> tuple[object, Features]:
        enc = self.sentence_encoder()
        E = enc.encode(texts) * np.float32(self.embed_weight)
        if not self.uses_tfidf:
            return (None, enc), E
        featurizer = self.make_featurizer().fit(texts)
        X = sp.hstack([featurizer.transform(texts), sp.csr_matrix(E)], format="csr")
        return (featurizer, enc), X

    def _set_feature_state(self, state: object) -> None:
        featurizer, enc = cast(tuple[Optional[NgramFeaturizer], CachedEncoder], state)
        self.featurizer_, self.encoder_ = featurizer, enc
        self.n_tfidf_ = self.featurizer_.n_features_ if self.featurizer_ is not None else 0

    # ------------------------------------------------------------------ predict
    def _scores_from(self, texts: Sequence[str], E: np.ndarray) -> np.ndarray:
        s = (E * np.float32(self.embed_weight)) @ self.coef_[self.n_tfidf_ :] + self.intercept_
        if self.featurizer_ is not None:
            s += np.asarray(self.featurizer_.transform(texts) @ self.coef_[: self.n_tfidf_])
        return s

    def decision_function(self, X: Texts) -> np.ndarray:
        # onnxruntime already uses every core; no extra threads here
        self._check_fitted()
        texts = as_texts(X)
        return self._scores_from(texts, self.encoder_.encode(texts))

    def _score_one(self, text: str, e: np.ndarray) -> np.ndarray:
        s = (e * np.float32(self.embed_weight)) @ self.coef_[self.n_tfidf_ :] + self.intercept_
        if self.featurizer_ is not None:
            cols, w = self.featurizer_.transform_one(text)
            s = s + w @ self.coef_[cols]
        return s

    def decision_one(self, text: str) -> np.ndarray:
        return self._score_one(text, self.encoder_.encode_uncached([text])[0])

    @property
    def uses_familiarity(self) -> bool:
        return self.memory_ is not None and bool(self.reject_familiarity_weight_) and self.reject_threshold_ is not None

    def familiarity(self, E: np.ndarray) -> np.ndarray:
        """Similarity of each sentence vector in ``E`` to the nearest in-scope training message."""
        assert self.memory_ is not None
        return nearest_similarity(E, self.memory_)

    def predict_and_proba(self, X: Texts) -> tuple[np.ndarray, np.ndarray]:
        if not self.uses_familiarity:
            return super().predict_and_proba(X)
        texts = as_texts(X)
        E = self.encoder_.encode(texts)  # once, for the scores and the nearness
        proba = softmax(self._scores_from(texts, E), self.temperature_)
        if len(texts) > _DECIDE_EACH:
            return self.labels_from_proba(proba, self.familiarity(E)), proba
        # a few messages (the service's micro-batches): decide each as predict_one does; a
        # multi-threaded product with every training vector costs far more here (BLAS vs onnxruntime)
        top = proba.argmax(axis=1)
        labels = self.classes_[top].astype(object)
        for j, k in enumerate(top):
            if labels[j] != self.reject_label_ and not self._near_enough(E[j], int(k), proba[j, k]):
                labels[j] = self.reject_label_
        return labels.astype(str), proba

    def predict_one(self, text: str) -> tuple[str, float, np.ndarray]:
        self._check_fitted()
        if not self.uses_familiarity:
            return super().predict_one(text)
        e = self.encoder_.encode_uncached([text])[0]
        p = softmax(self._score_one(text, e), self.temperature_)
        i = int(np.argmax(p))
        label = str(self.classes_[i])
        if label != self.reject_label_ and not self._near_enough(e, i, p[i]):
            return str(self.reject_label_), float(p[i]), p
        return label, float(p[i]), p

    def _near_enough(self, e: np.ndarray, k: int, confidence: float) -> bool:
        """Whether the "don't know" rule (:meth:`rejects`) lets the answer stand with some training
        vector's similarity, reading as little of the memory as it can: the top class's own vectors
        first (they usually settle it), then the rest in blocks small enough for one core (BLAS
        threads here would fight the encoder's). The same answer as the rule with the nearest vector."""
        assert self.memory_ is not None and self.memory_offsets_ is not None
        lo, hi = int(self.memory_offsets_[k]), int(self.memory_offsets_[k + 1])
        if hi > lo and not self.rejects(confidence, float((self.memory_[lo:hi] @ e).max())):
            return True
        for a in range(0, len(self.memory_), _ONE_CORE_ROWS):
            if not self.rejects(confidence, float((self.memory_[a : a + _ONE_CORE_ROWS] @ e).max())):
                return True
        return False

    @contextlib.contextmanager
    def uncached(self) -> Iterator[StackedLinear]:
        cache, self.encoder_._cache = self.encoder_._cache, None
        try:
            yield self
        finally:
            self.encoder_._cache = cache

    # ------------------------------------------------------------------ state
    def get_state(self) -> tuple[JSONDict, dict[str, np.ndarray]]:
        meta = {
            "params": self.stored_params(),
            "featurizer": self.featurizer_.get_config() if self.featurizer_ is not None else None,
            **self.common_meta(),
            "encoder_id": self.encoder_.encoder_id,
        }
        arrays = {"coef": self.coef_.astype(np.float16), "intercept": self.intercept_}
        if isinstance(self.encoder_, StaticEncoder):
            meta["static_manifest"] = self.encoder_.manifest
            arrays.update(self.encoder_.as_arrays())
        if self.featurizer_ is not None:
            arrays.update(self.featurizer_.get_state())
        if self.uses_familiarity and self.memory_ is not None:
            arrays["memory"] = self.memory_.astype(np.float16)
            arrays["memory_offsets"] = np.asarray(self.memory_offsets_, dtype=np.int64)
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> StackedLinear:
        m = cls(**meta["params"])
        if m.encoder not in ENCODERS:
            raise ModelDirError(
                f"this model was trained with the encoder {m.encoder!r}, which this version of offramp does not know",
                "upgrade offramp or retrain",
            )
        if meta.get("static_manifest"):
            enc: CachedEncoder = StaticEncoder.from_arrays(meta["static_manifest"], arrays)
        else:
            enc = m.sentence_encoder()
        if enc.encoder_id != meta["encoder_id"]:
            raise ModelDirError(
                f"this model was trained with encoder {meta['encoder_id']}, but the installed one is {enc.encoder_id}",
                "install the same encoder or retrain",
            )
        feat = NgramFeaturizer.from_state(meta["featurizer"], arrays) if meta.get("featurizer") else None
        m._set_feature_state((feat, enc))
        m.load_common(meta)
        m.coef_ = np.asarray(arrays["coef"]).astype(np.float32)
        m.intercept_ = np.asarray(arrays["intercept"]).astype(np.float32)
        if m.coef_.shape != (m.n_tfidf_ + enc.dim, len(m.classes_)):
            raise ValueError("weights do not match the features and classes")
        if m.reject_familiarity_weight_:
            memory = arrays.get("memory")
            if memory is None or memory.ndim != 2 or memory.shape[1] != enc.dim or not len(memory):
                raise ValueError(
                    "the don't-know rule needs the training vectors (memory), which are missing or malformed"
                )
            offsets = arrays.get("memory_offsets")
            if (
                offsets is None
                or offsets.shape != (len(m.classes_) + 1,)
                or offsets[0] != 0
                or offsets[-1] != len(memory)
                or (np.diff(offsets) < 0).any()
            ):
                raise ValueError(
                    "the don't-know rule's class offsets into the training vectors are missing or malformed"
                )
            m.memory_ = np.asarray(memory).astype(np.float32)
            m.memory_offsets_ = np.asarray(offsets, dtype=np.int64)
        return m
