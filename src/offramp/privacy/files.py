"""Masking a whole data file before it is shared: :func:`mask`."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from offramp.data.io import WRITABLE, read_records, write_records
from offramp.errors import DataError, UsageError
from offramp.privacy import ner as ner_path
from offramp.privacy.guard import PrivacyGuard, mask_records
from offramp.types import JSONDict


@dataclass
class MaskSummary:
    """What :func:`mask` wrote: rows, rows with personal data found, values replaced by type."""

    out: str
    rows: int
    masked_rows: int
    counts: dict[str, int]
    operator: str
    ner: bool
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> JSONDict:
        return {
            "out": self.out,
            "rows": self.rows,
            "masked_rows": self.masked_rows,
            "counts": dict(self.counts),
            "operator": self.operator,
            "ner": self.ner,
            "notes": list(self.notes),
        }


def mask(
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    columns: Sequence[str] = ("text",),
    operator: str = "placeholder",
    entities: Sequence[str] | None = None,
    threshold: float = 0.5,
    ner: bool | None = None,
    vault: str | os.PathLike[str] | None = None,
    conversation_col: str | None = None,
    spreadsheet_safe: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> MaskSummary:
    """Write a copy of the file ``data`` to ``out`` with personal data in ``columns`` masked
    (e-mails, phones, cards, IBANs, IPs, IDs; names and places with the NER path, which ``ner=None``
    uses whenever it is installed). The other columns are copied as they are.

    ``operator``: redact, mask, placeholder or pseudonym (which needs a ``vault`` file keeping the
    mapping); ``conversation_col`` scopes pseudonyms to a conversation.
    """
    from offramp.privacy.vault import PseudonymVault

    src, dst = Path(data), Path(out)
    if dst.suffix.lower() not in WRITABLE:
        raise UsageError(f"{dst} must end in {', '.join(WRITABLE)}", param="out")
    if dst.resolve() == src.resolve():
        raise UsageError("the masked copy must not overwrite the input file", "write it to a new file", param="out")
    if operator == "pseudonym" and vault is None:
        raise UsageError(
            "the pseudonym operator needs a vault file",
            "the vault keeps the mapping to turn pseudonyms back",
            param="vault",
        )
    cols = [c for c in columns if c]
    names, rows = read_records(src)
    if not rows:
        raise DataError(f"{src} has no data rows", "add at least one row below the header")
    missing = [c for c in cols + ([conversation_col] if conversation_col else []) if c not in names]
    if missing:
        raise UsageError(f"{src} has no column(s) {', '.join(missing)}", f"its columns are: {', '.join(names)}")
    notes = []
    if ner is None:  # names are personal data too: find them whenever the NER path is installed
        ner = ner_path.available()
        if not ner:
            notes.append(
                "names and places are NOT masked: the NER path is not installed "
                f"({ner_path.INSTALL_HINT}); e-mails, phones, cards, IBANs, IPs and IDs are"
            )
    guard = PrivacyGuard(
        entities=list(entities) if entities else None,
        threshold=threshold,
        ner=ner,
        operator=operator,
        vault=PseudonymVault(Path(vault)) if vault else None,
    )
    masked_rows, counts = mask_records(rows, cols, guard, conversation_col, on_progress=on_progress)
    write_records(dst, masked_rows, spreadsheet_safe=spreadsheet_safe)
    changed = sum(1 for a, b in zip(rows, masked_rows) if a != b)
    return MaskSummary(str(dst), len(masked_rows), changed, dict(Counter(counts).most_common()), operator, ner, notes)
