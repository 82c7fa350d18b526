"""A static-embedding model as one ONNX graph: token ids in, calibrated probabilities out.

The exported directory holds

    model.onnx       inputs ``input_ids`` (int64, [batch, tokens]) and ``attention_mask`` (int64,
                     1 per real token, 0 for padding); outputs ``probabilities`` (float32,
                     [batch, labels]) and, when the model's "don't know" rule measures nearness to
                     its training messages, ``familiarity`` (float32, [batch])
    tokenizer.json   the tokenizer (Hugging Face ``tokenizers`` format, also read by its
                     JavaScript, Rust and other ports); ids without special tokens, at most 512
    labels.json      the labels in output order, the "don't know" rule, how it was made

The graph does what offramp does: the token rows of the static table are averaged over the mask,
the mean is L2-normalised and scaled by the model's embedding weight, a linear layer gives the
scores, and a softmax at the fitted temperature gives the probabilities. ``int8=True`` stores the
table as int8 with one scale per token row (a quarter of float32's size).

Only models of static embeddings alone can be exported: n-gram features are built from Unicode
normalisation and 64-bit polynomial hashes of codepoints, which standard ONNX operators do not
reproduce faithfully, and a transformer encoder is not part of a model directory. Those models
are refused with one line naming their family and what can be exported.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from offramp.encoders.static import MAX_TOKENS, StaticEncoder
from offramp.errors import OfframpError, UsageError
from offramp.estimators.base import TextClassifier, load_model
from offramp.estimators.stacked import StackedLinear
from offramp.types import JSONDict
from offramp.version import __version__

FORMATS = ("onnx",)
OPSET = 17
INSTALL_HINT = 'pip install -e ".[export]" (it pins onnx)'


class ExportUnsupported(OfframpError):
    """The model's family cannot be written in the asked format."""

    exit_code = 2


@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote."""

    path: str
    format: str
    family: str
    labels: list[str]
    int8: bool
    size_bytes: int

    def to_dict(self) -> JSONDict:
        return dict(self.__dict__)


def _refuse(model: TextClassifier) -> None:
    family = getattr(model, "family", type(model).__name__)
    supported = "static embeddings alone (a stacked-linear model with encoder static-minilm and no n-grams)"
    if not isinstance(model, StackedLinear):
        raise ExportUnsupported(
            f"a {family} model cannot be exported to ONNX: its hashed word and character n-grams (after Unicode "
            "normalisation) have no faithful ONNX form",
            f"ONNX export supports {supported}",
        )
    if model.uses_tfidf:
        raise ExportUnsupported(
            f"this {family} model stacks hashed word and character n-grams, which have no faithful ONNX form",
            f"ONNX export supports {supported}",
        )
    if not isinstance(model.encoder_, StaticEncoder):
        raise ExportUnsupported(
            f"this {family} model uses the {model.encoder} transformer encoder, which is not part of the model",
            f"ONNX export supports {supported}",
        )


def build_graph(model: StackedLinear, int8: bool = False) -> Any:
    """The ONNX ``ModelProto`` of ``model`` (see the module doc)."""
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        raise ExportUnsupported("ONNX export needs the onnx package, which is not installed", INSTALL_HINT) from None
    enc = model.encoder_
    assert isinstance(enc, StaticEncoder)
    table = np.asarray(enc.vectors, dtype=np.float32)
    inits = []
    nodes = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [output], **attrs))
        return output

    if int8:
        scale = np.abs(table).max(axis=1) / 127.0
        scale[scale == 0] = 1.0
        q = np.clip(np.rint(table / scale[:, None]), -127, 127).astype(np.int8)
        rows_q = node("Gather", [const("table_int8", q), "input_ids"], "rows_q", axis=0)
        rows_f = node("Cast", [rows_q], "rows_f", to=TensorProto.FLOAT)
        scales = node("Gather", [const("row_scale", scale.astype(np.float32)), "input_ids"], "scales", axis=0)
        scales3 = node("Unsqueeze", [scales, const("axis2", np.array([2], dtype=np.int64))], "scales3")
        rows = node("Mul", [rows_f, scales3], "rows")
    else:  # the float16 table offramp stores, widened as offramp widens it: the same float32 values
        rows16 = node(
            "Gather", [const("table", np.asarray(enc.vectors, dtype=np.float16)), "input_ids"], "rows16", axis=0
        )
        rows = node("Cast", [rows16], "rows", to=TensorProto.FLOAT)
    mask = node("Cast", ["attention_mask"], "mask", to=TensorProto.FLOAT)
    mask3 = node("Unsqueeze", [mask, const("axis2b", np.array([2], dtype=np.int64))], "mask3")
    masked = node("Mul", [rows, mask3], "masked")
    axis1 = const("axis1", np.array([1], dtype=np.int64))
    total = node("ReduceSum", [masked, axis1], "total", keepdims=0)
    count = node("ReduceSum", [mask, axis1], "count", keepdims=1)
    count = node("Max", [count, const("one", np.array(1.0, dtype=np.float32))], "count1")
    mean = node("Div", [total, count], "mean")
    sq = node("Mul", [mean, mean], "sq")
    norm = node("Sqrt", [node("ReduceSum", [sq, axis1], "sqsum", keepdims=1)], "norm")
    norm = node("Max", [norm, const("tiny", np.array(1e-12, dtype=np.float32))], "norm1")
    unit = node("Div", [mean, norm], "unit")
    coef = np.asarray(model.coef_[model.n_tfidf_ :], dtype=np.float32) * np.float32(model.embed_weight)
    scores = node("MatMul", [unit, const("coef", coef)], "scores_raw")
    scores = node("Add", [scores, const("intercept", np.asarray(model.intercept_, dtype=np.float32))], "scores")
    scaled = node("Div", [scores, const("temperature", np.array(model.temperature_, dtype=np.float32))], "scaled")
    node("Softmax", [scaled], "probabilities", axis=-1)
    outputs = [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", len(model.classes_)])]
    if model.uses_familiarity:
        assert model.memory_ is not None
        sims = node("MatMul", [unit, const("memory_t", np.ascontiguousarray(model.memory_.T))], "sims")
        node("ReduceMax", [sims], "familiarity", axes=[1], keepdims=0)
        outputs.append(helper.make_tensor_value_info("familiarity", TensorProto.FLOAT, ["batch"]))
    graph = helper.make_graph(
        nodes,
        "offramp_static",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "tokens"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "tokens"]),
        ],
        outputs,
        initializer=inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="offramp")
    proto.ir_version = 8  # read by onnxruntime 1.14+ and onnxruntime-web
    proto.producer_version = __version__
    onnx.checker.check_model(proto)
    return proto


def labels_doc(model: StackedLinear, int8: bool) -> JSONDict:
    enc = model.encoder_
    assert isinstance(enc, StaticEncoder)
    reject = None
    if model.reject_threshold_ is not None:
        reject = {
            "label": str(model.reject_label_),
            "threshold": float(model.reject_threshold_),
            "familiarity_weight": float(model.reject_familiarity_weight_ or 0.0),
            "rule": "answer reject.label when max(probabilities) + familiarity_weight * familiarity < threshold",
        }
    return {
        "labels": [str(c) for c in model.classes_],
        "reject": reject,
        "inputs": {
            "input_ids": f"tokenizer.json ids of the text without special tokens, at most {MAX_TOKENS}",
            "attention_mask": "1 for each token, 0 for padding",
        },
        "outputs": ["probabilities"] + (["familiarity"] if model.uses_familiarity else []),
        "family": model.family,
        "encoder_id": enc.encoder_id,
        "static_manifest": enc.manifest,
        "temperature": float(model.temperature_),
        "int8": int8,
        "opset": OPSET,
        "offramp_version": __version__,
    }


def export_onnx(
    model: TextClassifier | str | os.PathLike[str], out: str | os.PathLike[str], int8: bool = False
) -> ExportResult:
    """Write ``model`` (a fitted model or its directory) to the new directory ``out`` as
    ``model.onnx``, ``tokenizer.json`` and ``labels.json`` (see the module doc)."""
    out = Path(out)
    if out.exists():
        raise UsageError(f"{out} already exists", "choose a new --out directory or remove it", param="out")
    m = load_model(model) if isinstance(model, (str, os.PathLike)) else model
    _refuse(m)
    assert isinstance(m, StackedLinear)
    proto = build_graph(m, int8)
    enc = m.encoder_
    assert isinstance(enc, StaticEncoder)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=out.parent))
    try:
        (tmp / "model.onnx").write_bytes(proto.SerializeToString())
        (tmp / "tokenizer.json").write_text(enc.tokenizer_json, encoding="utf-8")
        doc = labels_doc(m, int8)
        (tmp / "labels.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    size = sum(p.stat().st_size for p in out.iterdir())
    return ExportResult(str(out), "onnx", m.family, [str(c) for c in m.classes_], int8, size)


def export_model(
    model: TextClassifier | str | os.PathLike[str], out: str | os.PathLike[str], fmt: str = "onnx", int8: bool = False
) -> ExportResult:
    """Export ``model`` in ``fmt`` (one of :data:`FORMATS`)."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}", f"use one of: {', '.join(FORMATS)}", param="format")
    return export_onnx(model, out, int8=int8)


def encode_for_onnx(tokenizer_json: str, texts: list[str]) -> dict[str, np.ndarray]:
    """``input_ids`` and ``attention_mask`` for ``texts``, as the exported graph reads them."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tokenizer_json)
    tok.no_padding()
    tok.enable_truncation(max_length=MAX_TOKENS)
    encs = tok.encode_batch(list(texts), add_special_tokens=False)
    width = max(1, max((len(e.ids) for e in encs), default=1))
    ids = np.zeros((len(texts), width), dtype=np.int64)
    mask = np.zeros((len(texts), width), dtype=np.int64)
    for i, e in enumerate(encs):
        ids[i, : len(e.ids)] = e.ids
        mask[i, : len(e.ids)] = 1
    return {"input_ids": ids, "attention_mask": mask}
