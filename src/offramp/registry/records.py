"""The registry's record on disk (``registry.json``) and what it points at.

A registry is a directory of model directories (``v0001``, ``v0002``, ...) and one record naming
its versions, the current one and the stack of earlier current ones (for rollback). This module
reads that record; :class:`~offramp.registry.versions.Registry` changes it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TypedDict, cast

from offramp.errors import ModelDirError
from offramp.estimators.base import TextClassifier, load_model
from offramp.registry.gate import GateRecord

REGISTRY_FILE = "registry.json"  # marks a registry of versions
REGISTRY_FORMAT = "offramp-registry"
VERSION_NAME = re.compile(r"v(\d{4,})")  # a version's name, matched whole: v0001, v0002, ...


def is_version_name(name: object) -> bool:
    return isinstance(name, str) and VERSION_NAME.fullmatch(name) is not None


class GateSet(TypedDict):
    """The frozen gate set: its file's SHA-256, its rows, labels, where it came from and when."""

    sha256: str
    n: int
    labels: list[str]
    source: str
    created: str


class VersionRecord(TypedDict, total=False):
    """A version as the record lists it (``cv_micro_f1`` for several labels per message)."""

    created: str
    family: str
    winner: str
    cv_macro_f1: float | None
    cv_micro_f1: float | None
    n_train: int | None
    labels: list[str]
    data: list[str]  # the SHA-256 of each chunk of training rows under data/
    parent: str | None
    gate: GateRecord | None  # the verdict of the gate that let it in (or kept it out)


class VersionRow(VersionRecord, total=False):
    """A version as :meth:`Registry.versions` lists it: its name and whether it is current."""

    version: str
    current: bool


# "from" is a keyword, so the functional form
HistoryEvent = TypedDict("HistoryEvent", {"time": str, "action": str, "version": str, "from": "str | None"})


class RegistryRecord(TypedDict, total=False):
    """``registry.json``."""

    format: str
    format_version: int
    current: str | None
    stack: list[str]  # the current version and the ones current before it, newest last
    versions: dict[str, VersionRecord]
    history: list[HistoryEvent]
    gate: GateSet


def is_registry(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / REGISTRY_FILE).is_file()


def read_registry_file(path: str | os.PathLike[str]) -> RegistryRecord:
    """A registry's record (``registry.json``), checked; a ModelDirError naming the problem otherwise."""
    path = Path(path)
    f = path / REGISTRY_FILE
    if not path.is_dir():
        raise ModelDirError(
            f"registry {path} does not exist" if not path.exists() else f"{path} is a file, not a registry directory",
            "create one with 'offramp train DATA --registry DIR'",
        )
    if not f.is_file():
        raise ModelDirError(
            f"{path} is not an offramp registry (no {REGISTRY_FILE})",
            "create one with 'offramp train DATA --registry DIR', or point at a model directory",
        )
    try:
        doc = json.loads(f.read_text(encoding="utf-8"))
        assert isinstance(doc, dict) and doc.get("format") == REGISTRY_FORMAT
        assert isinstance(doc.get("versions"), dict) and isinstance(doc.get("stack"), list)
    except Exception:
        raise ModelDirError(f"{f} is not a valid offramp registry record", "restore it from a backup") from None
    # a hand-edited record must not point outside the registry: every name it holds is v + digits
    named = [*doc["versions"], *doc["stack"], *([doc["current"]] if doc.get("current") is not None else [])]
    bad = next((n for n in named if not is_version_name(n)), None)
    if bad is not None:
        raise ModelDirError(
            f"{f} names a version {str(bad)[:80]!r}, which is not a version name (v and four or more digits)",
            "restore the record from a backup, or correct it by hand",
        )
    if doc.get("current") is not None and doc["current"] not in doc["versions"]:
        raise ModelDirError(
            f"{f} makes {doc['current']} current, which it does not list", "restore the record from a backup"
        )
    return cast(RegistryRecord, doc)


def version_path(registry: Path, version: str) -> Path:
    """``registry/version``, refused when it leads outside the registry (a symbolic link, say)."""
    path = registry / version
    root = registry.resolve()
    if not is_version_name(version) or not path.resolve().is_relative_to(root):
        raise ModelDirError(
            f"version {version} of registry {registry} leads outside the registry",
            "a version must be a directory inside its registry; restore it from a backup",
        )
    return path


def resolve_model_dir(path: str | os.PathLike[str]) -> tuple[Path, str | None]:
    """The model directory ``path`` names: itself, or a registry's current version.

    Returns (directory, registry version or None). A registry with no current version is an error.
    """
    path = Path(path)
    if not is_registry(path):
        return path, None
    doc = read_registry_file(path)
    current = doc.get("current")
    if not current or current not in doc["versions"]:
        raise ModelDirError(
            f"registry {path} has no current version", "promote one with 'offramp registry promote DIR VERSION'"
        )
    return version_path(path, str(current)), str(current)


def load(path: str | os.PathLike[str]) -> TextClassifier:
    """The model in ``path``: a model directory, or a registry's current version (its files
    checked against its manifest either way)."""
    model_dir, _ = resolve_model_dir(path)
    return load_model(model_dir)
