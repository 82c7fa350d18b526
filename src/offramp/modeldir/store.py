"""Model directories: written as JSON + ``.npz`` (no pickle), checked on every load.

A model directory holds::

    model.json      family, parameters, classes, vocabulary: everything that is not a number array
    arrays.npz      the number arrays (read with allow_pickle=False, so loading runs no code)
    metrics.json    what the model scored when it was trained
    MODEL_CARD.md   a human-readable account of the data, labels, metrics and candidates tried
    manifest.json   the SHA-256 of every file above (and, with OFFRAMP_MODEL_KEY set, an HMAC of it)

Loading refuses a directory whose manifest is missing (foreign), whose files changed since they
were saved (tampered or damaged), or whose format version this offramp does not know.
"""

from __future__ import annotations

import glob
import hashlib
import hmac
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Protocol, TypeVar

import numpy as np

from offramp.errors import ModelDirError
from offramp.modeldir.card import render_card
from offramp.version import __version__

FORMAT = "offramp-model"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
KEY_ENV = "OFFRAMP_MODEL_KEY"
_MAX_JSON_BYTES = 512 * 1024 * 1024


class Persistable(Protocol):
    """What the store needs of a model: its family name and its state as JSON plus arrays."""

    family: str

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]: ...


@dataclass
class StoredModel:
    """A model directory as read and verified: ``model.json``, the arrays, ``metrics.json``."""

    path: Path
    doc: dict[str, Any]
    arrays: dict[str, np.ndarray]
    metrics: dict[str, Any]


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file, read in 1 MB blocks (model files, pinned weights)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_sha256 = file_sha256


def _signature(files: dict[str, str], key: str) -> str:
    payload = json.dumps(files, sort_keys=True).encode()
    return hmac.new(key.encode(), payload, hashlib.sha256).hexdigest()


def is_model_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / MANIFEST).is_file() and (Path(path) / "model.json").is_file()


def check_output_dir(path: str | os.PathLike) -> Path:
    """``path`` if a model directory can be written there; else a ModelDirError saying why.

    Called before training too, so a bad ``--out`` is refused before minutes of work, not after.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ModelDirError(f"{path} is a file, not a directory", "give a directory path", param="out")
    if path.is_dir() and any(path.iterdir()):
        # only a directory that verifies as an offramp model may be replaced, and only if it holds
        # nothing but the model's own files: anything else in it would be deleted with it
        try:
            manifest = _settled(path, lambda: verify_model_dir(path, check_key=False))
        except ModelDirError:
            raise ModelDirError(
                f"{path} already exists and is not an offramp model directory (or is a damaged one)",
                "choose a new or empty directory so nothing in it is overwritten",
                param="out",
            ) from None
        extra = sorted(p.name for p in path.iterdir() if p.name not in manifest["files"] and p.name != MANIFEST)
        if extra:
            shown = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
            raise ModelDirError(
                f"{path} holds files that are not part of the model: {shown}; replacing it would delete them",
                "move them elsewhere, or choose another directory",
                param="out",
            )
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ModelDirError(f"cannot create {path}: {parent} is a file", "give a path inside a directory", param="out")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ModelDirError(f"cannot create {path}: {parent} is not writable", "give a writable location", param="out")
    try:  # permissions can say yes where the file system says no (/proc, a read-only mount)
        os.rmdir(tempfile.mkdtemp(prefix=".offramp-probe-", dir=parent))
    except OSError as e:
        raise ModelDirError(
            f"cannot create {path}: {parent} does not take new directories ({e.strerror})",
            "give a writable location",
            param="out",
        ) from None
    return path


def save_model(
    model: Persistable,
    path: str | os.PathLike[str],
    *,
    metrics: dict[str, Any] | None = None,
    info: dict[str, Any] | None = None,
    extra_arrays: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write ``model`` to the directory ``path`` (created, or replaced if it is a model directory).

    The files are written to a temporary sibling first and moved into place, so a reader never
    sees a half-written model. ``extra_arrays`` are stored beside the weights (prefixed ``x_``) for
    tools that need them, such as the training-text fingerprints the leakage check reads.
    ``metrics`` (what training measured) gets the model's size on disk; with ``info`` (what the
    search tried) the model card tells the whole story, else it only names the family.
    """
    path = check_output_dir(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _writer_lock(path):  # one writer at a time; a reader sees the old model or the new one
        check_output_dir(path)  # again: another writer may have been here meanwhile
        _write(model, path, metrics, info, extra_arrays)
    return path


def _write(
    model: Persistable,
    path: Path,
    metrics: dict[str, Any] | None,
    info: dict[str, Any] | None,
    extra_arrays: dict[str, np.ndarray] | None,
) -> None:
    meta, arrays = model.get_state()
    arrays = {**arrays, **{f"x_{k}": v for k, v in (extra_arrays or {}).items()}}
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "family": model.family,
        "offramp_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "info": info or {},
        **meta,
        # what arrays.npz holds: checked against each array's header before any array is read
        "arrays": {k: {"shape": list(v.shape), "dtype": v.dtype.str} for k, v in arrays.items()},
    }
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        (tmp / "model.json").write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
        np.savez_compressed(tmp / "arrays.npz", **arrays)  # type: ignore[arg-type]
        metrics = {**(metrics or {}), "model_bytes": model_bytes(tmp)}
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False), encoding="utf-8")
        card = render_card(info, metrics) if info else f"# {model.family} model\n"
        (tmp / "MODEL_CARD.md").write_text(card, encoding="utf-8")
        files = {p.name: _sha256(p) for p in sorted(tmp.iterdir())}
        manifest: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION, "files": files}
        key = os.environ.get(KEY_ENV)
        if key:
            manifest["hmac_sha256"] = _signature(files, key)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        if path.exists() and _exchange(tmp, path):  # one atomic swap: readers see old or new
            shutil.rmtree(tmp, ignore_errors=True)
        elif path.exists():  # no atomic exchange on this system: two renames
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            old.rmdir()
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
        _clean_leftovers(path, keep=tmp)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def _writer_lock(path: Path) -> Iterator[None]:
    """Serialises writers of one model directory (an advisory lock on a file beside it, removed
    when the writer is done). A writer that waited on a lock file another writer has since removed
    takes the lock again on the file now at that path, so two writers never hold it at once."""
    import fcntl

    lock = path.parent / f".{path.name}.lock"
    while True:
        f = open(lock, "a")
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            if os.stat(lock).st_ino == os.fstat(f.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        f.close()  # removed (and perhaps made again) while this writer waited
    try:
        yield
    finally:
        try:
            lock.unlink()
        except OSError:
            pass
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where the
    system cannot."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _clean_leftovers(path: Path, keep: Path) -> None:
    """Remove what writers killed half-way left beside ``path`` (temporary and replaced copies);
    called under the writer lock, after a successful save, so no other writer is using them."""
    for p in path.parent.glob(f".{glob.escape(path.name)}.*"):
        if p.is_dir() and p != keep:
            shutil.rmtree(p, ignore_errors=True)


def verify_model_dir(path: str | os.PathLike, check_key: bool = True) -> dict:
    """Check a model directory's manifest and hashes; return the manifest. Raises ModelDirError."""
    path = Path(path)
    if not path.exists():
        raise ModelDirError(f"model directory {path} does not exist", "train a model and save it there first")
    if not path.is_dir():
        raise ModelDirError(f"{path} is a file, not a model directory")
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise ModelDirError(
            f"{path} is not an offramp model directory (no {MANIFEST})",
            "point at a directory written by 'offramp train'",
        )
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
        files = manifest["files"]
        assert isinstance(files, dict) and manifest.get("format") == FORMAT
    except Exception:
        raise ModelDirError(f"{mpath} is not a valid offramp manifest", "retrain or restore the directory") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ModelDirError(
            f"{path} uses model format version {manifest.get('format_version')}, this offramp reads {FORMAT_VERSION}",
            "retrain the model with this version of offramp",
        )
    for name, digest in files.items():
        f = path / name
        if "/" in name or "\\" in name or name.startswith("."):
            raise ModelDirError(f"{mpath} names a file outside the directory: {name!r}")
        if not f.is_file():
            raise ModelDirError(f"{path} is incomplete: {name} is missing", "retrain or restore the directory")
        if _sha256(f) != digest:
            raise ModelDirError(
                f"{path / name} was changed after the model was saved (SHA-256 mismatch)",
                "the directory may have been tampered with; retrain or restore it",
            )
    for required in ("model.json", "arrays.npz"):
        if required not in files:
            raise ModelDirError(f"{mpath} does not list {required}", "retrain or restore the directory")
    key = os.environ.get(KEY_ENV) if check_key else None
    if key:
        sig = manifest.get("hmac_sha256")
        if not sig:
            raise ModelDirError(f"{path} is not signed but {KEY_ENV} is set", "retrain with the key set, or unset it")
        if not hmac.compare_digest(sig, _signature(files, key)):
            raise ModelDirError(
                f"{path} has a signature that does not match {KEY_ENV}", "the directory was not signed with this key"
            )
    return manifest


def read_model_json(path: str | os.PathLike) -> dict:
    """model.json of a verified directory."""
    path = Path(path)
    verify_model_dir(path)
    mj = path / "model.json"
    if mj.stat().st_size > _MAX_JSON_BYTES:
        raise ModelDirError(f"{mj} is larger than {_MAX_JSON_BYTES >> 20} MiB; refusing to read it")
    try:
        doc = json.loads(mj.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise ModelDirError(f"{mj} is not valid JSON", "retrain or restore the directory") from None
    if doc.get("format") != FORMAT:
        raise ModelDirError(f"{mj} is not an offramp model description")
    return doc


def read_model_dir(path: str | os.PathLike[str]) -> StoredModel:
    """Read a model directory written by :func:`save_model`, after checking its integrity.

    A writer replacing the directory meanwhile (its manifest changed while reading) makes the
    reader start again, so it gets the old model or the new one, never a mix.
    """
    path = Path(path)
    return _settled(path, lambda: _read(path))


T = TypeVar("T")


def _settled(path: Path, read: Callable[[], T]) -> T:
    """``read()`` of a model directory, started again if a writer replaced the directory meanwhile
    (its manifest changed), so the result comes from one version, old or new, never a mix."""
    for _ in range(4):
        before = _manifest_bytes(path)
        try:
            result = read()
        except ModelDirError:
            if before is None or _manifest_bytes(path) == before:
                raise
            continue
        if _manifest_bytes(path) == before:
            return result
    return read()


def _manifest_bytes(path: Path) -> bytes | None:
    try:
        return (path / MANIFEST).read_bytes()
    except OSError:
        return None


def _read(path: Path) -> StoredModel:
    doc = read_model_json(path)
    try:
        check_arrays(path / "arrays.npz", doc.get("arrays"))
        with np.load(path / "arrays.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ModelDirError:
        raise
    except Exception as e:  # a directory whose hashes match but whose content is inconsistent
        raise ModelDirError(f"{path} could not be loaded: {e}", "retrain or restore the directory") from None
    return StoredModel(path, doc, arrays, read_metrics(path))


MAX_ARRAY_BYTES = 4 * 1024**3  # what a model directory may hold in all, unpacked, without a declaration


def check_arrays(npz: Path, declared: dict | None) -> None:
    """Read only the headers in ``arrays.npz`` and refuse, naming the array, one that model.json
    does not declare, one whose shape or type differs from the declaration, or (for a directory
    without declarations) a total that would not fit in memory — before any array is read."""
    import zipfile

    try:
        zf = zipfile.ZipFile(npz)
    except (zipfile.BadZipFile, OSError) as e:
        raise ModelDirError(f"{npz} is not a readable array file ({e})", "retrain or restore the directory") from None
    total = 0
    seen = set()
    with zf:
        for info in zf.infolist():
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            seen.add(name)
            try:
                with zf.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                    else:
                        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            except (ValueError, OSError, zipfile.BadZipFile) as e:
                raise ModelDirError(f"{npz}: array {name!r} has no valid header ({e})") from None
            if dtype.hasobject:
                raise ModelDirError(f"{npz}: array {name!r} holds Python objects; model arrays never do")
            size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            total += size
            if declared is not None:
                want = declared.get(name)
                if want is None:
                    raise ModelDirError(
                        f"{npz} holds an array model.json does not declare: {name!r}",
                        "retrain or restore the directory",
                    )
                if list(shape) != list(want.get("shape", [])) or dtype.str != want.get("dtype"):
                    raise ModelDirError(
                        f"{npz}: array {name!r} is {dtype.str} {list(shape)}, model.json declares "
                        f"{want.get('dtype')} {want.get('shape')}",
                        "retrain or restore the directory",
                    )
    if declared is not None:
        missing = sorted(set(declared) - seen)
        if missing:
            raise ModelDirError(f"{npz} lacks arrays model.json declares: {', '.join(missing)}")
    elif total > MAX_ARRAY_BYTES:
        raise ModelDirError(
            f"{npz} would unpack to {total / 1024**3:.1f} GiB, more than a model needs",
            "retrain or restore the directory",
        )


def read_metrics(path: str | os.PathLike) -> dict:
    f = Path(path) / "metrics.json"
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def model_bytes(path: str | os.PathLike) -> int:
    """Size of the files a model needs to predict (model.json + arrays.npz)."""
    return sum((Path(path) / n).stat().st_size for n in ("model.json", "arrays.npz"))


def model_version(path: str | os.PathLike) -> str:
    """A short fingerprint of a model directory's content: the SHA-256 of its manifest, 12 hex digits."""
    try:
        return hashlib.sha256((Path(path) / MANIFEST).read_bytes()).hexdigest()[:12]
    except OSError:
        return "unknown"
