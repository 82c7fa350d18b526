"""The model card: a Markdown account of a trained model, filled from the real training facts."""

from __future__ import annotations

from typing import Any


def fitted_bound(rejection: dict) -> float | None:
    """The lower confidence bound of the target's figure at the chosen threshold, or None when the
    target was fitted to the figure itself (or before targets had a level)."""
    bound = rejection.get("held_out", {}).get("lower_bound")
    return float(bound) if rejection.get("confidence") and bound is not None else None


def score_name(rejection: dict) -> str:
    """How the fitted rule scores a message, in words ("confidence" or confidence plus nearness)."""
    w = rejection.get("familiarity_weight") or 0
    return f"confidence + {w:g} x similarity to the nearest training message" if w else "confidence"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def render_multilabel_card(info: dict[str, Any], metrics: dict[str, Any]) -> str:
    """MODEL_CARD.md of a multi-label model: labels, per-label thresholds, co-occurrence, CV figures."""
    cv, data = metrics["cv"], info["data"]
    lines = [
        f"# offramp multi-label model: {info['winner']}",
        "",
        f"Trained {info['created']} in {metrics['train_seconds']:.1f} s (seed {info['seed']}). A message may carry "
        f"several of the labels below, or none; in files they are joined by {info['label_sep']!r}.",
        "",
        "## Training data",
        "",
        f"- source: `{data['path']}` ({data['n']} messages, {data['empty_rows']} with no label)",
        "",
        "## Labels, per-label thresholds and cross-validated quality",
        "",
        "| label | messages | threshold | precision | recall | F1 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for lab, n in data["label_counts"].items():
        pl = cv["per_label"][lab]
        lines.append(
            f"| {lab} | {n} | {info['thresholds'][lab]:.3f} | {pl['precision']:.3f} | {pl['recall']:.3f} | {pl['f1']:.3f} |"
        )
    target = info.get("label_precision")
    lines += [
        "",
        "Each threshold was fitted on out-of-fold probabilities "
        + (f"as the lowest reaching precision {target:g}." if target else "to maximise that label's F1."),
        "",
        f"- micro-F1 {cv['micro_f1']:.4f}, macro-F1 {cv['macro_f1']:.4f}, samples-F1 {cv['samples_f1']:.4f}, "
        f"subset accuracy {cv['subset_accuracy']:.4f}, Hamming loss {cv['hamming_loss']:.4f}",
        "",
        "## Labels that come together",
        "",
        "| labels | messages |",
        "|---|---:|",
    ]
    lines += [f"| {' + '.join(c['labels'])} | {c['messages']} |" for c in info.get("cooccurrence", [])] or [
        "| (none) | 0 |"
    ]
    return "\n".join(lines) + "\n"


def render_card(info: dict[str, Any], metrics: dict[str, Any]) -> str:
    """Markdown for MODEL_CARD.md from the training summary and metrics."""
    if info.get("multi_label"):
        return render_multilabel_card(info, metrics)
    data = info["data"]
    lines = [
        f"# offramp model: {info['winner']}",
        "",
        f"Trained {info['created']} with offramp {info['offramp_version']} in {info['train_seconds']:.1f} s "
        f"(quality {info.get('quality', 'fast')}, "
        + ("no time limit" if info.get("time_limit") is None else f"time limit {info['time_limit']:.0f} s")
        + f", seed {info['seed']}"
        + (f", latency budget {info['latency_budget_ms']:g} ms" if info.get("latency_budget_ms") else "")
        + ").",
        "",
        "## Intended use",
        "",
        "Classifies short texts into the labels below, as the training data defined them. It is meant to take",
        "over a narrow, stable task from an LLM; it knows nothing beyond these labels and should be re-evaluated",
        "(`offramp eval`) whenever the incoming traffic changes. Low-confidence predictions are the ones to route",
        "to a person or an LLM.",
        "",
        "## Training data",
        "",
        f"- source: `{data['path']}` ({data['rows_read']} rows read, {data['n']} used)",
        f"- mean length: {data['mean_chars']:.0f} characters",
    ]
    for w in data.get("warnings", []):
        lines.append(f"- warning: {w}")
    lines += ["", "| label | examples |", "|---|---:|"]
    for lab, c in data["class_counts"].items():
        lines.append(f"| {lab} | {c} |")
    enc = metrics.get("encoder")
    if enc:
        shares = ", ".join(
            f"{k} {v:.0%}" for k, v in sorted(enc["languages"]["shares"].items(), key=lambda kv: -kv[1]) if v >= 0.01
        )
        lines += [
            "",
            "## Languages and sentence encoder",
            "",
            f"- languages of {enc['languages']['sample']} sampled messages: {shares or 'none detected'}",
            f"- accurate-tier encoder: `{enc['name']}` ({enc.get('title', '')}): {enc['reason']}"
            + ("" if enc.get("used", True) else "; the chosen model does not use it"),
        ]
        if enc.get("warning"):
            lines.append(f"- warning: {enc['warning']}")
    lines += [
        "",
        "## Quality (cross-validated on the training data)",
        "",
        f"- folds: {info['n_folds']} (stratified)",
        f"- macro-F1: {metrics['cv_macro_f1']:.4f}, accuracy: {metrics['cv_accuracy']:.4f}",
        f"- expected calibration error: {metrics['ece_uncalibrated']:.4f} before, "
        f"{metrics['ece_calibrated']:.4f} after temperature scaling (T = {metrics['temperature']:.3f})",
        "",
    ]
    rej = metrics.get("rejection")
    if rej:
        h = rej["held_out"]
        lines += [
            "## Don't know",
            "",
            f"Messages whose {score_name(rej)} is under {rej['threshold']:.4f} are answered `{rej['label']}`. The threshold "
            f"was fitted on {rej['source']} ({rej['n_held_out']} messages, {rej['n_oos_held_out']} out of scope) "
            f"to the target {rej['target']} ({'met' if rej['met'] else 'NOT met'}"
            + ("" if fitted_bound(rej) is None else f"; lower bound of that figure {fitted_bound(rej):.4f}")
            + f"). There it gave: in-scope precision "
            f"{h['in_scope_precision']:.4f}, in-scope accuracy {h['in_scope_accuracy']:.4f}, "
            f"out-of-scope recall {'—' if h['oos_recall'] is None else format(h['oos_recall'], '.4f')}, "
            f"answered {h['coverage']:.1%}."
            + (
                f" The model was then refitted with the {rej['refit_with_val']:,} held-out messages whose "
                "label it knows added to its training rows, keeping this rule; the figures are from before."
                if rej.get("refit_with_val")
                else ""
            ),
            "",
        ]
        if rej.get("familiarity_auc"):
            lines += [
                "How well each weight of the similarity separated right answers from out-of-scope messages "
                "(or, without any, from wrong answers) on that data (ROC AUC): "
                + ", ".join(f"{w}: {a:.4f}" for w, a in rej["familiarity_auc"].items())
                + f"; chosen: {rej['familiarity_weight']:g}"
                + (f", with {rej['memory_size']:,} training vectors kept" if rej.get("memory_size") else "")
                + ".",
                "",
            ]
    lines += [
        "## What was tried",
        "",
        "| candidate | description | CV macro-F1 | ± SE | CV accuracy | µs per message (batch) "
        "| p99 ms (one message) | size MB | seconds | status |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in info["candidates"]:
        f1 = "—" if r["cv_macro_f1"] is None else f"{r['cv_macro_f1']:.4f}"
        se = "—" if r.get("cv_macro_f1_se") is None else f"{r['cv_macro_f1_se']:.4f}"
        cost = "—" if r.get("cost_us") is None else f"{r['cost_us']:,.1f}"
        acc = "—" if r["cv_accuracy"] is None else f"{r['cv_accuracy']:.4f}"
        lat = "—" if r.get("latency_p99_ms") is None else f"{r['latency_p99_ms']:.2f}"
        size = "—" if r.get("size_bytes") is None else f"{r['size_bytes'] / 1e6:.2f}"
        mark = " **(chosen)**" if r["name"] == info["winner"] else ""
        lines.append(
            f"| {r['name']}{mark} | {r['description']} | {f1} | {se} | {acc} | {cost} | {lat} | {size} "
            f"| {r['seconds']:.1f} | {r['status']} |"
        )
    skipped = [r["name"] for r in info["candidates"] if str(r["status"]).startswith("skipped")]
    if skipped:
        lines += [
            "",
            f"Skipped to keep within the time limit: {', '.join(skipped)}. Train with no time limit "
            "(`time_limit=None`; on the command line `--time-limit none`) to try every candidate; the choice then "
            "depends only on the data and the seed.",
        ]
    if info.get("rule") == "cheapest":
        loss = info.get("max_quality_loss")
        chosen = (
            "Chosen: the cheapest candidate (µs per message) whose cross-validated macro-F1 is within "
            + (f"{loss:g}" if loss is not None else "one standard error")
            + " of the highest"
        )
    else:
        chosen = "Chosen: the highest cross-validated macro-F1 (ties, to 4 decimals, go to the candidate listed first)"
    lines += [
        "",
        chosen
        + (
            f" among candidates within the {info['latency_budget_ms']:g} ms latency budget"
            if info.get("latency_budget_ms")
            else ""
        )
        + ". Accurate-tier candidates also need their shared sentence encoder (installed once, not stored here); "
        "static-tier models carry their table.",
        "",
        "## Size",
        "",
        f"- model files: {metrics.get('model_bytes', 0) / 1e6:.2f} MB; features: {info['n_features']:,}",
        "",
        "## Speed (measured on the training machine, on training texts)",
        "",
        *(
            [
                f"- single message, in process: p50 {metrics['latency_ms']['p50']:.3f} ms, "
                f"p99 {metrics['latency_ms']['p99']:.3f} ms",
                f"- batch: {metrics['throughput_per_s']:,.0f} messages/s",
            ]
            if (metrics.get("latency_ms") or {}).get("p50") is not None
            else ["- not measured (trained with measure_speed=False)"]
        ),
        "",
    ]
    return "\n".join(lines)
