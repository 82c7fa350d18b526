"""offramp: move a narrow text task off a paid LLM onto a small local model, and prove the move.

The public API, in the order a migration uses it::

    from offramp import train, evaluate, load, Cascade

    model, report = train(texts, labels, quality="fast")      # choose, calibrate, fit
    print(report.winner, report.cv_macro_f1)
    model.save("model/")                                       # a model directory (JSON + .npz, hashed)
    result = evaluate(load("model/"), test_texts, test_labels)  # EvalReport; .to_dict() is `eval --json`
    decision = Cascade(model).run("thanks a lot!")              # guard -> model -> fallback -> action

The estimators (:class:`TfidfLinear`, :class:`StackedLinear`) follow scikit-learn's contract, so
``clone``, ``cross_val_score`` and ``GridSearchCV`` work on a list of texts.
"""

from typing import TYPE_CHECKING, Any

from offramp.version import __version__

# name -> module; imported on first use, so `python -m offramp --help` does not load scikit-learn
_LAZY = {
    "AuditLog": "offramp.audit.log",
    "CostInputs": "offramp.costs.calculator",
    "CostReport": "offramp.costs.calculator",
    "compute_costs": "offramp.costs.calculator",
    "DataError": "offramp.errors",
    "InputError": "offramp.errors",
    "ModelDirError": "offramp.errors",
    "OfframpError": "offramp.errors",
    "UsageError": "offramp.errors",
    "EvalReport": "offramp.evaluation.results",
    "evaluate": "offramp.evaluation.evaluate",
    "TextClassifier": "offramp.models.base",
    "StackedLinear": "offramp.models.stacked",
    "load_model": "offramp.models.store",
    "save_model": "offramp.models.store",
    "TfidfLinear": "offramp.models.tfidf",
    "TrainReport": "offramp.models.training",
    "Registry": "offramp.models.versions",
    "retrain": "offramp.lifecycle.retrain",
    "RetrainResult": "offramp.lifecycle.retrain",
    "shadow_report": "offramp.lifecycle.shadow",
    "drift_report": "offramp.lifecycle.drift",
    "train": "offramp.models.training",
    "Cascade": "offramp.pipeline.cascade",
    "Decision": "offramp.pipeline.cascade",
    "Settings": "offramp.pipeline.settings",
    "PrivacyGuard": "offramp.privacy.guard",
    "ChatClient": "offramp.teacher.client",
    "LLMConfig": "offramp.teacher.client",
    "LLMError": "offramp.teacher.client",
    "EgressPolicy": "offramp.teacher.egress",
    "EgressRefused": "offramp.teacher.egress",
    "load": "offramp.models.store:load_model",
    "LLMClient": "offramp.teacher.client:ChatClient",
}

__all__ = [
    "train",
    "evaluate",
    "load",
    "load_model",
    "save_model",
    "TrainReport",
    "EvalReport",
    "TextClassifier",
    "TfidfLinear",
    "StackedLinear",
    "Cascade",
    "Decision",
    "Registry",
    "retrain",
    "RetrainResult",
    "shadow_report",
    "drift_report",
    "Settings",
    "PrivacyGuard",
    "EgressPolicy",
    "LLMClient",
    "ChatClient",
    "LLMConfig",
    "AuditLog",
    "CostInputs",
    "CostReport",
    "compute_costs",
    "OfframpError",
    "UsageError",
    "DataError",
    "InputError",
    "ModelDirError",
    "LLMError",
    "EgressRefused",
    "__version__",
]


def __getattr__(name: str) -> Any:
    import importlib

    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'offramp' has no attribute {name!r}")
    module, _, attr = target.partition(":")
    value = getattr(importlib.import_module(module), attr or name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from offramp.audit.log import AuditLog
    from offramp.costs.calculator import CostInputs, CostReport, compute_costs
    from offramp.errors import DataError, InputError, ModelDirError, OfframpError, UsageError
    from offramp.evaluation.evaluate import evaluate
    from offramp.evaluation.results import EvalReport
    from offramp.lifecycle.drift import drift_report
    from offramp.lifecycle.retrain import RetrainResult, retrain
    from offramp.lifecycle.shadow import shadow_report
    from offramp.models.base import TextClassifier
    from offramp.models.stacked import StackedLinear
    from offramp.models.store import load_model, save_model
    from offramp.models.store import load_model as load
    from offramp.models.tfidf import TfidfLinear
    from offramp.models.training import TrainReport, train
    from offramp.models.versions import Registry
    from offramp.pipeline.cascade import Cascade, Decision
    from offramp.pipeline.settings import Settings
    from offramp.privacy.guard import PrivacyGuard
    from offramp.teacher.client import ChatClient, LLMConfig, LLMError
    from offramp.teacher.client import ChatClient as LLMClient
    from offramp.teacher.egress import EgressPolicy, EgressRefused
