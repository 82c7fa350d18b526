"""The privacy guard: find personal data in a text and replace it before the text crosses a boundary.

Operators:

* ``redact``       the value is removed
* ``mask``         every letter and digit becomes ``*`` (the last four kept for cards, IBANs, phones)
* ``placeholder``  the value becomes its type: ``<EMAIL_ADDRESS>``
* ``pseudonym``    the value becomes ``<PERSON_1>``, the same value the same pseudonym within one
                   conversation, turned back by :meth:`PrivacyGuard.reveal` (needs a vault)

Detection runs the pattern recognizers (fast path, standard library only) and, with ``ner=True``,
Presidio's spaCy NER for names and places.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from offramp.errors import UsageError
from offramp.privacy import patterns

OPERATORS = ("redact", "mask", "placeholder", "pseudonym")
KEEP_LAST4 = {"CREDIT_CARD", "IBAN_CODE", "PHONE_NUMBER"}


@dataclass
class Masked:
    text: str
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def found(self) -> int:
        return sum(self.counts.values())


def _mask_value(value: str, entity: str) -> str:
    keep = 4 if entity in KEEP_LAST4 else 0
    alnum = [i for i, c in enumerate(value) if c.isalnum()]
    hide = set(alnum[:-keep] if keep and len(alnum) > keep else alnum)
    return "".join("*" if i in hide else c for i, c in enumerate(value))


class PrivacyGuard:
    """Callable as ``guard(text) -> text`` (the egress seam); :meth:`mask` also returns the counts."""

    def __init__(
        self,
        *,
        entities: list[str] | None = None,
        threshold: float = 0.5,
        language: str = "en",
        ner: bool = False,
        operator: str = "placeholder",
        vault=None,
        spacy_model: str | None = None,
    ):
        if operator not in OPERATORS:
            raise UsageError(f"unknown privacy operator '{operator}'", f"use one of: {', '.join(OPERATORS)}")
        if operator == "pseudonym" and vault is None:
            raise UsageError("the pseudonym operator needs a vault", "give the guard a vault file (privacy.vault)")
        if not 0.0 <= threshold <= 1.0:
            raise UsageError(f"privacy threshold {threshold} is not between 0 and 1")
        from offramp.privacy import ner as _ner

        known = set(patterns.SUPPORTED) | set(_ner.NER_ENTITIES)
        if entities is not None and not entities:
            raise UsageError("the privacy entity list is empty", "list at least one type, or leave it out for all")
        if entities is not None:
            unknown = sorted(set(entities) - known)
            if unknown:
                raise UsageError(
                    f"unknown PII entity type(s): {', '.join(unknown)}", f"supported: {', '.join(sorted(known))}"
                )
            if not ner and not set(entities) & set(patterns.SUPPORTED):
                raise UsageError("these entity types need the NER path", "switch ner on, or add pattern types")
        self.entities = set(entities) if entities is not None else None
        self.threshold = threshold
        self.language = language
        self.ner = ner
        self.operator = operator
        self.vault = vault
        self.spacy_model = spacy_model or _ner.DEFAULT_SPACY_MODEL
        if ner:
            _ner.warm(self.spacy_model, language)

    def find(self, text: str) -> list[patterns.Span]:
        spans = patterns.find(text, self.entities, self.threshold)
        if self.ner:
            from offramp.privacy import ner as _ner

            spans += _ner.find(text, self.entities, self.threshold, model=self.spacy_model, language=self.language)
        return patterns.resolve(spans)

    def mask(self, text: str, conversation: str | None = None, spans: Sequence[Any] | None = None) -> Masked:
        """``text`` with its personal data replaced, and the counts by type. ``spans``: what
        :meth:`find` already found in ``text`` (it is not scanned again)."""
        if spans is None:
            spans = self.find(text)
        if not spans:
            return Masked(text)
        counts = Counter(s.entity for s in spans)
        parts, pos = [], 0
        for s in spans:
            parts.append(text[pos : s.start])
            value = text[s.start : s.end]
            if self.operator == "redact":
                parts.append("")
            elif self.operator == "mask":
                parts.append(_mask_value(value, s.entity))
            elif self.operator == "placeholder":
                parts.append(f"<{s.entity}>")
            else:
                parts.append(self.vault.pseudonym(conversation or "-", s.entity, value))
            pos = s.end
        parts.append(text[pos:])
        return Masked("".join(parts), dict(counts))

    def __call__(self, text: str) -> str:
        return self.mask(text).text

    def reveal(self, text: str, conversation: str | None = None) -> str:
        """Turn pseudonyms in ``text`` (say, an LLM's reply) back into the values they stand for."""
        if self.operator != "pseudonym":
            return text
        return self.vault.reveal(conversation or "-", text)


def neutralise_tokens(text: str) -> str:
    """``text`` with every pseudonym-shaped token's angle brackets replaced by ‹ › (same length)."""
    from offramp.privacy.vault import TOKEN

    if "<" not in text:
        return text
    return TOKEN.sub(lambda m: f"\u2039{m.group(1)}_{m.group(2)}\u203a", text)


def build_guard(spec: dict | None, base: Path | None = None) -> PrivacyGuard | None:
    """A guard from a config mapping (the pipeline file's ``privacy:`` section)."""
    if not spec or spec.get("enabled", True) is False:
        return None
    vault = None
    if spec.get("operator") == "pseudonym":
        from offramp.privacy.vault import PseudonymVault

        path = Path(spec.get("vault") or "pseudonyms.sqlite")
        if base is not None and not path.is_absolute():
            path = base / path
        vault = PseudonymVault(path, ttl_s=float(spec.get("ttl_s", 86_400)))
    return PrivacyGuard(
        entities=spec.get("entities"),
        threshold=float(spec.get("threshold", 0.5)),
        language=str(spec.get("language", "en")),
        ner=bool(spec.get("ner", False)),
        operator=str(spec.get("operator", "placeholder")),
        vault=vault,
        spacy_model=spec.get("spacy_model"),
    )


def mask_records(
    rows: list[dict[str, Any]],
    columns: list[str],
    guard: PrivacyGuard,
    conversation_col: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[list[dict[str, Any]], Counter[str]]:
    """Copies of ``rows`` with personal data in ``columns`` masked by ``guard``; and the counts by type.

    Empty cells stay empty (nothing is invented or dropped). Numbers are checked too: a phone or
    card number stored as a number is still personal data. With ``conversation_col``, pseudonyms
    are scoped to that column's value; otherwise to the row.
    """
    counts: Counter[str] = Counter()
    out = []
    for i, row in enumerate(rows):
        row = dict(row)
        conv = str(row.get(conversation_col) or "") if conversation_col else f"row-{i}"
        for c in columns:
            value = row[c]
            if value is None or isinstance(value, bool):
                continue
            m = guard.mask(value if isinstance(value, str) else str(value), conv)
            if m.counts:
                row[c] = m.text
                counts.update(m.counts)
        out.append(row)
        if on_progress and (i % 500 == 499 or i == len(rows) - 1):  # rows done so far, the last one included
            on_progress(i + 1, len(rows))
    return out, counts
