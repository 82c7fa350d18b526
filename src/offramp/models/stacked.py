"""The accurate tier: sentence embeddings, alone or stacked with TF-IDF, into one linear model.

Features are ``[TF-IDF (words + chars) | weight * sentence embedding]``: the n-grams catch exact
wording (product names, error codes), the embedding catches paraphrase. One linear classifier
over both learns how much to trust each. Without n-grams (``word_ngrams=char_ngrams=None``) it is
plain embeddings + a linear classifier.

The encoder itself is not stored in the model directory: the directory names the encoder it was
trained with (its ONNX file's SHA-256) and loading refuses a different one.
"""

from __future__ import annotations

import contextlib
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp

from offramp.models.encoder import DIM, SentenceEncoder
from offramp.models.features import NgramFeaturizer
from offramp.models.tfidf import TfidfLinear


class StackedLinear(TfidfLinear):
    """Sentence embeddings (optionally stacked with TF-IDF) and a linear classifier.

    Parameters
    ----------
    word_ngrams, char_ngrams, min_df : TF-IDF part; both n-gram ranges None means embeddings only.
    embed_weight : multiplier on the (unit-length) embedding before it joins the TF-IDF columns.
    loss, C, seed : the linear classifier, as in :class:`TfidfLinear`.
    """

    family = "stacked-linear"

    def __init__(self, word_ngrams=(1, 2), char_ngrams=(1, 4), min_df: int = 2, loss: str = "svm",
                 C: float = 0.5, seed: int = 0, embed_weight: float = 1.0):
        super().__init__(word_ngrams, char_ngrams, min_df, loss, C, seed)
        self.embed_weight = embed_weight

    @property
    def uses_tfidf(self) -> bool:
        return bool(self.word_ngrams or self.char_ngrams)

    def get_params(self) -> dict[str, Any]:
        return {**super().get_params(), "embed_weight": self.embed_weight}

    @staticmethod
    def encoder() -> SentenceEncoder:
        return SentenceEncoder.shared()

    def feature_key(self) -> str:
        tfidf = super().feature_key() if self.uses_tfidf else "none"
        return f"stacked|{tfidf}|w={self.embed_weight}"

    def estimate_feature_seconds(self, texts: Sequence[str]) -> float:
        return self.encoder().estimate_seconds(texts)

    def build_features(self, texts: Sequence[str]):
        enc = self.encoder()
        E = enc.encode(texts) * np.float32(self.embed_weight)
        if not self.uses_tfidf:
            return (None, enc), E
        featurizer = self.make_featurizer().fit(texts)
        X = sp.hstack([featurizer.transform(texts), sp.csr_matrix(E)], format="csr")
        return (featurizer, enc), X

    def _set_feature_state(self, state) -> None:
        self.featurizer_, self.encoder_ = state
        self.n_tfidf_ = self.featurizer_.n_features_ if self.featurizer_ is not None else 0

    # ------------------------------------------------------------------ predict
    def _scores(self, texts: Sequence[str]) -> np.ndarray:
        E = self.encoder_.encode(texts) * np.float32(self.embed_weight)
        s = E @ self.coef_[self.n_tfidf_ :] + self.intercept_
        if self.featurizer_ is not None:
            s += np.asarray(self.featurizer_.transform(texts) @ self.coef_[: self.n_tfidf_])
        return s

    def decision_function(self, texts: Sequence[str]) -> np.ndarray:
        # onnxruntime already uses every core; no extra threads here
        return self._scores(list(texts))

    def decision_one(self, text: str) -> np.ndarray:
        e = self.encoder_.encode_uncached([text])[0] * np.float32(self.embed_weight)
        s = e @ self.coef_[self.n_tfidf_ :] + self.intercept_
        if self.featurizer_ is not None:
            cols, w = self.featurizer_.transform_one(text)
            s = s + w @ self.coef_[cols]
        return s

    @contextlib.contextmanager
    def uncached(self):
        cache, self.encoder_._cache = self.encoder_._cache, None
        try:
            yield self
        finally:
            self.encoder_._cache = cache

    # ------------------------------------------------------------------ state
    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {
            "params": self.get_params(),
            "featurizer": self.featurizer_.get_config() if self.featurizer_ is not None else None,
            **self.common_meta(),
            "encoder_id": self.encoder_.encoder_id,
        }
        arrays = {"coef": self.coef_.astype(np.float16), "intercept": self.intercept_}
        if self.featurizer_ is not None:
            arrays.update(self.featurizer_.get_state())
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> "StackedLinear":
        from offramp.errors import ModelDirError

        m = cls(**meta["params"])
        enc = cls.encoder()
        if enc.encoder_id != meta["encoder_id"]:
            raise ModelDirError(f"this model was trained with encoder {meta['encoder_id']}, "
                                f"but the installed one is {enc.encoder_id}", "install the same encoder or retrain")
        feat = NgramFeaturizer.from_state(meta["featurizer"], arrays) if meta.get("featurizer") else None
        m._set_feature_state((feat, enc))
        m.load_common(meta)
        m.coef_ = np.asarray(arrays["coef"]).astype(np.float32)
        m.intercept_ = np.asarray(arrays["intercept"]).astype(np.float32)
        if m.coef_.shape != (m.n_tfidf_ + DIM, len(m.classes_)):
            raise ValueError("weights do not match the features and classes")
        return m

