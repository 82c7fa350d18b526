"""Word and character n-gram TF-IDF features, computed with vectorised hashing.

scikit-learn's ``TfidfVectorizer`` builds n-grams one Python string at a time, which caps a
word+char model at roughly 10k messages/s and ~2 ms per single message. Here a whole batch is
turned into one array of Unicode codepoints, and every n-gram -- character n-grams and word
n-grams alike -- gets a 64-bit polynomial hash from prefix sums (``hash(a, b) = (S[b] - S[a]) *
P^-a mod 2^64``; P is odd, so it has an inverse). A lookup table maps the hash buckets kept at fit
time to columns. No Python loop runs per n-gram, and the model stores no vocabulary strings.

The weighting follows scikit-learn's recipe: sublinear tf, smooth idf, and each block (words,
characters) L2-normalised on its own, as a ``FeatureUnion`` of two vectorisers would do.
Everything learned is plain integer and float arrays, so a model directory stores it without pickle.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from offramp.data.text import fold_width, normalize

_MASK = (1 << 64) - 1
_P = 0x100000001B3  # odd multiplier of the polynomial hash
_PINV = pow(_P, -1, 1 << 64)
_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)
_SHIFT = np.uint64(31)


def csr_dot(indptr: np.ndarray, cols: np.ndarray, data: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(CSR rows) @ ``weights`` for a few rows, with plain numpy: the rows' weight rows gathered,
    scaled and summed per row."""
    out = np.zeros((len(indptr) - 1, weights.shape[1]), dtype=np.float32)
    if cols.size:
        filled = indptr[:-1] < indptr[1:]
        out[filled] = np.add.reduceat(weights[cols] * data[:, None], indptr[:-1][filled], axis=0)
    return out


def distinct(values: np.ndarray) -> np.ndarray:
    """The sorted distinct values of an integer array (``np.unique`` without options, by sorting:
    numpy 2.3+ answers that call with a hash table, over ten times slower on millions of n-gram keys)."""
    k = np.sort(np.asarray(values).ravel())
    if k.size < 2:
        return k
    keep = np.empty(k.size, dtype=bool)
    keep[0] = True
    np.not_equal(k[1:], k[:-1], out=keep[1:])
    return k[keep]


class _Tables:
    """Process-wide caches: powers of P and its inverse, and which codepoints are word characters."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pw = np.ones(1, dtype=np.uint64)
        self.ipw = np.ones(1, dtype=np.uint64)
        self.word = np.zeros(0x110000, dtype=bool)
        self.known = np.zeros(0x110000, dtype=bool)
        ascii_word = [chr(c).isalnum() or chr(c) == "_" for c in range(128)]
        self.word[:128] = ascii_word
        self.known[:128] = True

    def powers(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if self.pw.shape[0] < n:
            with self.lock:
                if self.pw.shape[0] < n:
                    size = max(n, 2 * self.pw.shape[0], 1 << 16)
                    pw = np.full(size, _P, dtype=np.uint64)
                    pw[0] = 1
                    ipw = np.full(size, _PINV, dtype=np.uint64)
                    ipw[0] = 1
                    self.ipw = np.cumprod(ipw, dtype=np.uint64)
                    self.pw = np.cumprod(pw, dtype=np.uint64)
        return self.pw, self.ipw

    def is_word(self, code: np.ndarray) -> np.ndarray:
        high = code[code >= 128]
        if high.size:
            u = distinct(high)
            new = u[~self.known[u]]
            for c in new.tolist():  # once per distinct non-ASCII codepoint per process
                ch = chr(c)
                self.word[c] = ch.isalnum() or ch == "_"
            self.known[new] = True
        return self.word[code]


_TABLES = _Tables()


_ONE_PASS_MAX = 1 << 16  # codepoints in a batch up to which all n-grams are hashed in one pass


def _salt(salt: int) -> int:
    return (salt * 0xD6E8FEB86659FD93) & _MASK


def _mix(h: np.ndarray, salt: int) -> np.ndarray:
    """Spread the bits of a polynomial hash (and make n-grams of different kinds/sizes differ)."""
    k = h ^ np.uint64(_salt(salt))
    k = k * _M1
    k ^= k >> _SHIFT
    return k * _M2


class NgramFeaturizer:
    """TF-IDF over hashed word n-grams and character n-grams.

    Parameters
    ----------
    word_ngrams : (min_n, max_n) for word n-grams (words are runs of letters, digits and ``_``),
        or None to skip words.
    char_ngrams : (min_n, max_n) for character n-grams (over the text padded with a space on
        each side), or None to skip characters.
    min_df : keep an n-gram only if it occurs in at least this many training texts.
    hash_bits : n-grams are hashed into 2**hash_bits buckets per block before selection.
    fold : apply Unicode NFKC (full-width forms) and drop invisible characters first.

    Example
    -------
    >>> f = NgramFeaturizer(min_df=1).fit(["reset my pin", "thanks a lot"])
    >>> f.transform(["reset pin"]).shape[0]
    1
    """

    word_buckets_: np.ndarray
    char_buckets_: np.ndarray
    word_idf_: np.ndarray
    char_idf_: np.ndarray
    _plan: np.ndarray | None
    _fingerprint: str | None = None

    def __init__(self, word_ngrams=(1, 2), char_ngrams=(1, 4), min_df: int = 2, hash_bits: int = 21, fold: bool = True):
        self.word_ngrams = tuple(word_ngrams) if word_ngrams else None
        self.char_ngrams = tuple(char_ngrams) if char_ngrams else None
        self.min_df = int(min_df)
        self.hash_bits = int(hash_bits)
        # NFKC and no invisible characters before the n-grams (models saved before it existed: off)
        self.fold = bool(fold)

    # ------------------------------------------------------------------ fit
    def _document_frequency(self, rows: np.ndarray, buckets: np.ndarray) -> np.ndarray:
        size = 1 << self.hash_bits
        pairs = distinct(rows * size + buckets)
        return np.bincount(pairs & (size - 1), minlength=size)

    def fit(self, texts: Sequence[str]) -> NgramFeaturizer:
        if not self.word_ngrams and not self.char_ngrams:
            raise ValueError("NgramFeaturizer needs word_ngrams or char_ngrams")
        n_docs = len(texts)
        self.n_docs_ = n_docs
        self._plan = None  # see _char_plan
        rows, buckets, n_word = self._hashed_all(texts)
        size = 1 << self.hash_bits
        words = (rows[:n_word], buckets[:n_word])
        chars = (rows[n_word:], buckets[n_word:] - size)
        for name, (r, b) in (("word", words), ("char", chars)):
            df = self._document_frequency(r, b)
            kept = np.flatnonzero(df >= self.min_df).astype(np.int64)
            setattr(self, f"{name}_buckets_", kept)
            setattr(self, f"{name}_idf_", (np.log((1 + n_docs) / (1 + df[kept])) + 1).astype(np.float32))
        self._build_lookup()
        return self

    def fingerprint(self) -> str:
        """A digest of what this featurizer computes (its settings and everything it learned): two
        featurizers with the same fingerprint give every text the same features."""
        if self._fingerprint is None:
            digest = hashlib.sha256(repr(self.get_config()).encode())
            for name, arr in sorted(self.get_state().items()):
                digest.update(name.encode())
                digest.update(np.ascontiguousarray(arr).tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def _build_lookup(self) -> None:
        self._fingerprint = None
        self.n_word_ = len(self.word_buckets_)
        self._plan = None  # see _char_plan
        self.n_features_ = self.n_word_ + len(self.char_buckets_)
        size = 1 << self.hash_bits
        # one table, words in the first half and characters in the second (the single-message path
        # looks both up at once)
        self._lut = np.full(2 * size, -1, dtype=np.int32)
        self._word_lut, self._char_lut = self._lut[:size], self._lut[size:]
        self._word_lut[self.word_buckets_] = np.arange(self.n_word_, dtype=np.int32)
        self._char_lut[self.char_buckets_] = np.arange(len(self.char_buckets_), dtype=np.int32) + self.n_word_
        self.idf_ = np.concatenate([self.word_idf_, self.char_idf_]).astype(np.float32)

    # ------------------------------------------------------------------ transform
    def _pairs(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(row, column) for every known n-gram occurrence, duplicates kept."""
        rows, buckets, _ = self._hashed_all(texts) if len(texts) > 1 else self._hashed(texts)
        cols = self._lut[buckets]
        known = cols >= 0
        return rows[known], cols[known]

    def _hashed_all(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, int]:
        """:meth:`_hashed` for a batch of any size, a slice of at most about ``_ONE_PASS_MAX``
        codepoints at a time (so memory stays bounded); rows count from the first text."""
        bounds, size = [0], 0
        for i, text in enumerate(texts):
            size += len(text) + 2
            if size > _ONE_PASS_MAX and i > bounds[-1]:
                bounds.append(i)
                size = len(text) + 2
        bounds.append(len(texts))
        if len(bounds) == 2:
            return self._hashed(texts)
        parts = [self._hashed(texts[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        rows = [r[:n] + a for (r, _, n), a in zip(parts, bounds)] + [r[n:] + a for (r, _, n), a in zip(parts, bounds)]
        buckets = [b[:n] for _, b, n in parts] + [b[n:] for _, b, n in parts]
        return np.concatenate(rows), np.concatenate(buckets), sum(n for _, _, n in parts)

    def _hashed(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, int]:
        """(row, bucket, n_word) for every n-gram occurrence in ``texts``, duplicates kept: the first
        ``n_word`` are word n-grams, the rest character n-grams (their buckets offset by
        2**hash_bits, the second half of the lookup table). The one implementation of the hashing,
        for fitting and transforming alike.

        Every n-gram of every size is hashed and mixed in one pass, in as few array operations as
        possible: for one message or a few, the cost is the number of numpy calls more than their size.
        """
        if self.fold:
            texts = [fold_width(x) for x in texts]
        padded = [" " + t + " " if t else "" for t in (normalize(x) for x in texts)]
        joined = "".join(padded)
        empty = np.zeros(0, np.int64), np.zeros(0, np.intp), 0
        if not joined:
            return empty
        code = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.uint64)
        total = code.shape[0]
        pw, ipw = _TABLES.powers(total + 1)
        prefix = np.empty(total + 1, dtype=np.uint64)
        prefix[0] = 0
        np.cumsum(code * pw[:total], out=prefix[1:])
        lengths = [len(t) for t in padded]
        doc_of = (
            np.repeat(np.arange(len(padded), dtype=np.int64), lengths) if len(padded) > 1 else np.zeros(total, np.int64)
        )
        hashes, salts, rows = [], [], []
        if self.word_ngrams:
            # every text is padded with spaces, so word runs alternate start, end, start, end ...
            is_word = _TABLES.word[code] if joined.isascii() else _TABLES.is_word(code)
            edges = np.flatnonzero(is_word[1:] != is_word[:-1]) + 1
            starts = edges[0::2]
            h = (prefix[edges[1::2]] - prefix[starts]) * ipw[starts]
            docs = doc_of[starts]
            lo, hi = self.word_ngrams
            hn, sizes = h, []
            for n in range(1, hi + 1):
                if n > 1:  # hash of tokens j..j+n-1 from the hash of j..j+n-2
                    hn = hn[:-1] * _M1 + h[n - 1 :]
                if n >= lo and hn.size:
                    d = docs[: hn.size]
                    if n > 1 and len(padded) > 1:  # no n-gram across two texts
                        same = d == docs[n - 1 :]
                        hn_kept, d = hn[same], d[same]
                    else:
                        hn_kept = hn
                    hashes.append(hn_kept)
                    rows.append(d)
                    sizes.append((_salt(100 + n), hn_kept.size))
            if sizes:
                salts.append(np.repeat(np.array([x for x, _ in sizes], dtype=np.uint64), [c for _, c in sizes]))
        n_word = sum(x.size for x in hashes)
        if self.char_ngrams:
            # no n-gram across two texts
            doc_end = np.repeat(np.cumsum(lengths), lengths) if len(padded) > 1 else None
            starts, ends, char_salts, inv = self._char_plan(total, doc_end)
            hashes.append((prefix[ends] - prefix[starts]) * inv)
            salts.append(char_salts)
            rows.append(doc_of[starts])
        if not hashes:
            return empty
        k = np.concatenate(hashes) if len(hashes) > 1 else hashes[0]
        k ^= salts[0] if len(salts) == 1 else np.concatenate(salts)
        k *= _M1  # the same mixing as _mix, in place
        k ^= k >> _SHIFT
        k *= _M2
        k >>= np.uint64(64 - self.hash_bits)
        buckets = k.astype(np.intp)
        buckets[n_word:] += 1 << self.hash_bits  # character n-grams look up the second half
        row = np.concatenate(rows) if len(rows) > 1 else rows[0]
        return row, buckets, n_word

    def _weigh(self, rows: np.ndarray, cols: np.ndarray, counts: np.ndarray | None) -> np.ndarray:
        """Counts -> sublinear tf * idf, each block L2-normalised per row. ``rows`` and ``cols`` are
        sorted by row, then column (so within a row the word block comes before the character
        block); ``counts`` None means every n-gram occurs once."""
        w = self.idf_[cols].astype(np.float64)
        if counts is not None:
            w *= 1.0 + np.log(counts)
        # one segment per (row, block), each normalised on its own
        seg = rows * 2 + (cols >= self.n_word_)
        change = np.empty(seg.size, dtype=bool)
        change[0] = True
        np.not_equal(seg[1:], seg[:-1], out=change[1:])
        starts = np.flatnonzero(change)
        norm = np.sqrt(np.add.reduceat(w * w, starts))
        norm[norm == 0] = 1.0
        w /= np.repeat(norm, np.diff(starts, append=w.size))
        return w.astype(np.float32)

    def transform(self, texts: Sequence[str], chunk_size: int = 2048) -> sp.csr_matrix:
        """TF-IDF matrix, one row per text (rows of unknown text are all zero).

        Works through the texts in chunks: the hashing arrays of a chunk stay in cache, which
        measured about twice as fast as one pass over tens of thousands of texts.
        """
        parts = [self._transform_chunk(texts[i : i + chunk_size]) for i in range(0, len(texts), chunk_size)]
        if not parts:
            return sp.csr_matrix((0, self.n_features_), dtype=np.float32)
        return parts[0] if len(parts) == 1 else sp.vstack(parts, format="csr")

    def _transform_chunk(self, texts: Sequence[str]) -> sp.csr_matrix:
        indptr, cols, data = self.transform_arrays(texts)
        return sp.csr_matrix((data, cols, indptr), shape=(len(texts), self.n_features_))

    def transform_arrays(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(indptr, columns, weights) of ``transform(texts)`` in CSR layout, without building the
        sparse matrix (whose construction costs more than the features of a few messages)."""
        n = len(texts)
        rows, cols = self._pairs(texts)
        keys = rows * self.n_features_ + cols
        keys.sort()  # by row, then column: np.unique(return_counts=True), without its overhead
        total = keys.size
        if total == 0:
            return np.zeros(n + 1, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        new = np.empty(total, dtype=bool)
        new[0] = True
        np.not_equal(keys[1:], keys[:-1], out=new[1:])
        first = np.flatnonzero(new)
        rows, cols = np.divmod(keys[first], self.n_features_)
        counts = np.diff(first, append=total) if first.size < total else None
        data = self._weigh(rows, cols, counts)
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
        return indptr, cols, data

    def _char_plan(self, total: int, doc_end: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        """(starts, ends, salts, P^-start) of every character n-gram that ends within ``total``
        codepoints (and within its own text: ``doc_end[i]`` is where the text holding position i ends).

        One plan, position by position, serves every length: the n-grams of a text of length L are
        the first entries of the plan (those starting before L) that also end by L. It grows to the
        longest text (or batch) seen, so its memory is bounded by the size limits.
        """
        assert self.char_ngrams is not None
        lo, hi = self.char_ngrams
        per = hi - lo + 1
        plan = self._plan
        if plan is None or plan.shape[1] < per * total:
            size = max(total, 256, 2 * (plan.shape[1] // per if plan is not None else 0))
            sizes = np.arange(lo, hi + 1, dtype=np.uint64)
            starts = np.repeat(np.arange(size, dtype=np.uint64), per)
            _, ipw = _TABLES.powers(size + 1)
            plan = np.stack(
                [
                    starts,
                    starts + np.tile(sizes, size),
                    np.tile(np.array([_salt(int(n)) for n in sizes], dtype=np.uint64), size),
                    ipw[:size].repeat(per),
                ]
            )
            self._plan = plan
        plan = plan[:, : per * total]
        if hi > 1 or doc_end is not None:
            plan = plan.compress(plan[1] <= (total if doc_end is None else doc_end[plan[0].view(np.int64)]), axis=1)
        return plan[0].view(np.int64), plan[1].view(np.int64), plan[2], plan[3]

    def transform_one(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Column indices and weights of one text: the fast path for single messages."""
        cols = self._pairs([text])[1]
        if cols.size == 0:
            return cols, np.zeros(0, np.float32)
        cols.sort()  # np.unique(return_counts=True), without its overhead
        n = cols.size
        new = np.empty(n, dtype=bool)
        new[0] = True
        np.not_equal(cols[1:], cols[:-1], out=new[1:])
        first = np.flatnonzero(new)
        cols = cols[first].astype(np.int64)
        w = self.idf_[cols]
        if first.size < n:  # some n-gram occurs more than once: sublinear tf = 1 + log(count)
            counts = np.empty(first.size, dtype=np.float32)
            np.subtract(first[1:], first[:-1], out=counts[:-1], casting="unsafe")
            counts[-1] = n - first[-1]
            w *= 1.0 + np.log(counts)
        split = int(np.searchsorted(cols, self.n_word_))  # cols are sorted: words first, then chars
        for part in (w[:split], w[split:]):
            norm = float(np.sqrt(np.dot(part, part)))
            if norm > 0:
                part /= norm
        return cols, w

    def fit_transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        return self.fit(texts).transform(texts)

    # ------------------------------------------------------------------ state
    def get_config(self) -> dict:
        return {
            "word_ngrams": list(self.word_ngrams) if self.word_ngrams else None,
            "char_ngrams": list(self.char_ngrams) if self.char_ngrams else None,
            "min_df": self.min_df,
            "hash_bits": self.hash_bits,
            "fold": self.fold,
        }

    def get_state(self) -> dict[str, np.ndarray]:
        """Learned state as named arrays: no Python objects, safe to store."""
        return {
            "word_buckets": self.word_buckets_.astype(np.int64),
            "word_idf": self.word_idf_,
            "char_buckets": self.char_buckets_.astype(np.int64),
            "char_idf": self.char_idf_,
        }

    @classmethod
    def from_state(cls, config: dict, arrays: dict[str, np.ndarray]) -> NgramFeaturizer:
        f = cls(
            word_ngrams=config.get("word_ngrams"),
            char_ngrams=config.get("char_ngrams"),
            min_df=config.get("min_df", 2),
            hash_bits=config.get("hash_bits", 21),
            fold=bool(config.get("fold", False)),
        )
        if not 8 <= f.hash_bits <= 26:
            raise ValueError(f"hash_bits {f.hash_bits} is out of range")
        for name in ("word", "char"):
            buckets = np.asarray(arrays[f"{name}_buckets"], dtype=np.int64)
            idf = np.asarray(arrays[f"{name}_idf"], dtype=np.float32)
            if buckets.shape != idf.shape or buckets.ndim != 1:
                raise ValueError(f"featurizer state is inconsistent ({name} buckets and idf lengths differ)")
            if buckets.size and (buckets.min() < 0 or buckets.max() >= 1 << f.hash_bits):
                raise ValueError(f"featurizer state is inconsistent ({name} bucket out of range)")
            setattr(f, f"{name}_buckets_", buckets)
            setattr(f, f"{name}_idf_", idf)
        f._build_lookup()
        return f
