"""A registry of model versions: ``DIR/v0001/``, ``DIR/v0002/``, … and which one is current.

Layout::

    DIR/registry.json   versions (created, family, CV macro-F1, gate result, training data), the
                        current version, the promotion stack and history
    DIR/v0001/          an ordinary model directory per version
    DIR/data/*.jsonl    training rows, masked by the privacy guard, content-addressed (SHA-256):
                        a version names the chunks it was trained on, so a retrain can add to them
    DIR/gate.jsonl      the frozen gate set (masked), checked against its recorded hash

Every change happens under an advisory lock on ``DIR/.registry.lock`` and ``registry.json`` is
replaced atomically, so concurrent writers cannot corrupt it, and a version directory appears in the
record only once it is complete (a crash leaves at most an unlisted directory, removed by the next
writer). Readers need no lock: they read the record, then the version it names.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from offramp.data.io import jsonl_lines
from offramp.errors import DataError, ModelDirError, UsageError
from offramp.estimators.base import TextClassifier
from offramp.modeldir.store import save_model
from offramp.registry.gate import GateRecord
from offramp.registry.records import (
    REGISTRY_FILE,
    REGISTRY_FORMAT,
    GateSet,
    RegistryRecord,
    VersionRecord,
    VersionRow,
    is_registry,
    is_version_name,
    load,
    read_registry_file,
    version_path,
)

_LOCK = ".registry.lock"
GATE_FILE = "gate.jsonl"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _rows_bytes(texts: Sequence[str], labels: Sequence[str]) -> bytes:
    return "".join(
        json.dumps({"text": t, "label": lab}, ensure_ascii=False) + "\n" for t, lab in zip(texts, labels)
    ).encode("utf-8")


def _read_rows(path: Path, digest: str | None) -> tuple[list[str], list[str]]:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ModelDirError(f"{path} cannot be read ({e.strerror})", "restore the registry from a backup") from None
    if digest is not None and hashlib.sha256(raw).hexdigest() != digest:
        raise ModelDirError(f"{path} was changed after it was stored (SHA-256 mismatch)", "restore it from a backup")
    texts, labels = [], []
    for _, line in jsonl_lines(raw.decode("utf-8")):
        row = json.loads(line)
        texts.append(str(row["text"]))
        labels.append(str(row["label"]))
    return texts, labels


class CurrentChanged(UsageError):
    """A promotion that expected another version to be current (someone promoted or rolled back meanwhile)."""


def default_mask() -> Callable[[str], str]:
    """The default privacy guard's masking (typed placeholders for the pattern-found types)."""
    from offramp.privacy.guard import PrivacyGuard

    return PrivacyGuard()


def gate_split(labels: Sequence[str], fraction: float = 0.2, seed: int = 0, max_rows: int = 5000) -> np.ndarray:
    """Indices of a stratified held-out split: ``fraction`` of each label with at least 5 examples
    (so every label keeps enough to train on), at most ``max_rows`` in all."""
    y = np.asarray(labels, dtype=object)
    rng = np.random.default_rng(seed)
    n_total = min(max_rows, int(round(len(y) * fraction)))
    share = n_total / max(len(y), 1)
    picked: list[np.ndarray] = []
    for label in sorted(set(y.tolist())):
        rows = np.nonzero(y == label)[0]
        if len(rows) < 5:
            continue
        k = max(1, int(round(len(rows) * share)))
        picked.append(rng.choice(rows, k, replace=False))
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=int)


class Registry:
    """A directory of model versions with a current one; see the module docstring.

    ``mask`` is applied to every text stored (training rows, gate set); the default is the default
    privacy guard, so no raw personal data lands in the registry.

    Example
    -------
    >>> import tempfile
    >>> from offramp import Registry, train
    >>> texts = ["reset my pin", "thanks a lot", "how do I reset the pin", "thank you!"] * 5
    >>> labels = ["SUPPORT", "GRATITUDE", "SUPPORT", "GRATITUDE"] * 5
    >>> model, _ = train(texts, labels, quality="fast", time_limit=None)
    >>> reg = Registry.create(tempfile.mkdtemp() + "/reg")
    >>> reg.add(model, texts, labels)
    'v0001'
    >>> reg.current
    'v0001'
    """

    def __init__(self, path: str | os.PathLike[str], mask: Callable[[str], str] | None = None):
        self.path = Path(path)
        self._mask = mask
        read_registry_file(self.path)  # a directory that is not a registry is refused now

    @classmethod
    def create(cls, path: str | os.PathLike[str], mask: Callable[[str], str] | None = None) -> Registry:
        """Open the registry at ``path``, creating it if the directory is missing or empty."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise ModelDirError(
                f"{path} is a file, not a registry directory", "give a directory path", param="registry"
            )
        if path.is_dir() and not is_registry(path):
            if any(p for p in path.iterdir() if p.name != _LOCK):
                raise ModelDirError(
                    f"{path} exists and is not an offramp registry",
                    "give a new or empty directory, or an existing registry",
                    param="registry",
                )
        path.mkdir(parents=True, exist_ok=True)
        with _locked(path):
            if not is_registry(path):
                doc = {"format": REGISTRY_FORMAT, "format_version": 1, "current": None, "stack": [], "versions": {}}
                doc["history"] = []
                _atomic_write(path / REGISTRY_FILE, json.dumps(doc, indent=2).encode())
        return cls(path, mask)

    # ------------------------------------------------------------------ reading
    def doc(self) -> RegistryRecord:
        return read_registry_file(self.path)

    @property
    def current(self) -> str | None:
        return self.doc().get("current")

    def versions(self) -> list[VersionRow]:
        """One entry per listed version, oldest first, each with ``version`` and ``current``."""
        doc = self.doc()
        rows = []
        for name, entry in sorted(doc["versions"].items()):
            rows.append(VersionRow(version=name, **entry, current=name == doc.get("current")))
        return rows

    def entry(self, version: str) -> VersionRecord:
        doc = self.doc()
        if version not in doc["versions"]:
            known = ", ".join(sorted(doc["versions"])) or "none yet"
            raise UsageError(f"registry {self.path} has no version {version!r} (versions: {known})")
        return VersionRecord(**doc["versions"][version])

    def version_dir(self, version: str) -> Path:
        self.entry(version)
        return version_path(self.path, version)

    def load(self, version: str | None = None) -> TextClassifier:
        """The model of ``version`` (default: the current one)."""
        return load(self.path if version is None else self.version_dir(version))

    def training_set(self, version: str) -> tuple[list[str], list[str]]:
        """The (masked) rows ``version`` was trained on."""
        texts: list[str] = []
        labels: list[str] = []
        for digest in self.entry(version).get("data", []):
            t, lab = _read_rows(self.path / "data" / f"{digest}.jsonl", digest)
            texts += t
            labels += lab
        return texts, labels

    def gate_set(self) -> tuple[list[str], list[str]] | None:
        """The frozen gate set (masked), or None if the registry has none."""
        gate = self.doc().get("gate")
        if not gate:
            return None
        return _read_rows(self.path / GATE_FILE, gate["sha256"])

    # ------------------------------------------------------------------ writing
    def mask(self, texts: Sequence[str]) -> list[str]:
        if self._mask is None:
            self._mask = default_mask()
        m = self._mask
        return [m(t) for t in texts]

    def set_gate(self, texts: Sequence[str], labels: Sequence[str], source: str) -> GateSet:
        """Freeze the gate set (masked); refused if the registry already has one."""
        if not texts:
            raise DataError("the gate set is empty", "give a labelled file with --gate")
        data = _rows_bytes(self.mask(texts), [str(x) for x in labels])
        with _locked(self.path):
            doc = self.doc()
            if doc.get("gate"):
                raise UsageError(
                    f"registry {self.path} already has a frozen gate set ({doc['gate']['n']} rows)",
                    "give a gate set to 'offramp registry retrain' to use another one for one run",
                )
            _atomic_write(self.path / GATE_FILE, data)
            doc["gate"] = GateSet(
                sha256=hashlib.sha256(data).hexdigest(),
                n=len(texts),
                labels=sorted(set(map(str, labels))),
                source=source,
                created=_now(),
            )
            self._write(doc)
            return GateSet(**doc["gate"])

    def store_rows(self, texts: Sequence[str], labels: Sequence[str]) -> str:
        """Store training rows (masked) as a content-addressed chunk; returns its SHA-256."""
        data = _rows_bytes(self.mask(texts), [str(x) for x in labels])
        digest = hashlib.sha256(data).hexdigest()
        folder = self.path / "data"
        folder.mkdir(exist_ok=True)
        target = folder / f"{digest}.jsonl"
        if not target.exists():
            _atomic_write(target, data)
        return digest

    def add(
        self,
        model: TextClassifier,
        texts: Sequence[str] | None = None,
        labels: Sequence[str] | None = None,
        *,
        data: list[str] | None = None,
        promote: bool | None = None,
        parent: str | None = None,
        gate: GateRecord | None = None,
    ) -> str:
        """Save ``model`` as the next version and return its name.

        Its training rows are ``texts``/``labels`` (stored masked) or ``data``, chunk digests from
        :meth:`store_rows`. ``promote``: True makes it current, False never, None (default) only if
        the registry has no current version yet.
        """
        chunks = list(data or [])
        if texts is not None and labels is not None:
            chunks.append(self.store_rows(texts, labels))
        record = getattr(model, "training_record_", None) or {}
        metrics = record.get("metrics", {})
        info = record.get("info", {})
        with _locked(self.path):
            doc = self.doc()
            self._remove_orphans(doc)
            numbers = [int(v[1:]) for v in doc["versions"]]
            name = f"v{max(numbers, default=0) + 1:04d}"
            save_model(model, self.path / name, metrics=metrics, info=info, extra_arrays=record.get("arrays"))
            entry = VersionRecord(
                created=_now(),
                family=model.family,
                winner=info.get("winner", model.family),
                # a multi-label model keeps its cross-validated figures under "cv" (micro-F1 decides)
                cv_macro_f1=metrics.get("cv_macro_f1", (metrics.get("cv") or {}).get("macro_f1")),
            )
            if metrics.get("cv"):
                entry["cv_micro_f1"] = metrics["cv"].get("micro_f1")
            entry["n_train"] = metrics.get("n_train", (info.get("data") or {}).get("n"))
            entry["labels"] = [str(c) for c in model.classes_]
            entry["data"] = chunks
            entry["parent"] = parent
            entry["gate"] = gate
            doc["versions"][name] = entry
            if promote or (promote is None and not doc.get("current")):
                self._set_current(doc, name, "promote")
            self._write(doc)
        return name

    def record_gate(self, version: str, gate: GateRecord, *, promote_if_current: str | None = None) -> bool:
        """Record the gate's verdict on ``version``; with ``promote_if_current``, also make
        ``version`` current, but only if that version is still the current one (compare and swap,
        under the lock). Returns whether ``version`` was promoted. A verdict that could not be
        acted on because current changed is recorded with the decision ``current_changed``."""
        with _locked(self.path):
            doc = self.doc()
            if version not in doc["versions"]:
                raise UsageError(f"registry {self.path} has no version {version!r}")
            promoted = False
            if promote_if_current is not None:
                if doc.get("current") == promote_if_current:
                    self._check_files(version)
                    self._set_current(doc, version, "promote")
                    promoted = True
                else:
                    gate = GateRecord(**{**gate, "decision": "current_changed"})
            doc["versions"][version]["gate"] = gate
            self._write(doc)
            return promoted

    def promote(self, version: str, *, expected_current: str | None = None) -> str | None:
        """Make ``version`` current; returns the version that was current before (or None).

        The version's files are checked against its manifest first (a damaged version is refused
        here, not at the next load). With ``expected_current``, the promotion happens only if that
        version is still current; :class:`CurrentChanged` otherwise."""
        with _locked(self.path):
            doc = self.doc()
            if version not in doc["versions"]:
                known = ", ".join(sorted(doc["versions"])) or "none yet"
                raise UsageError(f"registry {self.path} has no version {version!r} (versions: {known})")
            before = doc.get("current")
            if expected_current is not None and before != expected_current:
                raise CurrentChanged(
                    f"registry {self.path}: {before} is current now, not {expected_current}; {version} was not promoted",
                    "look at 'offramp registry list' and promote again if it is still wanted",
                )
            if before != version:
                self._check_files(version)
                self._set_current(doc, version, "promote")
                self._write(doc)
            return before

    def rollback(self) -> str:
        """Go back to the version that was current before the current one; returns it."""
        with _locked(self.path):
            doc = self.doc()
            stack = doc["stack"]
            if len(stack) < 2:
                raise UsageError(
                    f"registry {self.path} has no earlier current version to roll back to",
                    "promote a version with 'offramp registry promote DIR VERSION'",
                )
            back = stack[-2]
            self._check_files(back)
            left = stack.pop()
            doc["current"] = back
            doc["history"].append({"time": _now(), "action": "rollback", "version": back, "from": left})
            self._write(doc)
            return str(back)

    # ------------------------------------------------------------------ internals
    def _check_files(self, version: str) -> None:
        from offramp.modeldir.store import verify_model_dir

        try:
            verify_model_dir(version_path(self.path, version))
        except ModelDirError as e:
            raise ModelDirError(
                f"{version} cannot be made current: {e.message}", "restore the version from a backup"
            ) from None

    def _set_current(self, doc: RegistryRecord, version: str, action: str) -> None:
        doc["history"].append({"time": _now(), "action": action, "version": version, "from": doc.get("current")})
        doc["current"] = version
        doc["stack"].append(version)

    def _write(self, doc: RegistryRecord) -> None:
        _atomic_write(self.path / REGISTRY_FILE, json.dumps(doc, indent=2, ensure_ascii=False).encode("utf-8"))

    def _remove_orphans(self, doc: RegistryRecord) -> None:
        """Version directories a writer killed half-way left unlisted (called under the lock)."""
        for p in self.path.iterdir():
            if p.is_dir() and is_version_name(p.name) and p.name not in doc["versions"]:
                shutil.rmtree(p, ignore_errors=True)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path / _LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
