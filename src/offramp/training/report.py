"""What training reports: :class:`TrainReport` and its typed parts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from offramp.data.language import LanguageProfile
from offramp.estimators.rejection import Rejection
from offramp.training.large import Refit
from offramp.training.search import CandidateResult
from offramp.types import JSONDict


@dataclass
class EncoderUse:
    """The accurate tier's sentence encoder: which one, why (the languages of a sample of the
    texts), and whether the chosen model uses it."""

    name: str
    title: str
    reason: str
    languages: LanguageProfile
    used: bool
    warning: str | None = None

    def to_dict(self) -> JSONDict:
        return {
            "name": self.name,
            "reason": self.reason,
            "languages": self.languages.as_dict(),
            **({"warning": self.warning} if self.warning else {}),
            "used": self.used,
            "title": self.title,
        }


@dataclass
class RegistryEntry:
    """Where a trained model went when it was added to a registry."""

    path: str
    version: str
    current: str | None

    @property
    def promoted(self) -> bool:
        return self.current == self.version


@dataclass
class TrainReport:
    """What :func:`~offramp.training.train.train` did: the search, the winner's cross-validated
    figures, its speed, the "don't know" rule, warnings.

    ``to_dict()`` is the object ``offramp train --json`` prints (without the model directory's
    path and size, which only exist once the model is saved).
    """

    winner: str
    quality: str
    time_limit: float | None
    seed: int
    n_folds: int
    n_train: int
    classes: list[str]
    cv_macro_f1: float
    cv_accuracy: float
    ece_uncalibrated: float
    ece_calibrated: float
    temperature: float
    train_seconds: float
    latency_ms: dict[str, float | int | None]
    throughput_per_s: float
    candidates: list[CandidateResult]
    # how the winner was picked: "best" (highest CV macro-F1) or "cheapest" (the cheapest within
    # ``tolerance`` of the best: one standard error, or the allowed quality loss)
    rule: str = "best"
    tolerance: float | None = None
    max_quality_loss: float | None = None  # as asked for (None: one standard error)
    rejection: Rejection | None = None
    warnings: list[str] = field(default_factory=list)
    # more than LARGE_ROWS rows: the search's sample size and the streamed refit on every row
    search_rows: int | None = None
    refit: Refit | None = None
    # the sentence encoder chosen for the accurate tier, and the languages it was chosen from
    encoder: EncoderUse | None = None
    # drop_suspects: the 0-based data rows left out as probably mislabelled
    dropped_suspects: list[int] | None = None
    # registry=: the version the model became
    registry: RegistryEntry | None = None
    multi_label = False

    @property
    def skipped(self) -> list[str]:
        """Candidates the time limit left out (``time_limit=None`` tries every one)."""
        return [c.name for c in self.candidates if c.status.startswith("skipped")]

    def metrics(self) -> JSONDict:
        """The figures stored in the model directory's metrics.json."""
        return {
            "cv_macro_f1": self.cv_macro_f1,
            "cv_accuracy": self.cv_accuracy,
            "ece_uncalibrated": self.ece_uncalibrated,
            "ece_calibrated": self.ece_calibrated,
            "temperature": self.temperature,
            "train_seconds": self.train_seconds,
            "n_train": self.n_train,
            "classes": self.classes,
            "rejection": self.rejection.to_dict() if self.rejection else None,
            "latency_ms": self.latency_ms,
            "throughput_per_s": self.throughput_per_s,
            **(
                {"search_rows": self.search_rows, "refit": asdict(self.refit) if self.refit else None}
                if self.search_rows
                else {}
            ),
            **({"encoder": self.encoder.to_dict()} if self.encoder else {}),
        }

    def to_dict(self) -> JSONDict:
        extra: dict[str, Any] = {}
        if self.dropped_suspects is not None:
            extra["dropped_suspects"] = list(self.dropped_suspects)
        if self.registry is not None:
            extra.update(registry=self.registry.path, version=self.registry.version, current=self.registry.current)
        return {
            "winner": self.winner,
            "quality": self.quality,
            "rule": self.rule,
            "tolerance": self.tolerance,
            "time_limit": self.time_limit,
            "seed": self.seed,
            "n_folds": self.n_folds,
            **self.metrics(),
            "candidates": [asdict(c) for c in self.candidates],
            "skipped": self.skipped,
            "warnings": list(self.warnings),
            **extra,
        }
