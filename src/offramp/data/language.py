"""Which languages a set of messages is written in: enough to pick a sentence encoder.

A message's script comes from its letters' Unicode ranges (Han, kana, Hangul, Cyrillic, Arabic,
Hebrew, Greek, Thai, Devanagari, Latin). Han without kana is Chinese, with kana Japanese. Latin-script
messages are told apart by their most frequent function words (English, German, French, Spanish,
Portuguese, Italian, Dutch, Turkish, Polish); a Latin message with none of them is ``und``
(undetermined: product codes, names, one-word messages). It is a sample-level signal, not a
per-message language identifier: short messages are often undetermined.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from offramp.types import JSONDict

SAMPLE = 500  # messages looked at

# (first codepoint, last codepoint, script)
_RANGES = (
    (0x0041, 0x024F, "latin"),
    (0x0370, 0x03FF, "greek"),
    (0x0400, 0x04FF, "cyrillic"),
    (0x0590, 0x05FF, "hebrew"),
    (0x0600, 0x06FF, "arabic"),
    (0x0900, 0x097F, "devanagari"),
    (0x0E00, 0x0E7F, "thai"),
    (0x1E00, 0x1EFF, "latin"),
    (0x3040, 0x30FF, "kana"),
    (0x3400, 0x4DBF, "han"),
    (0x4E00, 0x9FFF, "han"),
    (0xAC00, 0xD7AF, "hangul"),
    (0xF900, 0xFAFF, "han"),
)
_SCRIPT_LANGUAGE = {
    "greek": "el",
    "cyrillic": "ru",
    "hebrew": "he",
    "arabic": "ar",
    "devanagari": "hi",
    "thai": "th",
    "hangul": "ko",
}

# frequent function words that rarely occur in the other languages listed
_FUNCTION_WORDS = {
    "en": "the and is are you your my to of it this that for with have not what how can was do please".split(),
    "de": "und ist nicht ich sie das der die ein eine mit für auf ich mein meine wie bitte haben".split(),
    "fr": "le la les et est je vous pas une des pour avec mon ma que qui dans merci".split(),
    "es": "el la los las y es que por para con una mi no cómo gracias está estoy".split(),
    "pt": "o a os as e é que não para com uma meu minha você obrigado está como".split(),
    "it": "il la di che è non per con una mio mia sono come grazie questo".split(),
    "nl": "de het een en is niet ik je mijn van voor met dat wat hoe bedankt".split(),
    "tr": "ve bir bu için ne nasıl değil ben benim teşekkürler mi".split(),
    "pl": "i w nie jest na się że z do mój moja jak dziękuję".split(),
}
_WORD = re.compile(r"[^\W\d_]+")


def _script_of_char(code: int) -> str | None:
    for lo, hi, name in _RANGES:
        if lo <= code <= hi:
            return name
    return None


def _latin_language(text: str) -> str:
    words = _WORD.findall(text.lower())
    if not words:
        return "und"
    counts = Counter(words)
    scores = {lang: sum(counts[w] for w in ws) for lang, ws in _FUNCTION_WORDS_SETS.items()}
    best = max(scores, key=lambda k: scores[k])
    return best if scores[best] > 0 else "und"


_FUNCTION_WORDS_SETS = {lang: frozenset(ws) for lang, ws in _FUNCTION_WORDS.items()}


def message_language(text: str) -> str:
    """The language (ISO 639-1) or ``und`` of one message, from its script and function words."""
    scripts: Counter[str] = Counter()
    for ch in unicodedata.normalize("NFKC", text):
        if ch.isalpha():
            s = _script_of_char(ord(ch))
            if s is not None:
                scripts[s] += 1
    if not scripts:
        return "und"
    # a Han character carries about a word: weigh CJK letters up against Latin ones
    weighted = {s: n * (3 if s in ("han", "kana", "hangul") else 1) for s, n in scripts.items()}
    top = max(weighted, key=lambda k: weighted[k])
    if top in ("han", "kana"):
        return "ja" if scripts.get("kana") else "zh"
    if top == "latin":
        return _latin_language(text)
    return _SCRIPT_LANGUAGE[top]


@dataclass
class LanguageProfile:
    """Share of sampled messages per language (``und``: undetermined), and the sample's size."""

    sample: int
    shares: dict[str, float] = field(default_factory=dict)

    @property
    def non_english_share(self) -> float:
        """Share of messages determined to be in a language other than English."""
        return float(sum(v for k, v in self.shares.items() if k not in ("en", "und")))

    @property
    def main(self) -> str:
        determined = {k: v for k, v in self.shares.items() if k != "und"}
        return max(determined, key=lambda k: determined[k]) if determined else "und"

    @property
    def mixed(self) -> bool:
        """More than one language with at least 10% of the messages."""
        return sum(1 for k, v in self.shares.items() if k != "und" and v >= 0.1) > 1

    def summary(self) -> str:
        """For example ``zh 93%, en 5%, und 2%`` (languages at 1% or more)."""
        parts = [f"{k} {v:.0%}" for k, v in sorted(self.shares.items(), key=lambda kv: -kv[1]) if v >= 0.01]
        return ", ".join(parts) or "nothing to read"

    def as_dict(self) -> JSONDict:
        return {"sample": self.sample, "shares": {k: round(v, 4) for k, v in self.shares.items()}}


def detect_languages(texts: Sequence[str], sample: int = SAMPLE, seed: int = 0) -> LanguageProfile:
    """The languages of (a random sample of at most ``sample`` of) ``texts``."""
    n = len(texts)
    if n == 0:
        return LanguageProfile(0, {})
    idx = np.arange(n) if n <= sample else np.random.default_rng(seed).choice(n, sample, replace=False)
    langs = Counter(message_language(str(texts[int(i)])[:2000]) for i in idx)
    total = sum(langs.values())
    return LanguageProfile(total, {k: v / total for k, v in langs.items()})
