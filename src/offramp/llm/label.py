"""Label texts with an LLM teacher: constrained answers, a persistent cache, honest costs.

* The task spec (YAML) names the labels (with one-line descriptions), optional instructions and
  few-shot examples.
* Answers are constrained with a JSON schema (an enum of the labels) where the server accepts one,
  and parsed strictly otherwise; an answer outside the label set is asked again once, then recorded
  as unlabelled with the raw answer: never guessed.
* Every answer is cached in SQLite under a hash of (endpoint, model, messages, parameters): a
  re-run, or a resume after a crash or Ctrl-C, sends nothing it has sent before.
* ``dry_run`` estimates tokens and dollars from the price table before anything is sent; a real run
  adds up the ``usage`` the server reports.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from offramp.costs.calculator import CHARS_PER_TOKEN, api_usd_per_message, load_prices
from offramp.egress.policy import EgressPolicy
from offramp.errors import UsageError
from offramp.llm.client import ChatClient, LLMConfig, LLMRequestRejected
from offramp.llm.limits import Budget, OverBudget, RateLimit
from offramp.llm.prompts import parse_label
from offramp.types import JSONDict


@dataclass
class TaskSpec:
    labels: dict[str, str]
    instructions: str = ""
    examples: list[dict] = field(default_factory=list)
    multi_label: bool = False  # every label that applies (none, one or several), joined by "|"

    def example_labels(self, ex: dict) -> list[str]:
        """An example's labels: one label, or (multi-label) a list or labels joined by "|"."""
        raw = ex.get("label", ex.get("labels"))
        if isinstance(raw, list):
            return [str(x) for x in raw]
        return [x.strip() for x in str(raw).split("|") if x.strip()] if self.multi_label else [str(raw)]

    @classmethod
    def load(cls, path: str | Path) -> TaskSpec:
        from offramp.data.io import read_yaml_file

        p = Path(path)
        doc = read_yaml_file(p, "task spec")
        if not isinstance(doc, dict) or not isinstance(doc.get("labels"), dict) or len(doc["labels"]) < 2:
            raise UsageError(f"{p} needs 'labels:', a mapping of at least two labels to one-line descriptions")
        unknown = set(doc) - {"labels", "instructions", "examples", "multi_label"}
        if unknown:
            raise UsageError(
                f"{p}: unknown key(s) {', '.join(sorted(unknown))}; use labels, instructions, examples, multi_label"
            )
        if not isinstance(doc.get("multi_label", False), bool):
            raise UsageError(f"{p}: multi_label must be true or false")
        labels = {str(k): str(v or "") for k, v in doc["labels"].items()}
        examples = doc.get("examples") or []
        spec = cls(labels, str(doc.get("instructions") or ""), examples, bool(doc.get("multi_label", False)))
        for i, ex in enumerate(examples):
            ok = isinstance(ex, dict) and ex.get("text") and all(x in labels for x in spec.example_labels(ex))
            if not ok or (not spec.multi_label and not spec.example_labels(ex)):
                raise UsageError(f"{p}: example {i + 1} needs a text and one of the labels")
        return spec

    def with_examples(
        self, texts: Sequence[str], labels: Sequence[str], per_label: int = 2, *, seed: int = 0, max_chars: int = 240
    ) -> TaskSpec:
        """This spec plus ``per_label`` worked examples of each label drawn from labelled training
        data (never from the data being scored): short texts first picked at random by ``seed``,
        interleaved label by label so no label sits last in every prompt. Labels outside the spec
        are ignored; a spec label without training examples keeps its description only."""
        import random

        rng = random.Random(seed)
        by_label: dict[str, list[str]] = {k: [] for k in self.labels}
        for t, y in zip(texts, labels):
            if y in by_label and 0 < len(t.strip()) <= max_chars:
                by_label[y].append(t)
        picked = {k: rng.sample(v, min(per_label, len(v))) for k, v in by_label.items()}
        examples = list(self.examples)
        for i in range(per_label):
            examples += [{"text": v[i], "label": k} for k, v in picked.items() if i < len(v)]
        return TaskSpec(dict(self.labels), self.instructions, examples, self.multi_label)

    def system_prompt(self) -> str:
        if self.multi_label:
            lines = ["Name every one of these labels that applies to the user's message (none, one or several):"]
        else:
            lines = ["Classify the user's message into exactly one of these labels:"]
        lines += [f"- {k}: {v}" if v else f"- {k}" for k, v in self.labels.items()]
        if self.instructions:
            lines += ["", self.instructions.strip()]
        if self.multi_label:
            lines += ["", 'Answer with JSON: {"labels": [<the labels that apply>]} and nothing else.']
        else:
            lines += ["", 'Answer with JSON: {"label": "<one of the labels>"} and nothing else.']
        return "\n".join(lines)

    def answer_json(self, labels: Sequence[str]) -> str:
        return json.dumps({"labels": sorted(labels)} if self.multi_label else {"label": str(labels[0])})

    def messages(self, text: str) -> list[dict]:
        msgs = [{"role": "system", "content": self.system_prompt()}]
        for ex in self.examples:
            msgs += [
                {"role": "user", "content": str(ex["text"])},
                {"role": "assistant", "content": self.answer_json(self.example_labels(ex))},
            ]
        return msgs + [{"role": "user", "content": text}]

    def json_schema(self) -> dict:
        if self.multi_label:
            return {
                "type": "object",
                "properties": {"labels": {"type": "array", "items": {"type": "string", "enum": list(self.labels)}}},
                "required": ["labels"],
                "additionalProperties": False,
            }
        return {
            "type": "object",
            "properties": {"label": {"type": "string", "enum": list(self.labels)}},
            "required": ["label"],
            "additionalProperties": False,
        }

    def gbnf(self) -> str:
        """A llama.cpp grammar that admits exactly ``{"label": "<one of the labels>"}``."""

        def lit(s: str) -> str:
            return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'

        choices = " | ".join(lit(json.dumps(k, ensure_ascii=False)) for k in self.labels)
        if self.multi_label:  # {"labels": []} or {"labels": ["A", "B"]}
            head, sep, tail = lit('{"labels": ['), lit(", "), lit("]}")
            return f"root ::= {head} ( item ( {sep} item )* )? {tail}\nitem ::= {choices}"
        head, tail = lit('{"label": '), lit("}")
        return f"root ::= {head} ( {choices} ) {tail}"

    def response_formats(self) -> list[dict]:
        """Ways to constrain the answer, as request fields, tried in order: OpenAI's json_schema;
        then llama.cpp's grammar (llama-cpp-python 0.3.36's server refuses json_schema with a 500,
        and its json_object-with-schema form crashed the server with SmolLM2 here); a server that
        refuses both gets plain prompts and strict parsing."""
        schema = {"type": "json_schema", "json_schema": {"name": "label", "strict": True, "schema": self.json_schema()}}
        return [{"response_format": schema}, {"grammar": self.gbnf()}]


def read_labels(content: str, labels: Sequence[str], sep: str = "|") -> str | None:
    """A multi-label answer ``{"labels": [...]}`` (or a bare list) as its labels sorted and joined by
    ``sep`` ("" for none of them); None if it is not such an answer or names an unknown label."""
    try:
        doc = json.loads(content)
    except ValueError:
        return None
    items = doc.get("labels") if isinstance(doc, dict) else doc
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        return None
    by_lower = {str(lab).lower(): str(lab) for lab in labels}
    found = [by_lower.get(x.strip().lower()) for x in items]
    if any(f is None for f in found):
        return None
    return sep.join(sorted({f for f in found if f}))


def read_answer(content: str, labels: Sequence[str], multi_label: bool = False) -> str | None:
    """The label in a JSON answer ``{"label": ...}``, or in a plain one; None if it names none.
    Multi-label: the labels joined by "|" ("" when the answer names none), see :func:`read_labels`."""
    if multi_label:
        return read_labels(content, labels)
    try:
        doc = json.loads(content)
        if isinstance(doc, dict) and "label" in doc:
            return parse_label(str(doc["label"]), labels)
    except ValueError:
        pass
    return parse_label(content, labels)


class AnswerCache:
    """SQLite: hash of the request -> the server's answer and usage (no prompt text is stored)."""

    def __init__(self, path: str | Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS answers (k TEXT PRIMARY KEY, content TEXT, usage TEXT)")
        self._lock = threading.Lock()

    @staticmethod
    def key(url: str, model: str, messages: list[dict], params: dict) -> str:
        blob = json.dumps([url, model, messages, params], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()

    def get(self, k: str):
        with self._lock:
            row = self._db.execute("SELECT content, usage FROM answers WHERE k = ?", (k,)).fetchone()
        return (row[0], json.loads(row[1] or "{}")) if row else None

    def put(self, k: str, content: str, usage: dict) -> None:
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?)", (k, content, json.dumps(usage)))


@dataclass
class LabelOutcome:
    text: str
    label: str | None
    raw: str
    confidence: float | None = None
    cached: bool = False
    latency_ms: float | None = None  # of the server's answer (kept in the cache, so re-runs report it)
    usage: dict = field(default_factory=dict)
    over_budget: bool = False  # not sent: it could have spent more than the budget


@dataclass
class LabelRun:
    outcomes: list[LabelOutcome]
    calls: int
    cache_hits: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None


def estimate(spec: TaskSpec, texts: Sequence[str], price_model: str | None) -> dict:
    """Tokens and dollars before anything is sent (characters / 4, plus a few output tokens)."""
    tin = sum(sum(len(m["content"]) for m in spec.messages(t)) / CHARS_PER_TOKEN + 4 for t in texts)
    tout = 8 * len(texts)
    price = load_prices()["models"].get(price_model or "")
    cost = api_usd_per_message(price, tin, tout) if price else None
    return {
        "texts": len(texts),
        "prompt_tokens": int(tin),
        "completion_tokens": int(tout),
        "cost_usd": cost,
        "price_model": price_model if price else None,
    }


class Labeller:
    def __init__(
        self,
        client: ChatClient,
        spec: TaskSpec,
        cache: AnswerCache,
        constrain: bool = True,
        logprobs: bool = False,
        *,
        rate: RateLimit | None = None,
        budget: Budget | None = None,
        price: dict | None = None,
    ):
        self.client, self.spec, self.cache = client, spec, cache
        self.formats = spec.response_formats() if constrain else []
        self.logprobs = logprobs
        self.rate, self.budget, self.price = rate, budget, price
        if budget is not None and price is None:
            raise UsageError("a dollar budget needs the model's price", "pass --price-model NAME from the price table")
        self._lock = threading.Lock()
        self.calls = self.hits = self.tin = self.tout = 0

    def _cost(self, tokens_in: float, tokens_out: float) -> float:
        return api_usd_per_message(self.price, tokens_in, tokens_out) if self.price else 0.0

    def _ask(self, messages: list[dict]) -> tuple[str, dict]:
        params: dict = {"temperature": 0, "max_tokens": 32}
        formats = self.formats
        if formats:
            params.update(formats[0])
        if self.logprobs:  # llama.cpp's server returns logprobs only when top_logprobs is set too
            params["logprobs"], params["top_logprobs"] = True, 1
        k = AnswerCache.key(self.client.url, self.client.config.model, messages, params)
        hit = self.cache.get(k)
        if hit is not None:
            with self._lock:
                self.hits += 1
            return hit[0], hit[1]
        reserved = 0.0
        if self.budget is not None:  # at most: the prompt, and every answer token allowed
            reserved = self._cost(sum(len(m["content"]) for m in messages) / CHARS_PER_TOKEN + 4, params["max_tokens"])
            self.budget.reserve(reserved)  # raises OverBudget: nothing is sent
        try:
            if self.rate is not None:
                self.rate.wait()
            r = self.client.chat(messages, **params)
        except BaseException as e:
            if self.budget is not None:
                self.budget.settle(reserved, 0.0)
            if not isinstance(e, LLMRequestRejected):
                raise
            with self._lock:  # this server does not take that format (or logprobs): try without
                if formats and self.formats and self.formats[0] is formats[0]:
                    self.formats = self.formats[1:]
                elif not formats and self.logprobs:
                    self.logprobs = False
                elif not formats:
                    raise
            return self._ask(messages)
        if self.budget is not None:
            tin, tout = r.usage.get("prompt_tokens"), r.usage.get("completion_tokens")
            self.budget.settle(reserved, reserved if tin is None or tout is None else self._cost(tin, tout))
        usage = {
            **r.usage,
            "_latency_ms": round(r.latency_s * 1000, 3),
            "_confidence": _confidence(r.logprobs, r.content),
        }
        self.cache.put(k, r.content, usage)  # the confidence is kept with the answer: a re-run reports it
        with self._lock:
            self.calls += 1
            self.tin += int(r.usage.get("prompt_tokens") or 0)
            self.tout += int(r.usage.get("completion_tokens") or 0)
        return r.content, usage

    def label_one(self, text: str) -> LabelOutcome:
        msgs = self.spec.messages(text)
        try:
            content, usage = self._ask(msgs)
        except OverBudget:
            return LabelOutcome(text, None, "", over_budget=True)
        label = read_answer(content, list(self.spec.labels), self.spec.multi_label)
        confidence = usage.get("_confidence")
        if label is None:  # one more try, saying what went wrong
            again = "the labels that apply" if self.spec.multi_label else "exactly one label"
            retry = msgs + [
                {"role": "assistant", "content": content},
                {"role": "user", "content": f"Answer with {again} from the list, as JSON."},
            ]
            try:
                content2, usage2 = self._ask(retry)
            except OverBudget:  # the first answer stays: unlabelled, its raw text kept
                return LabelOutcome(text, None, content, usage={k: v for k, v in usage.items() if k[0] != "_"})
            content = content2
            confidence = usage2.get("_confidence")
            usage = {
                k: (usage.get(k) or 0) + (usage2.get(k) or 0)
                for k in set(usage) | set(usage2)
                if not k.startswith("_") or k == "_latency_ms"
            }
            label = read_answer(content, list(self.spec.labels), self.spec.multi_label)
        return LabelOutcome(
            text,
            label,
            content,
            confidence if label is not None else None,
            latency_ms=usage.get("_latency_ms"),
            usage={k: v for k, v in usage.items() if not k.startswith("_")},
        )


def _confidence(logprobs, content: str = "") -> float | None:
    """The probability the model gave its label: exp of the sum of the logprobs of the tokens that
    spell the label (in a JSON answer, the label's value only: the braces and the key are format,
    not a judgement); every token when the label cannot be located."""
    try:
        tokens = logprobs["content"]
        if not tokens:
            return None
        span = _label_span(content)
        picked, pos = [], 0
        for t in tokens:
            end = pos + len(str(t.get("token", "")))
            if span is None or (end > span[0] and pos < span[1]):
                picked.append(float(t["logprob"]))
            pos = end
        if not picked:
            picked = [float(t["logprob"]) for t in tokens]
        return round(float(math.exp(sum(picked))), 6)
    except (TypeError, KeyError, ValueError, AttributeError):
        return None


def _label_span(content: str) -> tuple[int, int] | None:
    """Where the label's value sits in a ``{"label": "..."}`` answer, or None."""
    m = re.search(r'"label"\s*:\s*"((?:[^"\\]|\\.)*)"', content or "")
    return (m.start(1), m.end(1)) if m else None


def label_texts(
    labeller: Labeller,
    texts: Sequence[str],
    *,
    workers: int = 4,
    on_progress: Callable[[int, int], None] | None = None,
    price_model: str | None = None,
) -> LabelRun:
    outcomes: list[LabelOutcome | None] = [None] * len(texts)
    done = 0
    with ThreadPoolExecutor(max(1, workers)) as pool:
        futures = {pool.submit(labeller.label_one, t): i for i, t in enumerate(texts)}
        for fut in futures:
            outcomes[futures[fut]] = fut.result()
            done += 1
            if on_progress:
                on_progress(done, len(texts))
    return label_run(labeller, [o for o in outcomes if o is not None], price_model)


def label_run(labeller: Labeller, outcomes: list[LabelOutcome], price_model: str | None = None) -> LabelRun:
    """``outcomes`` with the labeller's running totals (calls, cache hits, tokens, cost so far)."""
    price = load_prices()["models"].get(price_model or labeller.client.config.model)
    cost = api_usd_per_message(price, labeller.tin, labeller.tout) if price else None
    return LabelRun(outcomes, labeller.calls, labeller.hits, labeller.tin, labeller.tout, cost)


def default_cache_path() -> Path:
    base = os.environ.get("OFFRAMP_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "offramp")
    return Path(base) / "llm-answers.sqlite"


def make_labeller(
    spec: TaskSpec,
    llm: str,
    base_url: str,
    *,
    api_key_env: str | None = "OPENAI_API_KEY",
    timeout_s: float = 30.0,
    concurrency: int = 4,
    cache: str | Path | None = None,
    constrain: bool = True,
    logprobs: bool = True,
    policy: EgressPolicy | None = None,
    rate_per_s: float | None = None,
    max_cost_usd: float | None = None,
    price_model: str | None = None,
) -> Labeller:
    """The LLM teacher ``label`` and ``eval-llm`` use: one client, the shared answer cache, and
    optionally a request rate and a dollar budget (priced by ``price_model``, default ``llm``)."""
    client = ChatClient(
        LLMConfig(
            base_url=base_url, model=llm, api_key_env=api_key_env, timeout_s=timeout_s, max_concurrency=concurrency
        ),
        policy=policy,
    )
    price = load_prices()["models"].get(price_model or llm)
    if max_cost_usd is not None and price is None:
        raise UsageError(
            f"a dollar budget needs a price for {price_model or llm}, and the price table has none",
            "name a row of the price table ('offramp cost' lists them) as the price model",
            param="price_model",
        )
    return Labeller(
        client,
        spec,
        AnswerCache(cache or default_cache_path()),
        constrain=constrain,
        logprobs=logprobs,
        rate=RateLimit(rate_per_s) if rate_per_s else None,
        budget=Budget(max_cost_usd) if max_cost_usd else None,
        price=price,
    )


def with_examples(
    spec: TaskSpec, examples_from: str | os.PathLike[str] | None, per_label: int, scored: Sequence[str], seed: int = 0
) -> tuple[TaskSpec, list[str]]:
    """``spec`` plus few-shot examples drawn from the labelled file ``examples_from``, and notes.
    Examples that are also among the texts being labelled or scored are refused (the LLM would be
    shown the answer)."""
    from offramp.data.io import read_dataset
    from offramp.data.text import normalize

    if examples_from is None or per_label == 0:
        return spec, []
    ex = read_dataset(examples_from)
    assert ex.labels is not None
    out_spec = spec.with_examples(ex.texts, ex.labels, per_label, seed=seed)
    seen = {normalize(t) for t in scored}
    leaked = [e for e in out_spec.examples[len(spec.examples) :] if normalize(str(e["text"])) in seen]
    if leaked:
        raise UsageError(
            f"{len(leaked)} few-shot examples drawn from {examples_from} are also in the data given to the LLM",
            "draw examples from the training split, never from the texts being labelled or scored",
            param="examples_from",
        )
    missing = [k for k in spec.labels if not any(e["label"] == k for e in out_spec.examples)]
    notes = [f"{examples_from} has no short example of {', '.join(missing)}: the prompt describes it only"]
    return out_spec, notes if missing else []


@dataclass
class LabelResult:
    """What :func:`label` did: one row per text (``text``, ``label``, ``confidence``, ``status``,
    ``raw``, ``model``, ``latency_ms``), the run's totals, the estimate made before sending, the
    active-learning rounds (``budget``) and the requests per Ray node (``engine="ray"``)."""

    rows: list[dict[str, Any]]
    run: LabelRun | None
    estimate: dict[str, Any]
    out: str | None = None
    rounds: list[int] | None = None
    requests_by_node: dict[str, int] | None = None
    budget_usd: float | None = None
    spent_usd: float | None = None
    warnings: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for r in self.rows if r["status"] == status)

    def to_dict(self) -> JSONDict:
        run = self.run
        return {
            "out": self.out,
            "rows": len(self.rows),
            "labelled": self.count("labelled"),
            "unlabelled": self.count("unlabelled"),
            "over_budget": self.count("over_budget"),
            "calls": run.calls if run else 0,
            "cache_hits": run.cache_hits if run else 0,
            "prompt_tokens": run.prompt_tokens if run else 0,
            "completion_tokens": run.completion_tokens if run else 0,
            "cost_usd": run.cost_usd if run else None,
            "estimate": self.estimate,
            **({"rounds": self.rounds} if self.rounds is not None else {}),
            **({"requests_by_node": self.requests_by_node} if self.requests_by_node else {}),
            "warnings": list(self.warnings),
        }


def label(
    data: Any,
    *,
    task: str | os.PathLike[str] | TaskSpec,
    llm: str,
    base_url: str,
    out: str | os.PathLike[str] | None = None,
    text_col: str = "text",
    max_chars: int | None = None,
    api_key_env: str | None = "OPENAI_API_KEY",
    concurrency: int = 4,
    timeout_s: float = 60.0,
    price_model: str | None = None,
    cache: str | os.PathLike[str] | None = None,
    schema: bool = True,
    logprobs: bool = True,
    rate: float | None = None,
    max_cost: float | None = None,
    engine: str = "local",
    address: str | None = None,
    workers: int | None = None,
    examples_from: str | os.PathLike[str] | None = None,
    examples_per_label: int = 4,
    budget: int | None = None,
    seed: int = 0,
    dry_run: bool = False,
    spreadsheet_safe: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> LabelResult:
    """Label texts with an LLM teacher on any OpenAI-compatible endpoint: answers constrained to
    the task's labels, cached (a re-run sends nothing twice), costed, within a rate and a budget.

    Parameters
    ----------
    data : texts (a list) or the path of a file with a ``text_col`` column.
    task : the task spec (a YAML file: labels with descriptions, instructions, examples).
    llm, base_url : the model name the endpoint serves (also its price-table row unless
        ``price_model`` names another), and the endpoint (``http://HOST:PORT/v1``).
    out : write the rows here (.csv, .tsv, .jsonl or .parquet).
    rate, max_cost : at most ``rate`` requests a second; at most ``max_cost`` dollars (texts past
        it get the status ``over_budget`` and are not sent).
    engine : "local" (threads here) or "ray" (the requests leave from a Ray cluster's workers,
        ``address`` and ``workers`` as in :func:`offramp.scale.stream.predict_files`).
    budget : label only this many distinct texts, chosen where they help (active learning).
    dry_run : estimate tokens and dollars, send nothing.
    """
    from offramp.data.io import DEFAULT_MAX_CHARS, WRITABLE, read_dataset, write_records

    for name, value in (("rate", rate), ("max_cost", max_cost)):
        if value is not None and not value > 0:
            raise UsageError(f"{name.replace('_', ' ')} must be greater than zero, got {value}", param=name)
    spec = task if isinstance(task, TaskSpec) else TaskSpec.load(Path(task))
    notes: list[str] = []
    if isinstance(data, (str, os.PathLike)):
        ds = read_dataset(
            data, text_col=text_col, label_col=None, need_labels=False, max_chars=max_chars or DEFAULT_MAX_CHARS
        )
        texts, notes = ds.texts, list(ds.warnings)
    else:
        texts = [str(t) for t in data]
        if not texts:
            raise UsageError("nothing to label: no texts were given")
    if budget is not None:
        distinct = len(set(texts))
        if not 1 <= budget <= distinct:
            raise UsageError(
                f"the budget of {budget} texts must be between 1 and the number of distinct texts ({distinct})",
                f"label {distinct} or fewer, or leave the budget out to label every text",
                param="budget",
            )
    spec, ex_notes = with_examples(spec, examples_from, examples_per_label, texts)
    notes += ex_notes
    est = estimate(spec, texts, price_model or llm)
    if dry_run:
        return LabelResult([], None, est, warnings=notes)
    if out is not None and Path(out).suffix.lower() not in WRITABLE:
        raise UsageError(f"{out} must end in {', '.join(WRITABLE)}", param="out")
    if engine not in ("local", "ray"):
        raise UsageError(f"the engine {engine!r} is not known", "use local or ray", param="engine")
    if engine == "local" and (address or workers):
        raise UsageError("an address and workers go with the ray engine", param="engine")
    labeller = make_labeller(
        spec,
        llm,
        base_url,
        api_key_env=api_key_env,
        timeout_s=timeout_s,
        concurrency=concurrency,
        cache=Path(cache) if cache is not None else None,
        constrain=schema,
        logprobs=logprobs,
        rate_per_s=rate,
        max_cost_usd=max_cost,
        price_model=price_model,
    )
    sender = None
    if engine == "ray":
        from offramp.llm.ray import RayChatClient

        sender = labeller.client = RayChatClient(labeller.client, workers, address)  # type: ignore[assignment]
    rounds = None
    try:
        if budget is not None:
            from offramp.llm.active import select_and_label

            outcomes: list[LabelOutcome] = []

            def ask(batch: list[str]) -> list[str | None]:
                got = label_texts(labeller, batch, workers=concurrency, price_model=price_model or llm).outcomes
                outcomes.extend(got)
                return [o.label for o in got]

            active = select_and_label(texts, budget, ask, seed=seed, on_progress=on_progress)
            run = label_run(labeller, outcomes, price_model or llm)
            rounds = list(active.rounds)
        else:
            run = label_texts(
                labeller, texts, workers=concurrency, price_model=price_model or llm, on_progress=on_progress
            )
    finally:
        if sender is not None:
            sender.close()
    rows = [
        {
            "text": o.text,
            "label": o.label or "",
            "confidence": o.confidence,
            "status": "labelled" if o.label is not None else "over_budget" if o.over_budget else "unlabelled",
            "raw": "" if o.label is not None else o.raw,
            "model": llm,
            "latency_ms": o.latency_ms,
        }
        for o in run.outcomes
    ]
    if out is not None:
        write_records(out, rows, spreadsheet_safe=spreadsheet_safe)
    return LabelResult(
        rows,
        run,
        est,
        str(out) if out is not None else None,
        rounds,
        dict(sender.requests_by_node) if sender is not None else None,
        labeller.budget.max_usd if labeller.budget else None,
        labeller.budget.spent if labeller.budget else None,
        notes,
    )
