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
    "TextClassifier": "offramp.estimators.base",
    "StackedLinear": "offramp.estimators.stacked",
    "TfidfLinear": "offramp.estimators.tfidf",
    "load": "offramp.registry.records",
    "save_model": "offramp.modeldir.store",
    "TrainReport": "offramp.training.train",
    "train": "offramp.training.train",
    "Registry": "offramp.registry.versions",
    "retrain": "offramp.training.retrain",
    "RetrainResult": "offramp.training.retrain",
    "shadow_report": "offramp.monitoring.shadow",
    "drift_report": "offramp.monitoring.drift",
    "Cascade": "offramp.runtime.cascade",
    "Decision": "offramp.runtime.cascade",
    "Settings": "offramp.runtime.config",
    "PrivacyGuard": "offramp.privacy.guard",
    "ChatClient": "offramp.llm.client",
    "LLMConfig": "offramp.llm.client",
    "LLMError": "offramp.llm.client",
    "EgressPolicy": "offramp.egress.policy",
    "EgressRefused": "offramp.egress.policy",
}
# old spellings of a name: still importable, with a DeprecationWarning naming the new one
_DEPRECATED = {"load_model": "load", "LLMClient": "ChatClient"}

__all__ = [
    "train",
    "evaluate",
    "load",
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

    if name in _DEPRECATED:
        import warnings

        new = _DEPRECATED[name]
        warnings.warn(f"offramp.{name} is deprecated; use offramp.{new}", DeprecationWarning, stacklevel=2)
        return __getattr__(new)
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'offramp' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from offramp.audit.log import AuditLog
    from offramp.costs.calculator import CostInputs, CostReport, compute_costs
    from offramp.egress.policy import EgressPolicy, EgressRefused
    from offramp.errors import DataError, InputError, ModelDirError, OfframpError, UsageError
    from offramp.estimators.base import TextClassifier
    from offramp.estimators.stacked import StackedLinear
    from offramp.estimators.tfidf import TfidfLinear
    from offramp.evaluation.evaluate import evaluate
    from offramp.evaluation.results import EvalReport
    from offramp.llm.client import ChatClient, LLMConfig, LLMError
    from offramp.modeldir.store import save_model
    from offramp.monitoring.drift import drift_report
    from offramp.monitoring.shadow import shadow_report
    from offramp.privacy.guard import PrivacyGuard
    from offramp.registry.records import load
    from offramp.registry.versions import Registry
    from offramp.runtime.cascade import Cascade, Decision
    from offramp.runtime.config import Settings
    from offramp.training.retrain import RetrainResult, retrain
    from offramp.training.train import TrainReport, train
